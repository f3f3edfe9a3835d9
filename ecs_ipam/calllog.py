"""The call log: a line per CNI call that changed the store or failed, in the Go plugin's format, rotated by size."""

import fcntl
import os
import time

from ecs_ipam import jsontext
from ecs_ipam.safepath import open_no_follow, require_private
from ecs_ipam.settings import LOG_LEVELS

MAX_BYTES = 4 * 1024 * 1024  # a log is rotated before a line would take it past this
GENERATIONS = 4  # rotated logs kept: PATH.1 (the newest) to PATH.4
_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r"})


def line(call, level, now=None):
    """The log line of call (a cli.Call), or None when it changed nothing and did not fail, or is below level.

    2026-11-30T10:00:00Z [INFO] ADD id="0a:1b:2c:3d:4e:5f" container="..." ifname="ecs-eth0": allocated 169.254.172.2
    """
    severity = "error" if call.error is not None else "info"
    changed = call.changes or call.upgrades
    if not (changed or call.error is not None) or LOG_LEVELS.index(severity) < LOG_LEVELS.index(level):
        return None
    # An upgrade in place first: the Go plugin's allocations enter the store there.
    parts = [report.replace("ecs-ipam: ", "", 1).translate(_ESCAPES) for report in call.upgrades]
    if call.error is not None:
        details = f": {call.error.details}" if call.error.details else ""
        parts.append(f"code {call.error.code}: {call.error.msg}{details}".translate(_ESCAPES))
    allocated = [str(a.address) for verb, a in call.changes if verb == "allocated"]
    if allocated:
        parts.append("allocated " + ", ".join(allocated))
    holders = {}  # (id, container, ifname, allocated_at) -> the addresses released from it, in order
    for verb, a in call.changes:
        if verb == "released":
            holders.setdefault((a.id, a.container, a.ifname, a.allocated_at), []).append(str(a.address))
    if holders:
        parts.append("released " + ", ".join(
            f"{', '.join(addresses)} (id={_quoted(holder)} container={_quoted(container)} "
            f"ifname={_quoted(ifname)} since {_stamp(since)})"
            for (holder, container, ifname, since), addresses in holders.items()))
    command = call.command if call.command and call.command.isascii() and call.command.isalnum() \
        else _quoted(call.command)
    return (f"{_stamp(time.time() if now is None else now)} [{severity.upper()}] {command} id={_quoted(call.id)} "
            f"container={_quoted(call.container)} ifname={_quoted(call.ifname)}: {'; '.join(parts)}\n")


def append(path, text):
    """Append text to the log at path in one O_APPEND write; first rotate a log it would take past MAX_BYTES."""
    data = text.encode()
    fd = _open(path)
    try:
        size = os.fstat(fd).st_size
        if size and size + len(data) > MAX_BYTES:
            _rotate(path, fd)
            fresh = _open(path)
            os.close(fd)  # releases _rotate's lock, now that path names the fresh log
            fd = fresh
        os.write(fd, data)
    finally:
        os.close(fd)


def _rotate(path, fd):
    """Shift PATH.N to PATH.N+1 (the oldest drops out) and PATH to PATH.1, under a lock on fd (the full
    log) held until it is closed; unless another call has just rotated it."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return
    except FileNotFoundError:  # renamed by a call that is rotating it right now
        return
    for generation in range(GENERATIONS - 1, 0, -1):
        try:
            os.rename(f"{path}.{generation}", f"{path}.{generation + 1}")
        except FileNotFoundError:
            pass
    os.rename(path, f"{path}.1")


def _open(path):
    """The log, opened to append: never through a symlink, and as root never in a directory that
    another user can write (they could point root's writes at any file); CNIError otherwise."""
    require_private(os.path.dirname(os.path.abspath(path)), "the call log's directory")
    # O_NONBLOCK: a FIFO at path without a reader fails at once instead of hanging the call.
    return open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK)


def _quoted(text):
    """A value as a JSON string (one line, ASCII: ids may hold any character), - when absent."""
    return "-" if text is None else jsontext.dumps(text)


def _stamp(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
