"""The store on disk: a dbm.gnu file, a journal beside it, and the lock that serialises them.

Why a journal. gdbm updates its file in place, and a process killed in the middle of
writing buckets, directory and header leaves a store that may open yet silently miss
keys; syncing after each write does not close that window. Writing a whole new copy,
fsyncing it and renaming it over the old one is crash-safe, but costs time in
proportion to the store on every commit. So the store is two files:

- ``PATH``: a dbm.gnu snapshot that is never modified in place. It is only ever
  replaced whole: a copy is written beside it, fsynced and renamed over it.
- ``PATH.journal``: the commits since that snapshot, one line each
  (``<crc32 hex> <json list of [key, value-or-null]>``), appended with a single
  write and fsynced before the plugin prints its result.

A reader applies the journal over the snapshot. A kill can only tear the last
journal line, whose checksum then fails; it was never reported, so it is dropped.
After COMPACT_AFTER commits the journal is folded into a new snapshot (copy, apply,
fsync, rename) and removed; since every journal entry writes absolute values, the
journal replayed again over a snapshot that already holds it changes nothing, so a
kill between the rename and the removal is harmless too. A commit thus costs one
small append and fsync, and a compaction's copy is spread over COMPACT_AFTER commits.

All access, reads included, holds an exclusive fcntl lock on ``PATH.lock``.
"""

import errno
import fcntl
import os
import zlib

from ecs_ipam import jsontext
from ecs_ipam.errors import IO_FAILURE, TRY_AGAIN_LATER, CNIError
from ecs_ipam.store import LAYOUT, LAYOUT_KEY, MemoryTables, Store

COMPACT_AFTER = 256


class open_store:
    """``with open_store(path, timeout) as store:`` locks, loads, and on success commits.

    timeout is in seconds (0 waits forever). With writable=False nothing is ever
    written or created, and a store that does not exist reads as empty.
    An exception inside the block discards every change made in it.

    Given upgrade_subnets (the subnets of the config being served), a Go plugin's BoltDB file
    at path is first upgraded in place (ecs_ipam.upgrade), and warn(line) says so; without
    them such a file is refused (GoPluginStore, code 5).
    """

    def __init__(self, path, timeout, writable=True, upgrade_subnets=None, warn=None):
        # A symlink at path is followed once, here: the snapshot is replaced by a rename, which
        # would otherwise replace the link itself and leave the linked file behind.
        self.path = os.path.realpath(path)
        self.timeout = timeout
        self.writable = writable
        self.upgrade_subnets = upgrade_subnets
        self.warn = warn
        self._lock_fd = None
        self._tables = None

    def __enter__(self):
        try:
            if not self.writable and not _exists_any(self.path):
                self._tables = MemoryTables()
                return Store(self._tables)
            if self.writable:
                _make_directories(os.path.dirname(os.path.abspath(self.path)))
            self._lock_fd = _lock(self.path + ".lock", self.timeout, self.writable)
            try:
                self._tables = _DiskTables(self.path)
            except GoPluginStore:
                if self.upgrade_subnets is None:
                    raise
                from ecs_ipam import upgrade

                report = upgrade.upgrade(self.path, self.timeout, self.upgrade_subnets, _gdbm())
                if self.warn is not None:
                    self.warn(report)
                self._tables = _DiskTables(self.path)
            return Store(self._tables)
        except OSError as err:
            self._close()
            raise _io_error(self.path, err)
        except BaseException:
            self._close()
            raise

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and self.writable and isinstance(self._tables, _DiskTables):
                self._tables.commit()
        except OSError as err:
            raise _io_error(self.path, err)
        finally:
            self._close()
        return False

    def _close(self):
        if isinstance(self._tables, _DiskTables):
            self._tables.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def _make_directories(directory):
    """Create directory and its missing parents, each 0700 (os.makedirs gives only the leaf a mode)."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            continue
        # The new name must be durable before the store in it is: a power loss must not lose both.
        fsync_directory_of(directory)


def _exists_any(path):
    return os.path.exists(path) or os.path.exists(path + ".journal")


class _LockTimeout(Exception):
    pass


def _open_lock_file(lock_path, writable):
    """The lock file's descriptor; None for a reader on a read-only file system without one."""
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        if writable or err.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    try:
        return os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)  # flock works on it too
    except FileNotFoundError:
        return None  # nobody can write there either, so there is nothing to wait for


def _lock(lock_path, timeout, writable=True):
    """Open lock_path and take an exclusive lock on it, waiting at most timeout seconds."""
    fd = _open_lock_file(lock_path, writable)
    if fd is None:
        return None
    try:
        wait_for_flock(fd, timeout, lock_path, "another ecs-ipam process holds the store")
    except BaseException:
        os.close(fd)
        raise
    return fd


def wait_for_flock(fd, timeout, path, holder):
    """Take an exclusive flock(2) on fd, waiting at most timeout seconds (0: without a limit);
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
        raise _LockTimeout()

    previous = signal.signal(signal.SIGALRM, expire)
    # The runtime may have left SIGALRM blocked; then the timer would never end the wait.
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        fcntl.flock(fd, fcntl.LOCK_EX)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _LockTimeout:
        raise CNIError(TRY_AGAIN_LATER, f"timed out after {timeout:g}s waiting for the lock on {path}",
                       f"{holder}; try again later (IPAM_DB_CONNECTION_TIMEOUT sets the wait)")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGALRM, previous)


def _io_error(path, err):
    where = err.filename or path
    return CNIError(IO_FAILURE, f"store {path}: {err.strerror or err} ({where})",
                    f"errno {errno.errorcode.get(err.errno, err.errno)}")


def _gdbm():
    # dbm.gnu is `from _gdbm import *`; importing _gdbm directly skips the dbm package, which
    # also loads dbm.ndbm and struct: about 1 ms of a start-up that happens on every call.
    try:
        import _gdbm
    except ImportError:
        import sys
        raise CNIError(IO_FAILURE, f"this Python ({sys.executable}) has no dbm.gnu module",
                       "install GNU dbm support for it: python3-gdbm on Debian, Ubuntu and Alpine "
                       "(py3-gdbm); Amazon Linux 2023 and Fedora include it")
    return _gdbm


class GoPluginStore(CNIError):
    """The file at the store's path is the Go plugin's BoltDB file (code 5 where it is not upgraded)."""


class _DiskTables:
    """The snapshot, the journal over it, and this session's pending changes."""

    def __init__(self, path):
        self.path = path
        self.journal_path = path + ".journal"
        self._gdbm = _gdbm()
        self._base = self._open_base()
        self._overlay = {}  # key -> value or None (deleted), from the journal
        self._pending = {}  # key -> value or None, from this session
        self._records = 0
        self._journal_length = 0  # bytes of whole, valid records
        self._journal_exists = False
        self._read_journal()
        layout = self.get(LAYOUT_KEY)
        if layout is None and self._base is not None:  # every snapshot ecs-ipam writes carries its layout
            raise CNIError(IO_FAILURE, f"{path} is not an ecs-ipam store: it is a dbm.gnu file without "
                                       f"ecs-ipam's {LAYOUT_KEY!r} key (another program's database?)",
                           "ecs-ipam never writes to it; move it away or point IPAM_DB_PATH at another path")
        if layout is not None and layout != LAYOUT:
            raise CNIError(IO_FAILURE, f"store {path} has layout {layout!r}; this ecs-ipam reads layout {LAYOUT!r}",
                           "it was written by a newer ecs-ipam: use that version")

    def get(self, key):
        if key in self._pending:
            return self._pending[key]
        return self.get_committed(key)

    def put(self, key, value):
        self._pending[key] = value

    def delete(self, key):
        self._pending[key] = None

    def keys(self):
        try:
            present = set(k.decode() for k in self._base.keys()) if self._base is not None else set()
        except UnicodeDecodeError as err:
            raise self._damaged("it holds a key that is not UTF-8 text", err)
        for layer in (self._overlay, self._pending):
            for key, value in layer.items():
                (present.add if value is not None else present.discard)(key)
        return sorted(present)

    def commit(self):
        changes = {key: value for key, value in self._pending.items()
                   if value != self.get_committed(key)}
        if not changes:
            return
        if self._base is None and not self._journal_exists:
            self._write_snapshot(changes)
            return
        self._append(changes)
        if self._records >= COMPACT_AFTER:
            try:
                self.compact()
            except OSError:
                # The commit is already durable in the journal, so the call must not fail;
                # the next commit tries the compaction again.
                pass

    def get_committed(self, key):
        """The value as the snapshot and the journal hold it, without this session's changes."""
        if key in self._overlay:
            return self._overlay[key]
        if self._base is None:
            return None
        try:
            return self._base[key.encode()].decode()
        except KeyError:
            return None
        except (UnicodeDecodeError, self._gdbm.error) as err:
            raise self._damaged(f"the value of {key!r} cannot be read", err)

    def compact(self):
        """Fold the journal into a new snapshot, then remove it (see the module docstring)."""
        self._write_snapshot(self._overlay)
        os.unlink(self.journal_path)
        fsync_directory_of(self.path)
        self._records = 0
        self._journal_length = 0
        self._journal_exists = False

    def close(self):
        if self._base is not None:
            self._base.close()
            self._base = None

    def _damaged(self, what, err):
        return CNIError(IO_FAILURE, f"store {self.path} is damaged: {what}",
                        f"{type(err).__name__}: {err}; restore it from a backup, or move it away")

    def _open_base(self):
        if not os.path.exists(self.path):
            return None
        try:
            return self._gdbm.open(self.path, "ru")
        except self._gdbm.error:
            found = _describe(self.path)
            if found == _BOLT_FILE:
                raise GoPluginStore(IO_FAILURE, f"{self.path} is not an ecs-ipam store: {found}",
                                    "the first plugin call upgrades it in place; or move it away and "
                                    "`ecs-ipam db import-bolt OLD_FILE --ipv4-subnet CIDR` carries its "
                                    "allocations over")
            raise CNIError(IO_FAILURE, f"{self.path} is not an ecs-ipam store: {found}",
                           "ecs-ipam never overwrites it; move it away or point IPAM_DB_PATH at another path")

    def _read_journal(self):
        try:
            with open(self.journal_path, "rb") as journal:
                data = journal.read()
        except FileNotFoundError:
            return
        self._journal_exists = True
        lines = data.split(b"\n")
        # lines[-1] is what follows the last newline: empty, or a torn write.
        for number, line in enumerate(lines[:-1], 1):
            changes = _decode_record(line)
            if changes is None:
                if number == len(lines) - 1 and not lines[-1]:
                    break  # the last record, torn by a crash before it was reported
                raise CNIError(IO_FAILURE, f"store journal {self.journal_path} is damaged at record {number}",
                               "a record before the last one fails its checksum; "
                               "run `ecs-ipam db check` and restore the store from a backup")
            self._overlay.update(changes)
            self._records += 1
            self._journal_length += len(line) + 1

    def _append(self, changes):
        line = _encode_record(changes)
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, self._journal_length)  # drop a torn tail before appending
            os.lseek(fd, self._journal_length, os.SEEK_SET)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, "short write to the journal", self.journal_path)
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, self._journal_length)
                raise
        finally:
            os.close(fd)
        # Every time, not only when this process created the journal: a creator killed between
        # its file and directory fsyncs would leave the journal's name to a later power loss.
        # (A directory with nothing to flush syncs in about 0.05 ms.)
        fsync_directory_of(self.path)
        self._journal_exists = True
        self._journal_length += len(line)
        self._records += 1
        self._overlay.update(changes)
        self._pending = {}

    def _write_snapshot(self, changes):
        """Write base + changes to PATH.new, fsync it, and rename it over PATH."""
        write_new_snapshot(self._gdbm, self.path, changes, copy_base=self._base is not None)
        install_snapshot(self.path)


def write_new_snapshot(gdbm, path, changes, copy_base=False):
    """Write PATH.new: a copy of the snapshot at path (copy_base) or an empty store, with changes
    applied and the layout key set; fsync it. A leftover PATH.new is replaced."""
    new_path = path + ".new"
    try:
        os.unlink(new_path)  # left by a compaction or an upgrade that was killed
    except FileNotFoundError:
        pass
    try:
        fd = os.open(new_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if copy_base:
                _copy_file(path, fd)
        finally:
            os.close(fd)
        snapshot = gdbm.open(new_path, "wu" if copy_base else "nu", 0o600)
        try:
            snapshot[LAYOUT_KEY.encode()] = LAYOUT.encode()
            for key, value in changes.items():
                if value is None:
                    if key.encode() in snapshot:
                        del snapshot[key.encode()]
                else:
                    snapshot[key.encode()] = value.encode()
        finally:
            snapshot.close()
        fd = os.open(new_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(new_path)
        except OSError:
            pass
        raise


def install_snapshot(path):
    """Rename PATH.new (whole and fsynced) over path, and make the rename durable."""
    try:
        os.rename(path + ".new", path)
    except BaseException:
        try:
            os.unlink(path + ".new")
        except OSError:
            pass
        raise
    fsync_directory_of(path)


def _copy_file(source_path, target_fd):
    with open(source_path, "rb") as source:
        size = os.fstat(source.fileno()).st_size
        offset = 0
        while offset < size:
            sent = os.sendfile(target_fd, source.fileno(), offset, size - offset)
            if sent == 0:
                break
            offset += sent


def fsync_directory_of(path):
    """fsync the directory that holds path (so that a name created or renamed there is durable)."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_record(changes):
    payload = jsontext.dumps(sorted(changes.items())).encode()
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _decode_record(line):
    """The {key: value-or-None} of one journal line, or None when the line is damaged."""
    checksum, _, payload = line.partition(b" ")
    try:
        if int(checksum, 16) != zlib.crc32(payload):
            return None
        return {key: value for key, value in jsontext.loads(payload.decode())}
    except (ValueError, TypeError):
        return None


_BOLT_FILE = "it is a BoltDB file, as written by the Go ecs-ipam plugin"


def _describe(path):
    """A short description of what a file that is not a gdbm store looks like."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError as err:
        return f"cannot read it ({err.strerror})"
    if not head:
        return "the file is empty"
    from ecs_ipam.bolt import MAGIC  # the error path only

    if int.from_bytes(head[16:20], "little") == MAGIC:  # bolt's meta page, after the page header
        return _BOLT_FILE
    return "it is not a dbm.gnu file"
