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
import os
import stat
import zlib

from ecs_ipam import filekind, jsontext
from ecs_ipam.errors import IO_FAILURE, CNIError
from ecs_ipam.lock import lock_store
from ecs_ipam.safepath import open_no_follow, require_private, require_private_links, symlink_refused
from ecs_ipam.store import LAYOUT, LAYOUT_KEY, DictTables, Store

COMPACT_AFTER = 256
# Past this many journal records, compaction has failed for hundreds of commits in a row: every
# call re-reads the whole journal, so STATUS fails and `db check` exits 1 until it is fixed.
JOURNAL_LIMIT = 4 * COMPACT_AFTER
# Why the last compaction failed, kept in the journal (and dropped by the next one that works).
_COMPACTION_FAILURE = "compaction-failure"
# A commit appends a record of a few hundred bytes: STATUS wants at least this much free.
_ROOM_FOR_A_RECORD = 4096


class open_store:
    """``with open_store(path, timeout) as store:`` locks, loads, and on success commits.

    timeout is in seconds (0 waits forever). With writable=False nothing is ever
    written or created, and a store that does not exist reads as empty (or, with
    must_exist, is code 5 "no store at PATH"). With create=False (for calls that only
    release) a store that does not exist reads as empty too, and no directory or lock
    file is made for it. An exception inside the block discards every change made in it.
    Once the block has committed, ``committed`` lists what it allocated and released
    (Store.changes).

    Given upgrade_subnets (the subnets of the config being served), a Go plugin's BoltDB file
    at path is first upgraded in place (ecs_ipam.upgrade); without them such a file is refused
    (GoPluginStore, code 5). warn(line) tells of the upgrade and of a failed compaction.
    """

    def __init__(self, path, timeout, writable=True, upgrade_subnets=None, warn=None, must_exist=False,
                 create=True):
        # A symlink at path is followed once, here: the snapshot is replaced by a rename, which
        # would otherwise replace the link itself and leave the linked file behind. (Root
        # follows only links no other user could have planted: __enter__ checks.)
        self.given_path = path
        self.path = os.path.realpath(path)
        self.timeout = timeout
        self.writable = writable
        self.upgrade_subnets = upgrade_subnets
        self.warn = warn
        self.must_exist = must_exist
        self.journal_records = 0
        self.compaction_failure = None
        self.upgraded = None  # the upgrade's report, when this session upgraded a Go plugin store
        self.create = create
        self._lock_fd = None
        self._tables = None
        self._store = None
        self.committed = []

    def __enter__(self):
        try:
            require_private_links(self.given_path)
            directory = os.path.dirname(self.path)
            if not _inspect(self.path, self.upgrade_subnets is not None):
                if self.must_exist:
                    raise CNIError(IO_FAILURE, f"no store at {self.path}",
                                   "check the path (--db, IPAM_DB_PATH); a store is made by the first ADD")
                if not (self.writable and self.create):
                    self._tables = DictTables()
                    return Store(self._tables)
                _make_directories(directory)
            require_private(directory)
            self._lock_fd = lock_store(self.path + ".lock", self.timeout, self.writable)
            try:
                self._tables = _DiskTables(self.path, self.warn)
            except GoPluginStore:
                if self.upgrade_subnets is None:
                    raise
                from ecs_ipam import upgrade

                report = upgrade.upgrade(self.path, self.timeout, self.upgrade_subnets, _gdbm())
                self.upgraded = report
                if self.warn is not None:
                    self.warn(report)
                self._tables = _DiskTables(self.path, self.warn)
            self.journal_records = self._tables.journal_records
            self.compaction_failure = self._tables.get_committed(_COMPACTION_FAILURE)
            self._store = Store(self._tables)
            return self._store
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
                self.committed = self._store.changes
        except OSError as err:
            raise _io_error(self.path, err)
        finally:
            self._close()
        return False

    def commit_problem(self):
        """Why a commit to this store could not succeed now, as a sentence; None when it could.

        Looks, writes nothing: the directory (or the one an ADD would make it in) must be a
        writable directory on a writable file system with room for a journal record, and the
        journal must not have outgrown JOURNAL_LIMIT (compactions failing).
        """
        if self.journal_records > JOURNAL_LIMIT:
            return (f"the journal {self.path}.journal holds {self.journal_records} records (over {JOURNAL_LIMIT}): "
                    f"compacting it keeps failing ({self.compaction_failure or 'reason unknown'})")
        directory = os.path.dirname(self.path)
        while not os.path.lexists(directory):  # an ADD would make it in the nearest that exists
            directory = os.path.dirname(directory)
        if not os.path.isdir(directory):
            return f"{directory} is not a directory, so {self.path} cannot be made"
        try:
            room = os.statvfs(directory)
        except OSError as err:
            return f"cannot look at {directory}: {err.strerror}"
        if room.f_flag & os.ST_RDONLY:
            return f"{directory} is on a read-only file system"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{directory} is not writable by this user"
        for name in (self.path, self.path + ".journal"):
            if os.path.lexists(name) and not os.access(name, os.W_OK):
                return f"{name} is not writable by this user"
        free = room.f_frsize * (room.f_bfree if os.geteuid() == 0 else room.f_bavail)
        if free < _ROOM_FOR_A_RECORD:
            return f"the file system of {directory} is full ({free} bytes free)"
        if not os.path.lexists(self.path + ".journal") and room.f_files and not room.f_ffree:
            return f"the file system of {directory} has no free inode for the journal"
        return None

    def _close(self):
        if isinstance(self._tables, _DiskTables):
            self._tables.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def _inspect(path, upgrading):
    """Whether a store (or the Go plugin's file to upgrade) is at path; code 5, before any lock
    file is made beside it, for anything else there and for a path that cannot be looked at."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        found = None
    journal = path + ".journal"
    try:
        if stat.S_ISLNK(os.lstat(journal).st_mode):
            raise symlink_refused(journal)
        has_journal = True
    except FileNotFoundError:
        has_journal = False
    if found is None:
        return has_journal
    if not stat.S_ISREG(found.st_mode):
        raise CNIError(IO_FAILURE, f"{path} is not an ecs-ipam store: it is "
                                   + ("a directory" if stat.S_ISDIR(found.st_mode) else "not a regular file"),
                       "db-path (or IPAM_DB_PATH) names the store's file, not a directory: e.g. /data/eni-ipam.db")
    kind = filekind.kind_of_file(path)
    if kind == filekind.GDBM or (kind == filekind.BOLT and upgrading):
        return True
    raise _not_a_store(path, kind)


def _not_a_store(path, kind):
    """The refusal of a file of kind (not a dbm.gnu file) at the store's path: GoPluginStore for
    the Go plugin's BoltDB file (upgraded where a config's subnets allow), code 5 otherwise."""
    found = f"{path} is not an ecs-ipam store: {filekind.DESCRIPTIONS[kind]}"
    if kind == filekind.BOLT:
        return GoPluginStore(IO_FAILURE, found, _BOLT_HINT)
    return CNIError(IO_FAILURE, found,
                    "ecs-ipam never overwrites it; move it away or point db-path (or IPAM_DB_PATH) at another path")


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

    def __init__(self, path, warn=None):
        self.path = path
        self.journal_path = path + ".journal"
        self._warn = warn
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
                           "ecs-ipam never writes to it; move it away or point db-path (or IPAM_DB_PATH) "
                           "at another path")
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
        present.discard(_COMPACTION_FAILURE)  # the journal's own note, not the store's
        return sorted(present)

    @property
    def journal_records(self):
        return self._records

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
            except OSError as err:
                # The commit is already durable in the journal, so the call must not fail; the
                # next commit tries again. Say so, and note why in the journal for `db check`.
                self._compaction_failed(err)

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
        self._write_snapshot({**self._overlay, _COMPACTION_FAILURE: None})
        os.unlink(self.journal_path)
        fsync_directory_of(self.path)
        self._records = 0
        self._journal_length = 0
        self._journal_exists = False

    def _compaction_failed(self, err):
        import time

        reason = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {err.strerror or err}" + (
            f" ({err.filename})" if err.filename else "")
        if self._warn is not None:
            self._warn(f"ecs-ipam: warning: compacting the store {self.path} failed: {reason}; the journal "
                       f"now holds {self._records} records (`ecs-ipam db check` reports it)")
        self._pending = {_COMPACTION_FAILURE: reason}
        try:
            self._append(self._pending)
        except OSError:
            pass  # a full disk may refuse this note too; the warning has been given

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
            try:
                kind = filekind.kind_of_file(self.path)
            except OSError as err:
                raise _io_error(self.path, err)
            if kind == filekind.GDBM:
                raise self._damaged("gdbm cannot open it", OSError("a damaged dbm.gnu file"))
            raise _not_a_store(self.path, kind)

    def _read_journal(self):
        try:
            fd = open_no_follow(self.journal_path, os.O_RDONLY)
        except FileNotFoundError:
            return
        with open(fd, "rb") as journal:
            data = journal.read()
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
        fd = open_no_follow(self.journal_path, os.O_WRONLY | os.O_CREAT)
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
                with open(path, "rb") as base:
                    copy_bytes(base.fileno(), fd, path)
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


def copy_bytes(source_fd, target_fd, name):
    """Copy the whole file open at source_fd (named name, for the error) to target_fd; OSError if
    it ends before the size it had when the copy began."""
    size, offset = os.fstat(source_fd).st_size, 0
    while offset < size:
        sent = os.sendfile(target_fd, source_fd, offset, size - offset)
        if sent == 0:
            raise OSError(f"{name} ended at byte {offset} of {size} while it was copied")
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


_BOLT_HINT = ("the first plugin call upgrades it in place; or move it away and `ecs-ipam db import-bolt "
              "OLD_FILE --ipv4-subnet CIDR` carries its allocations over")
