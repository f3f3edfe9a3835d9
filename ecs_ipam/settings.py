"""Settings: the store's path and how long to wait for its lock, and where the call log goes.

Each store setting comes from the config's ipam section (db-path, db-connection-timeout;
ecs_ipam.config checks them), else from the environment (IPAM_DB_PATH, IPAM_DB_CONNECTION_TIMEOUT,
as the Go plugin), else the default. The config wins because it is the one thing every call for a
network carries: a runtime need not pass its own environment to each plugin call (podman's cleanup
DEL, started by conmon, gets a bare one), and a store chosen by the environment for the ADD but not
for the DEL leaks the address. Callers that set only the environment (the ECS agent's netlib) are
unaffected. The call log's come from the environment only (ECS_CNI_LOG_FILE, ECS_CNI_LOGLEVEL), as
the Go plugin's.
"""

import os

from ecs_ipam.errors import INVALID_ENVIRONMENT, CNIError

DEFAULT_PATH = "/data/eni-ipam.db"  # as the Go plugin
# As the Go plugin: inside the ECS agent's container, /log is the host's /var/log/ecs.
DEFAULT_LOG_FILE = "/log/ecs-cni-ipam-plugin.log"
LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "critical", "off")  # seelog's, least severe first
DEFAULT_LOG_LEVEL = "info"
DEFAULT_TIMEOUT = 5.0
# Go's time.Duration is int64 nanoseconds (about 292 years); the lock timer cannot take more either.
LONGEST_TIMEOUT = (2**63 - 1) // 10**9
_NUMBER_CHARACTERS = "0123456789."
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def store_settings(environ, configured=(None, None), path=None):
    """(store path, lock timeout in seconds) for one call.

    configured is (path, timeout) from the config (ecs_ipam.config.parse_store_keys), None where
    absent. The path: path if given (an operator's --db, relative to the working directory),
    else the config's, else IPAM_DB_PATH, else the default; an empty IPAM_DB_PATH is unset, as
    for the Go plugin. The timeout: the config's, else IPAM_DB_CONNECTION_TIMEOUT, else 5s.
    What the config gives wins, so the environment's value is then not even read.
    """
    configured_path, configured_timeout = configured
    if configured_timeout is not None:
        timeout = configured_timeout
    else:
        timeout = parse_duration("IPAM_DB_CONNECTION_TIMEOUT", environ.get("IPAM_DB_CONNECTION_TIMEOUT"))
    if path:
        return os.path.abspath(store_path("--db", path)), timeout
    if configured_path:
        return configured_path, timeout
    return store_path("IPAM_DB_PATH", environ.get("IPAM_DB_PATH") or DEFAULT_PATH, absolute=True), timeout


def store_path(name, value, absolute=False, code=INVALID_ENVIRONMENT):
    """value as the store's path; a CNI error with code naming name when it names a directory,
    or (absolute) is relative: a runtime may run the plugin from any working directory."""
    if value.endswith("/") or value.rsplit("/", 1)[-1] in (".", ".."):
        raise CNIError(code, f"{name} {value!r} names a directory",
                       f"it names the store's file, e.g. {value.rstrip('/') or ''}/eni-ipam.db")
    if absolute and not os.path.isabs(value):
        raise CNIError(code, f"{name} {value!r} is a relative path",
                       "the runtime's working directory is arbitrary: give an absolute path")
    return value


def log_settings(environ, default_file=DEFAULT_LOG_FILE):
    """(call log path or None, level): ECS_CNI_LOG_FILE, else default_file when its directory exists
    (never created); ECS_CNI_LOGLEVEL, info when unset or unknown. Level off gives no path."""
    level = (environ.get("ECS_CNI_LOGLEVEL") or "").strip().lower()
    level = level if level in LOG_LEVELS else DEFAULT_LOG_LEVEL
    path = environ.get("ECS_CNI_LOG_FILE") or None
    if path is None and os.path.isdir(os.path.dirname(default_file)):
        path = default_file
    return (None if level == "off" else path), level


def parse_duration(name, text, code=INVALID_ENVIRONMENT, shown=None):
    """Seconds from a Go duration ("5s", "300ms", "1m30s") or a bare number of seconds; None means 5s.

    Errors are CNI errors with code, naming name and the value (shown, default repr(text)).
    """
    if text is None or text.strip() == "":
        return DEFAULT_TIMEOUT
    shown = repr(text) if shown is None else shown
    seconds = _seconds(text.strip())
    if seconds is None:
        raise CNIError(code, f"{name} {shown} is not a duration",
                       'use Go duration syntax such as "5s", "300ms" or "1m30s", or a number of seconds')
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise CNIError(code, f"{name} {shown} must be a finite duration of 0 or more",
                       "0 waits for the lock without a limit")
    if seconds > LONGEST_TIMEOUT:
        raise CNIError(code, f"{name} {shown} is longer than a Go duration can be",
                       f"at most {LONGEST_TIMEOUT}s (about 292 years); 0 waits for the lock without a limit")
    return seconds


def _seconds(value):
    """A bare number, or a Go duration with an optional sign, in seconds; None if it is neither."""
    if "_" in value:  # Python's float() takes 1_000; Go does not
        return None
    try:
        return float(value)
    except ValueError:
        pass
    sign, body = (-1, value[1:]) if value[:1] == "-" else (1, value[1:] if value[:1] == "+" else value)
    parts = _duration_parts(body)
    return None if parts is None else sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _duration_parts(body):
    """[(number, unit)] of a Go duration without its sign, such as "1m30.5s"; None if it is not one.

    (By hand rather than with a regular expression: importing re costs a few ms per call.)
    """
    parts, start = [], 0
    while start < len(body):
        unit_start = start
        while unit_start < len(body) and body[unit_start] in _NUMBER_CHARACTERS:
            unit_start += 1
        end = unit_start
        while end < len(body) and body[end] not in _NUMBER_CHARACTERS:
            end += 1
        number, unit = body[start:unit_start], body[unit_start:end]
        if not number.strip(".") or number.count(".") > 1 or unit not in _UNIT_SECONDS:
            return None
        parts.append((number, unit))
        start = end
    return parts or None
