"""ecs_ipam.lock in process: the store's flock, its time limit, the re-check after locking, no symlinks."""

import errno
import fcntl
import os
import signal
import threading
import time

import pytest

from conftest import FlockHolder
from ecs_ipam import lock
from ecs_ipam.errors import CNIError


def locked_by_another(path):
    """Whether another open file description cannot take path's flock now."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_lock_store_creates_the_lock_file_and_holds_it_until_closed(tmp_path):
    path = str(tmp_path / "ipam.db.lock")
    fd = lock.lock_store(path, 5)
    try:
        assert os.path.isfile(path) and os.stat(path).st_mode & 0o777 == 0o600
        assert (os.fstat(fd).st_dev, os.fstat(fd).st_ino) == (os.stat(path).st_dev, os.stat(path).st_ino)
        assert locked_by_another(path)
    finally:
        os.close(fd)
    assert not locked_by_another(path)
    assert os.path.isfile(path)  # never removed (see the module docstring)


def test_a_held_lock_is_code_11_after_the_timeout_naming_path_and_holder(tmp_path):
    path = str(tmp_path / "ipam.db.lock")
    handler = signal.getsignal(signal.SIGALRM)
    with FlockHolder(path):
        began = time.monotonic()
        with pytest.raises(CNIError) as caught:
            lock.lock_store(path, 0.3)
        waited = time.monotonic() - began
    assert caught.value.code == 11
    assert path in caught.value.msg and "0.3s" in caught.value.msg
    assert lock.HOLDER in caught.value.details and "db-connection-timeout" in caught.value.details
    # It waited the timeout, not a moment (nor the 5 s default) of it; the bound is a loaded machine's.
    assert 0.3 <= waited < 4.5, waited
    # The timer is gone and the SIGALRM handler is the one it found.
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) is handler


def test_a_lock_let_go_within_the_timeout_is_taken(tmp_path):
    path = str(tmp_path / "ipam.db.lock")
    holder = FlockHolder(path)
    letting_go = threading.Timer(0.3, holder.release)  # a holder whose call ends 0.3 s from now
    letting_go.start()
    try:
        began = time.monotonic()
        fd = lock.lock_store(path, 30)
        waited = time.monotonic() - began
    finally:
        letting_go.join()
    os.close(fd)
    assert 0.3 <= waited < 25, waited  # it waited for the holder, and took the lock once it was free


@pytest.mark.parametrize("what", ["replaced", "removed"])
def test_a_lock_file_replaced_or_removed_while_waiting_is_locked_again_at_the_path(tmp_path, monkeypatch, what):
    """Between opening the file and getting its flock, someone removes it (and maybe makes a new
    one): the descriptor locked is then not the file at the path, so lock_store must lock that one."""
    path = str(tmp_path / "ipam.db.lock")
    waits = []
    real_wait = lock.wait_for_flock

    def wait_while_the_file_changes(fd, *args):
        waits.append(os.fstat(fd).st_ino)
        if len(waits) == 1:
            os.unlink(path)
            if what == "replaced":
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        return real_wait(fd, *args)

    monkeypatch.setattr(lock, "wait_for_flock", wait_while_the_file_changes)
    fd = lock.lock_store(path, 5)
    try:
        assert len(waits) == 2  # the first lock was let go, the file at the path locked instead
        assert os.fstat(fd).st_ino == os.stat(path).st_ino
        if what == "replaced":  # (a removed file's inode is free again once let go: it may be reused)
            assert waits[1] != waits[0]
        assert locked_by_another(path)
    finally:
        os.close(fd)


def test_a_symlink_at_the_lock_path_is_refused_and_its_target_not_made(tmp_path):
    path = tmp_path / "ipam.db.lock"
    target = tmp_path / "elsewhere"
    path.symlink_to(target)
    with pytest.raises(CNIError) as caught:
        lock.lock_store(str(path), 5)
    assert caught.value.code == 5 and str(path) in caught.value.msg and "symbolic link" in caught.value.msg
    assert not target.exists()


def test_open_no_follow_opens_a_file_and_refuses_a_link_naming_it(tmp_path):
    real = tmp_path / "file"
    real.write_text("x")
    fd = lock.open_no_follow(str(real), os.O_RDONLY)
    try:
        assert os.read(fd, 1) == b"x"
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # not inherited by what the plugin runs
    finally:
        os.close(fd)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(CNIError) as caught:
        lock.open_no_follow(str(link), os.O_RDONLY)
    assert caught.value.code == 5 and str(link) in caught.value.msg
    with pytest.raises(FileNotFoundError):  # other errors stay OSErrors for the caller to name
        lock.open_no_follow(str(tmp_path / "missing"), os.O_RDONLY)


def test_a_reader_where_no_lock_file_can_be_made_waits_for_nothing(tmp_path, monkeypatch):
    """On a read-only file system a reader gets no descriptor when no lock file exists (no writer
    can exist either), the existing file read-only when it does; a writer gets the error."""
    path = str(tmp_path / "ipam.db.lock")
    real_open = lock.open_no_follow

    def read_only_file_system(name, flags, mode=0o600):
        if flags & (os.O_CREAT | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", name)
        return real_open(name, flags, mode)

    monkeypatch.setattr(lock, "open_no_follow", read_only_file_system)
    assert lock.lock_store(path, 5, writable=False) is None
    with pytest.raises(OSError) as caught:
        lock.lock_store(path, 5, writable=True)
    assert caught.value.errno == errno.EROFS
    open(path, "w").close()
    fd = lock.lock_store(path, 5, writable=False)
    try:
        assert fd is not None and locked_by_another(path)
    finally:
        os.close(fd)
