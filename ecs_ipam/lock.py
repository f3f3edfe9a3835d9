"""The store's lock: an exclusive flock(2) on PATH.lock for a whole call, waited for up to a time limit.

It is flock(2), the lock the Go plugin takes on its BoltDB file too, not a POSIX fcntl/lockf
record lock: the two do not see each other. The lock file is never removed: a process that
removes it while another holds it lets the next call lock a new file beside the running one,
so after locking the file is checked to still be the one at the path (and locked again if not).
"""

import errno
import fcntl
import os
import time

from ecs_ipam.errors import TRY_AGAIN_LATER, CNIError
from ecs_ipam.safepath import open_no_follow

HOLDER = "another ecs-ipam process holds the store"


def lock_store(lock_path, timeout, writable=True):
    """The descriptor of lock_path, exclusively flocked; None for a reader where none can exist.

    timeout is in seconds, 0 waiting without a limit; code 11 after it.
    """
    deadline = None if not timeout else _now() + timeout
    while True:
        fd = _open_lock_file(lock_path, writable)
        if fd is None:
            return None
        try:
            remaining = 0 if deadline is None else max(deadline - _now(), 0.001)
            wait_for_flock(fd, remaining, lock_path, HOLDER, timeout)
            if _still_at(fd, lock_path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed or replaced while we waited: lock the file that is there now


def wait_for_flock(fd, timeout, path, holder, shown_timeout=None):
    """Take an exclusive flock on fd, waiting at most timeout seconds (0: without a limit);
    code 11 naming path and holder (who is likely to hold it) after that."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if not timeout:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    import signal

    def expire(signum, frame):
        raise _Expired()

    previous = signal.signal(signal.SIGALRM, expire)
    # The runtime may have left SIGALRM blocked; then the timer would never end the wait.
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        fcntl.flock(fd, fcntl.LOCK_EX)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Expired:
        raise CNIError(TRY_AGAIN_LATER,
                       f"timed out after {shown_timeout or timeout:g}s waiting for the lock on {path}",
                       f"{holder}; try again later "
                       "(ipam's db-connection-timeout or IPAM_DB_CONNECTION_TIMEOUT sets the wait)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGALRM, previous)


class _Expired(Exception):
    pass


def _open_lock_file(lock_path, writable):
    """The lock file's descriptor; None for a reader on a read-only file system without one."""
    try:
        return open_no_follow(lock_path, os.O_RDWR | os.O_CREAT)
    except OSError as err:
        if writable or err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    try:
        return open_no_follow(lock_path, os.O_RDONLY)  # flock works on it too
    except FileNotFoundError:
        return None  # nobody can write there either, so there is nothing to wait for


def _still_at(fd, path):
    """Whether the file open at fd is the one at path (same device and inode)."""
    try:
        there = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def _now():
    return time.monotonic()
