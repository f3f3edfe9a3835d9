"""The process edge: environment, argv and stdin in; CNI JSON on stdout and an exit code out."""

import os
import sys

from ecs_ipam import jsontext, settings
from ecs_ipam.errors import (DECODE_FAILURE, INTERNAL_ERROR, INVALID_ENVIRONMENT, IO_FAILURE,
                             CNIError)
from ecs_ipam.versions import NEWEST

USAGE = """\
ecs-ipam is a CNI IPAM plugin: a runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, VERSION, GC,
STATUS) and friends in the environment and the network config on stdin.
  ecs-ipam --version | --capabilities
  ecs-ipam db list [--json] | db release ADDRESS | db release --id ID | db check   [--db PATH]
  ecs-ipam db import-bolt GO_PLUGIN_FILE [--ipv4-subnet CIDR] [--ipv6-subnet CIDR]   [--db PATH]
"""
CAPABILITIES = {"capabilities": ["awsvpc-network-mode"]}


def main():
    argv = sys.argv[1:]
    if argv:
        sys.exit(_subcommand(argv))
    try:
        output, code = respond(os.environ, _read_stdin, _warn)
    except KeyboardInterrupt:
        sys.exit(130)
    _write(output)
    sys.exit(code)


def respond(environ, read_stdin, warn):
    """Run one CNI call: return (the JSON object to print or None, the exit code)."""
    cni_version = NEWEST
    try:
        from ecs_ipam import commands, config, versions

        command = environ.get("CNI_COMMAND")
        if not command:
            warn(USAGE.rstrip("\n"))
            raise CNIError(INVALID_ENVIRONMENT, "required environment variable CNI_COMMAND is missing")
        if command not in commands.HANDLERS:
            raise CNIError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r} is not a CNI command",
                           f"expected one of {', '.join(commands.HANDLERS)}")
        if command == "VERSION":  # ignores stdin (which may be absent), the store and its settings
            return commands.version(None), 0
        doc = config.decode(_text(read_stdin()))
        cni_version = config.cni_version_of(doc)
        versions.require_command_allowed(command, cni_version)
        for key in config.unknown_ipam_keys(doc):
            warn(f"ecs-ipam: warning: ignoring unknown ipam key {key!r} (a typo?)")
        path, timeout = settings.store_settings(environ, config.parse_store_keys(doc))

        def session(subnets, writable=True, create=True):
            from ecs_ipam.disk import open_store

            return open_store(path, timeout, writable, upgrade_subnets=subnets, warn=warn, create=create)

        request = commands.Request(command, cni_version, _env_text(environ, "CNI_CONTAINERID"),
                                   _env_text(environ, "CNI_IFNAME"), doc, session, warn)
        return commands.HANDLERS[command](request), 0
    except CNIError as err:
        return err.to_json(cni_version), 1
    except (ImportError, SyntaxError) as err:  # a module of the unpacked copy is missing or damaged
        return CNIError(IO_FAILURE, f"the plugin's own code cannot be loaded: {type(err).__name__}: {err}",
                        "its unpacked copy may be damaged: run it once with SHIV_FORCE_EXTRACT=1 to unpack "
                        "it again").to_json(cni_version), 1
    except Exception as err:  # a bug: still a CNI error, never a traceback
        return CNIError(INTERNAL_ERROR, f"internal error: {type(err).__name__}: {err}").to_json(cni_version), 1


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
    if argv == ["--version"]:
        from ecs_ipam import version

        _write({"version": version.VERSION, "dirty": version.DIRTY,
                "gitShortHash": version.GIT_SHORT_HASH, "built": version.BUILT})
        return 0
    if argv == ["--capabilities"]:
        _write(CAPABILITIES)
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
    _warn(f"ecs-ipam: unknown arguments {' '.join(argv)!r}\n{USAGE}")
    return 2
