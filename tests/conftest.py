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


# What a runtime puts on PATH for the plugin it runs.
RUNTIME_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def runtime_env(env=None):
    """The minimal environment a runtime gives the plugin: PATH, SHIV_ROOT when this run sets one
    (where the artifact unpacks, for a run that is not root's), then env; a None value unsets."""
    environ = {"PATH": RUNTIME_PATH}
    if "SHIV_ROOT" in os.environ:
        environ["SHIV_ROOT"] = os.environ["SHIV_ROOT"]
    environ.update(env or {})
    return {name: value for name, value in environ.items() if value is not None}


def spawn(argv, env=None, stdin=b"", timeout=60, **options):
    """Run argv (the artifact, or a program that runs it) as a runtime does, in runtime_env(env),
    stdin on its standard input, from /; the finished CompletedProcess (bytes)."""
    return subprocess.run([str(arg) for arg in argv], input=stdin, env=runtime_env(env), capture_output=True,
                          timeout=timeout, cwd="/", **options)


def start(argv, env=None, stdin=b"", **options):
    """spawn without waiting: the Popen, stdin already written and closed (finish() waits for it)."""
    proc = subprocess.Popen([str(arg) for arg in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=runtime_env(env), cwd="/", **options)
    proc.stdin.write(stdin)
    proc.stdin.close()
    proc.stdin = None  # so that communicate() does not flush it again
    return proc


def finish(proc, timeout=120):
    """The Outcome of a started process, once it ends."""
    stdout, stderr = proc.communicate(timeout=timeout)
    return Outcome(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))


class Plugin:
    """Runs the artifact as a CNI runtime does: a minimal environment, the config on stdin."""

    def __init__(self, artifact, db_path):
        self.artifact = artifact
        self.db_path = db_path

    def env(self, command=None, env=None):
        """The environment of a call: runtime_env with the store, CNI_COMMAND and CNI_IFNAME eth0, then env."""
        environ = {"IPAM_DB_PATH": str(self.db_path)}
        if command is not None:
            environ.update({"CNI_COMMAND": command, "CNI_IFNAME": "eth0"})
        return {**environ, **(env or {})}

    def run(self, command, config=None, stdin=None, env=None, args=(), timeout=30):
        if stdin is None and config is not None:
            stdin = json.dumps(config)
        return Outcome(spawn([self.artifact, *args], self.env(command, env), (stdin or "").encode(), timeout))

    def start(self, command, config, env=None):
        """run without waiting: the Popen (finish() gives its Outcome)."""
        return start([self.artifact], self.env(command, env), json.dumps(config).encode())


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


# -- network namespaces of the test's own, for the bridge plugin -------------------------------

BRIDGE = Path("/usr/lib/cni/bridge")  # Debian's containernetworking-plugins


def ip(*args, check=True):
    """iproute2's `ip ARGS`, its output as text."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def addresses_in(netns, ifname, family):
    """The global addresses ("address/prefix") of ifname in netns, of IP version family; [] without ifname."""
    shown = ip("-n", netns, "-j", f"-{family}", "addr", "show", "dev", ifname, check=False)
    if shown.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(shown.stdout)
            for a in link.get("addr_info", []) if a.get("scope") == "global"]


@pytest.fixture
def namespaces():
    """new(role): a fresh named network namespace with lo up, in which links can be made; every
    one is deleted by its exact name afterwards. Links are only ever made inside these, never in
    the machine's own namespace. Skips without root, iproute2 or the bridge plugin, or where this
    sandbox cannot make namespaces or links."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed")
    if not BRIDGE.is_file():
        pytest.skip(f"{BRIDGE} is missing: install Debian's containernetworking-plugins")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    made = []

    def new(role="netns"):
        name = f"ecs-ipam-test-{role}-{os.urandom(4).hex()}"
        created = ip("netns", "add", name, check=False)
        if created.returncode != 0:
            pytest.skip(f"cannot create a network namespace here: {created.stderr.strip()}")
        made.append(name)
        # bridge makes a bridge and a veth pair: skip where links cannot be made (no CAP_NET_ADMIN).
        probe = ip("-n", name, "link", "add", "probe0", "type", "bridge", check=False)
        if probe.returncode != 0:
            pytest.skip(f"cannot create network links here: {probe.stderr.strip()}")
        ip("-n", name, "link", "del", "probe0", check=False)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    yield new
    for name in made:
        ip("netns", "del", name, check=False)


@pytest.fixture
def cni_path(artifact, tmp_path):
    """A CNI_PATH directory (the ECS agent's ECS_CNI_PLUGINS_PATH): the bridge plugin, and the
    artifact under the name the configs ask for, `ecs-ipam`."""
    directory = tmp_path / "cni-plugins"
    directory.mkdir()
    (directory / "ecs-ipam").symlink_to(Path(artifact).resolve())
    (directory / "bridge").symlink_to(BRIDGE)
    return directory
