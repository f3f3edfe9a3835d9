"""Settings from the environment: the store's (IPAM_DB_PATH, IPAM_DB_CONNECTION_TIMEOUT) and the call log's."""

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


def store_settings(environ, path=None):
    """(store path, lock timeout in seconds): path if given (an operator's --db, relative to the
    working directory), else IPAM_DB_PATH, else the default. An empty IPAM_DB_PATH is unset, as
    for the Go plugin."""
    timeout = parse_duration("IPAM_DB_CONNECTION_TIMEOUT", environ.get("IPAM_DB_CONNECTION_TIMEOUT"))
    if path:
        return os.path.abspath(store_path("--db", path)), timeout
    return store_path("IPAM_DB_PATH", environ.get("IPAM_DB_PATH") or DEFAULT_PATH, absolute=True), timeout


def store_path(name, value, absolute=False):
    """value as the store's path; code 4 naming name when it names a directory, or (absolute)
    is relative: a runtime may run the plugin from any working directory."""
    if value.endswith("/"):
        raise CNIError(INVALID_ENVIRONMENT, f"{name} {value!r} names a directory",
                       f"it names the store's file, e.g. {value.rstrip('/') or ''}/eni-ipam.db")
    if absolute and not os.path.isabs(value):
        raise CNIError(INVALID_ENVIRONMENT, f"{name} {value!r} is a relative path",
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


def parse_duration(name, text):
    """Seconds from a Go duration ("5s", "300ms", "1m30s") or a bare number of seconds; None means 5s."""
    if text is None or text.strip() == "":
        return DEFAULT_TIMEOUT
    seconds = _seconds(text.strip())
    if seconds is None:
        raise CNIError(INVALID_ENVIRONMENT, f"{name} {text!r} is not a duration",
                       'use Go duration syntax such as "5s", "300ms" or "1m30s", or a number of seconds')
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise CNIError(INVALID_ENVIRONMENT, f"{name} {text!r} must be a finite duration of 0 or more",
                       "0 waits for the lock without a limit")
    if seconds > LONGEST_TIMEOUT:
        raise CNIError(INVALID_ENVIRONMENT, f"{name} {text!r} is longer than a Go duration can be",
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
