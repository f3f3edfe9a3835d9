"""Upgrades the Go plugin's BoltDB store to an ecs-ipam store in place, crash-safely.

A host is upgraded by replacing the plugin while tasks run, so the first call that finds the
Go plugin's file at the store's path (it holds the store's lock: no other ecs-ipam runs)
carries its allocations over, then serves the call. In this order:

1. Take an exclusive flock(2) on the BoltDB file, as every Go plugin call does for its whole
   run, waiting up to the lock timeout (code 11 after it): no Go call is then inside the file.
2. Read its IPAM bucket and place each address under the subnet of the config being served
   that contains it (go_import.plan_import). An address that no such subnet contains stops the
   upgrade (code 5, naming it and the `db import-bolt` command that carries it over), as does
   the journal of an earlier ecs-ipam store beside the file (a rollback that left it behind).
3. Copy the file byte for byte to PATH.go-plugin.new, fsync it, rename it to PATH.go-plugin
   (PATH.go-plugin.N when another file has that name), fsync the directory.
4. Write the new store to PATH.new and fsync it.
5. Rename PATH.new over PATH and fsync the directory: the switch is this one rename.
6. Invalidate the meta pages of the old file, now reachable by no name, so that a Go call that
   opened it before the switch and waits for its flock fails ("invalid database") instead of
   allocating from a store that nobody reads any more.

A kill or a power loss before 5 leaves the BoltDB file untouched at PATH, and the next call
upgrades again (reusing a whole backup, replacing a torn PATH.new); from 5 on, the new store is
whole at PATH and the backup whole beside it. PATH always holds one of the two.
"""

import os
import time

from ecs_ipam import bolt, go_import
from ecs_ipam.disk import copy_bytes, fsync_directory_of, install_snapshot, write_new_snapshot
from ecs_ipam.lock import wait_for_flock
from ecs_ipam.errors import IO_FAILURE, CNIError
from ecs_ipam.store import DictTables, Store

BACKUP_SUFFIX = ".go-plugin"
_MORE_BACKUPS = 99  # PATH.go-plugin.2 .. .99


def upgrade(path, timeout, subnets, gdbm):
    """Upgrade the Go plugin's store at path for a config of subnets; return the line to tell."""
    if os.path.lexists(path + ".journal"):
        raise CNIError(IO_FAILURE, f"cannot upgrade the Go plugin's store {path}: {path}.journal lies beside it",
                       "that journal belongs to an earlier ecs-ipam store (put back by a rollback?) and would "
                       f"be replayed over the upgrade; move it away, then call again")
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        wait_for_flock(fd, timeout, path, "a Go ecs-ipam plugin call holds its store")
        pairs, page_size = bolt.read_locked(path, fd, go_import.BUCKET)
        try:
            plan = go_import.plan_import(pairs, subnets, int(time.time()))
        except go_import.Unplaced as err:
            raise _unplaced_error(path, err)
        backup = _keep_backup(path, fd)
        tables = DictTables()
        store = Store(tables)
        for allocation in plan.allocations:
            store.reserve(allocation)
        for subnet, cursor in plan.cursors.items():
            store.set_cursor(subnet, cursor)
        write_new_snapshot(gdbm, path, {key: tables.get(key) for key in tables.keys()})
        install_snapshot(path)
        if os.fstat(fd).st_nlink == 0:  # never touch a file another name still reaches
            bolt.invalidate(fd, page_size)
    finally:
        os.close(fd)  # releases the flock
    return _report(path, plan, backup)


def _unplaced_error(path, unplaced):
    version, addresses = unplaced.version, unplaced.addresses
    field = f"ipv{version}-subnet"
    return CNIError(IO_FAILURE, f"cannot upgrade the Go plugin's store {path}: it holds {len(addresses)} IPv{version} "
                                f"address(es) that no {field} of this config contains: {go_import.names(addresses)}",
                    f"nothing was changed; carry them over by hand: mv {path} {path}.bolt && ecs-ipam db "
                    f"import-bolt {path}.bolt --db {path} --{field} CIDR (repeat the flag for each subnet "
                    "they come from)")


def _keep_backup(path, fd):
    """The name of a whole copy of the BoltDB file open at fd, beside path: one an upgrade killed
    before its switch left, or a new one."""
    names = [path + BACKUP_SUFFIX] + [f"{path}{BACKUP_SUFFIX}.{n}" for n in range(2, _MORE_BACKUPS + 1)]
    for name in names:
        if not os.path.lexists(name):
            break
        if _same_bytes(name, fd):
            return name
    else:
        raise CNIError(IO_FAILURE, f"cannot upgrade the Go plugin's store {path}: {names[-1]} and every backup "
                                   "name before it are taken", "move the old backups away")
    staged = name + ".new"
    try:
        os.unlink(staged)  # left by an upgrade that was killed while copying
    except FileNotFoundError:
        pass
    out = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        copy_bytes(fd, out, path)
        os.fsync(out)
    finally:
        os.close(out)
    os.rename(staged, name)
    fsync_directory_of(name)
    return name


def _same_bytes(name, fd):
    size = os.fstat(fd).st_size
    try:
        with open(name, "rb") as other:
            if os.fstat(other.fileno()).st_size != size:
                return False
            offset = 0
            while offset < size:
                chunk = other.read(1 << 20)
                if not chunk or chunk != os.pread(fd, len(chunk), offset):
                    return False
                offset += len(chunk)
            return True
    except OSError:
        return False


def _report(path, plan, backup):
    held = go_import.per_subnet(plan) or "none held"
    cursors = ", ".join(f"{cursor} in {subnet}" for subnet, cursor in plan.cursors.items())
    return (f"ecs-ipam: upgraded the Go plugin's store {path} in place: {len(plan.allocations)} allocation(s) "
            f"carried over ({held})" + (f", cursor {cursors}" if cursors else "")
            + f"; the Go plugin's file is kept as {backup}"
            + "".join(f"; note: {note}" for note in plan.notes))
