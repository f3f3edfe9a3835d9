"""Shared fixtures: the built artifact, run as a separate process the way a runtime runs it."""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from go_fixtures import FIXTURES, fixture as go_fixture

ROOT = Path(__file__).resolve().parent.parent


def tree_digest(directory):
    """{relative path: sha256 of its bytes, or "directory"} of everything below directory."""
    digest = {}
    for path in sorted(directory.rglob("*")):
        name = str(path.relative_to(directory))
        digest[name] = "directory" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


@pytest.fixture(scope="session", autouse=True)
def fixtures_unchanged():
    """The suite must leave tests/fixtures as it found it: a test that uses a fixture store in place
    (a lock file made beside it, an upgrade) fails the run here. Copy it (go_store) instead."""
    before = tree_digest(FIXTURES.parent)
    yield
    after = tree_digest(FIXTURES.parent)
    changed = sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
    if changed:
        pytest.fail(f"the suite changed tests/fixtures: {', '.join(changed)} (use a copy of a fixture)", pytrace=False)


@pytest.fixture(scope="session")
def artifact():
    """Path of the built single-file plugin (ECS_IPAM_ARTIFACT, default dist/ecs-ipam)."""
    path = Path(os.environ.get("ECS_IPAM_ARTIFACT", ROOT / "dist" / "ecs-ipam"))
    if not path.is_file():
        pytest.fail(f"no built artifact at {path}: run ./build.sh first (./build.sh test does)")
    return path


class Plugin:
    """Runs the artifact as a CNI runtime does: a minimal environment, the config on stdin."""

    def __init__(self, artifact, db_path):
        self.artifact = artifact
        self.db_path = db_path

    def run(self, command, config=None, stdin=None, env=None, args=(), timeout=30):
        environ = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "IPAM_DB_PATH": str(self.db_path)}
        if "SHIV_ROOT" in os.environ:  # where the artifact unpacks, for a run that is not root's
            environ["SHIV_ROOT"] = os.environ["SHIV_ROOT"]
        if command is not None:
            environ["CNI_COMMAND"] = command
            environ.setdefault("CNI_IFNAME", "eth0")
        environ.update(env or {})
        environ = {k: v for k, v in environ.items() if v is not None}
        if stdin is None and config is not None:
            stdin = json.dumps(config)
        proc = subprocess.run(
            [str(self.artifact), *args],
            input=(stdin or "").encode(),
            env=environ,
            capture_output=True,
            timeout=timeout,
            cwd="/",
        )
        return Outcome(proc)


class Outcome:
    """One finished plugin process: exit code, stdout parsed as JSON when there is any, stderr."""

    def __init__(self, proc):
        self.code = proc.returncode
        self.stdout = proc.stdout.decode()
        self.stderr = proc.stderr.decode()
        assert "Traceback" not in self.stdout + self.stderr, self.stdout + self.stderr
        self.json = json.loads(self.stdout) if self.stdout.strip() else None

    def __repr__(self):
        return f"<exit {self.code} stdout={self.stdout!r} stderr={self.stderr!r}>"


@pytest.fixture
def plugin(artifact, tmp_path):
    """A Plugin with its own scratch store under tmp_path."""
    return Plugin(artifact, tmp_path / "db" / "ipam.db")


@pytest.fixture
def go_store(tmp_path):
    """copy(name): a writable copy of the fixture NAME.db alone in its own directory."""
    def copy(name):
        directory = tmp_path / f"go-{name}"
        directory.mkdir()
        path = directory / "eni-ipam.db"
        shutil.copyfile(go_fixture(name)[0], path)
        return path
    return copy


class FlockHolder:
    """An exclusive flock(2) on path, held from the test as another ecs-ipam call (on PATH.lock) or
    a Go plugin call (on its BoltDB file) holds it, until release(); also a context manager.
    With create, path and its directory are made when missing."""

    def __init__(self, path, create=True):
        self.path = str(path)
        if create:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self._inode = os.fstat(self.fd).st_ino

    def waiters(self):
        """How many processes are blocked on this flock (/proc/locks lists a waiter with "->")."""
        with open("/proc/locks") as locks:
            return sum(1 for line in locks
                       if "->" in line and any(word.endswith(f":{self._inode}") for word in line.split()))

    def wait_for_waiters(self, count, limit=60):
        """Return once count processes are blocked on the lock; fail after limit seconds."""
        deadline = time.monotonic() + limit
        while self.waiters() < count:
            assert time.monotonic() < deadline, f"only {self.waiters()} of {count} processes reached the lock"
            time.sleep(0.05)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def hold_store_lock(db_path):
    """A FlockHolder of the store's lock file (db_path.lock), as another ecs-ipam process holds it."""
    return FlockHolder(f"{db_path}.lock")
