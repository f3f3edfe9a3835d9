"""The process edge: environment, argv and stdin in; CNI JSON on stdout and an exit code out."""

import os
import sys
from collections import namedtuple

from ecs_ipam import jsontext, settings
from ecs_ipam.errors import (DECODE_FAILURE, INTERNAL_ERROR, INVALID_ENVIRONMENT, IO_FAILURE,
                             CNIError)
from ecs_ipam.cni_versions import NEWEST

USAGE = """\
usage: CNI_COMMAND=ADD|DEL|CHECK|GC|STATUS|VERSION ecs-ipam < NETWORK_CONFIG
       ecs-ipam --version | --capabilities | --help
       ecs-ipam db list|gc|release|check|import-bolt ...   (ecs-ipam db --help)
"""
HELP = f"""\
ecs-ipam: the Amazon ECS IPAM plugin for CNI, in standard-library Python (a drop-in for the Go
plugin). It hands out IPv4 and IPv6 addresses from the subnets of the config's ipam section and
remembers who holds them in a local store.

{USAGE}
A runtime (ecs-bridge, the CNI bridge plugin, any CNI runtime) runs it once per call:
CNI_COMMAND in the environment, the network config on stdin, the result as JSON on stdout; a
failure is a CNI error object on stdout and exit status 1.

Environment:
  CNI_COMMAND                   ADD, DEL, CHECK, GC, STATUS or VERSION (required)
  CNI_CONTAINERID, CNI_IFNAME   recorded with each allocation; DEL, CHECK and GC find it by them
  CNI_NETNS, CNI_PATH, CNI_ARGS accepted, not used
  IPAM_DB_PATH                  the store, unless the config's ipam has db-path (default
                                {settings.DEFAULT_PATH})
  IPAM_DB_CONNECTION_TIMEOUT    how long to wait for the store's lock, unless the config's ipam
                                has db-connection-timeout: 5s, 300ms, 1m30s or seconds (default
                                5s; 0 waits forever)
  ECS_CNI_LOG_FILE              the call log: a line per ADD, DEL or GC that changes the store
                                and per error (default {settings.DEFAULT_LOG_FILE} when its
                                directory exists)
  ECS_CNI_LOGLEVEL              the call log's level: trace, debug, info, warn, error, critical
                                or off (default info; changes are info, errors error)

--version prints the version as JSON (what the ECS agent parses); --capabilities prints
{{"capabilities": ["awsvpc-network-mode"]}}. Go's one-dash spellings (-version) work too.

Operator tools (they take the plugin's lock; each has --help; all take --db PATH, default
$IPAM_DB_PATH, else {settings.DEFAULT_PATH}):
  ecs-ipam db list [--json] [--id ID] [--container ID] [--subnet CIDR]
  ecs-ipam db gc --keep-ids FILE|- [--dry-run] [--older-than DURATION] [--subnet CIDR] [--allow-all]
  ecs-ipam db release ADDRESS | db release --id ID
  ecs-ipam db check
  ecs-ipam db import-bolt GO_PLUGIN_FILE [--ipv4-subnet CIDR] [--ipv6-subnet CIDR]
"""
CAPABILITIES = {"capabilities": ["awsvpc-network-mode"]}


# One CNI call: the JSON to print (or None) and the exit code; for the call log, who called (the
# command, the config's id, CNI_CONTAINERID and CNI_IFNAME, None when absent), what the call
# committed to the store ([(verb, Allocation)], see Store.changes), the CNIError it failed with,
# and the reports of the Go plugin stores it upgraded in place.
Call = namedtuple("Call", "output code command id container ifname changes error upgrades")


def main():
    argv = sys.argv[1:]
    if argv:
        sys.exit(_subcommand(argv))
    try:
        call = respond(os.environ, _read_stdin, _warn)
    except KeyboardInterrupt:
        sys.exit(130)
    _write(call.output)
    if call.changes or call.upgrades or call.error is not None:
        _log(os.environ, call)
    sys.exit(call.code)


def respond(environ, read_stdin, warn):
    """Run one CNI call: return its Call."""
    cni_version = NEWEST
    holder = None
    sessions = []  # every store session the command opened, for what they committed
    try:
        from ecs_ipam import commands, config, ownership

        command = environ.get("CNI_COMMAND")
        if not command:
            warn(USAGE + "(ecs-ipam --help says more)")
            raise CNIError(INVALID_ENVIRONMENT, "required environment variable CNI_COMMAND is missing")
        if command not in commands.HANDLERS:
            raise CNIError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not a CNI command",
                           f"expected one of {', '.join(commands.HANDLERS)}")
        request = None
        if command not in commands.CONFIGLESS:
            doc = config.decode(_text(read_stdin()))
            holder = config.id_of(doc)
            cni_version = config.cni_version_of(doc)  # for the error, should parsing fail below
            for key in config.unknown_ipam_keys(doc):
                warn(f"ecs-ipam: warning: ignoring unknown ipam key {key!r} (a typo?)")
            parsed = config.parse_config(command, doc)
            path, timeout = settings.store_settings(environ, parsed.store)

            def session(subnets, writable=True, create=True):
                from ecs_ipam.disk import open_store

                sessions.append(open_store(path, timeout, writable, upgrade_subnets=subnets, warn=warn,
                                           create=create))
                return sessions[-1]

            caller = ownership.Caller(parsed.named.id, _env_text(environ, "CNI_CONTAINERID"),
                                      _env_text(environ, "CNI_IFNAME"))
            request = commands.Request(command, parsed, caller, session, warn)
        output = commands.HANDLERS[command](request)
        code, error = 0, None
    except CNIError as err:
        output, code, error = err.to_json(cni_version), 1, err
    except (ImportError, SyntaxError) as err:  # a module of the unpacked copy is missing or damaged
        error = CNIError(IO_FAILURE, f"the plugin's own code cannot be loaded: {type(err).__name__}: {err}",
                         "its unpacked copy may be damaged: run it once with SHIV_FORCE_EXTRACT=1 to unpack it again")
        output, code = error.to_json(cni_version), 1
    except Exception as err:  # a bug: still a CNI error, never a traceback
        error = CNIError(INTERNAL_ERROR, f"internal error: {type(err).__name__}: {err}")
        output, code = error.to_json(cni_version), 1
    return Call(output, code, environ.get("CNI_COMMAND") or None, holder, environ.get("CNI_CONTAINERID") or None,
                environ.get("CNI_IFNAME") or None, [change for s in sessions for change in s.committed], error,
                [s.upgraded for s in sessions if s.upgraded])


def _log(environ, call):
    """Append the call's line to the call log; failing to is a warning on stderr, never the call's failure."""
    path = None
    try:
        path, level = settings.log_settings(environ)
        if path is not None:
            from ecs_ipam import calllog

            line = calllog.line(call, level)
            if line is not None:
                calllog.append(path, line)
    except Exception as err:
        reason = getattr(err, "msg", None) or getattr(err, "strerror", None) or f"{type(err).__name__}: {err}"
        _warn(f"ecs-ipam: warning: cannot write the call log {path}: {reason}")


def _env_text(environ, name):
    """An optional variable's value, None when unset or empty; code 4 when it is not UTF-8 text."""
    value = environ.get(name) or None
    try:
        value is None or value.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in the environment, kept as surrogates
        raise CNIError(INVALID_ENVIRONMENT, f"{name} is not UTF-8 text", f"got {value!r}")
    return value


def _text(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CNIError(DECODE_FAILURE, "failed to decode network config: stdin is not UTF-8", str(err))


def _read_stdin():
    try:
        return sys.stdin.buffer.read() if sys.stdin is not None else b""
    except OSError as err:
        raise CNIError(IO_FAILURE, f"cannot read the network config from stdin: {err.strerror}")


def _warn(line):
    try:
        sys.stderr.write(line + "\n")
    except (OSError, ValueError, AttributeError):
        pass


def _write(output):
    if output is None:
        return
    try:
        sys.stdout.write(jsontext.dumps(output) + "\n")
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        _silence_stdout()


def _silence_stdout():
    """Nobody reads our stdout (the exit code still tells). Point it at /dev/null so that the
    interpreter's last flush of the unwritten buffer does not print "Exception ignored"."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _subcommand(argv):
    flag = _flag(argv)
    if flag == "version":
        from ecs_ipam import buildinfo

        _write({"version": buildinfo.VERSION, "dirty": buildinfo.DIRTY,
                "gitShortHash": buildinfo.GIT_SHORT_HASH, "built": buildinfo.BUILT})
        return 0
    if flag == "capabilities":
        _write(CAPABILITIES)
        return 0
    if flag in ("help", "h"):
        try:
            sys.stdout.write(HELP)
            sys.stdout.flush()
        except (OSError, ValueError, AttributeError):
            _silence_stdout()
        return 0
    if argv[0] == "db":
        from ecs_ipam import dbtool

        try:
            code = dbtool.main(argv[1:], os.environ)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            _silence_stdout()
            return 1
    _warn(f"ecs-ipam: unknown arguments {' '.join(argv)!r}\n{USAGE}(ecs-ipam --help says more)")
    return 2


def _flag(argv):
    """The name of a lone -name or --name argument (Go's flag package, which the Go plugin uses, takes both)."""
    if len(argv) != 1 or not argv[0].startswith("-"):
        return None
    return argv[0][2:] if argv[0].startswith("--") else argv[0][1:]
