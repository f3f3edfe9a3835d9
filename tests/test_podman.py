"""podman as the runtime: Debian's podman 4.3 with its CNI backend runs containers on networks whose
bridge plugin delegates to the built ecs-ipam, as on a host with ecs-ipam in a CNI plugin directory.

Everything podman makes stays in the test's own places, and is removed by exact name:

- One `unshare` process holds a network namespace and a mount namespace of the test's own, and
  every podman command runs in them (nsenter). Every bridge, veth and container namespace lives
  and dies there: the machine's own interface is in a documentation range, and a bridge with a
  gateway address in the machine's namespace could cut it off. (`ip netns exec` would remount
  /sys and hide the cgroup mount from runc; nsenter does not.) In that mount namespace /run and
  /var/lib are private tmpfs (runc's state, podman's netns files, libcni's cache), and so is /data
  when it exists (the default store path).
- No image: `--rootfs` with busybox-static copied in. podman's storage, state, locks and network
  configs are under the test's directory (a private containers.conf through CONTAINERS_CONF and
  storage.conf through CONTAINERS_STORAGE_CONF); runc with cgroupfs (crun refuses this kind of
  hybrid cgroup layout) under a cgroup parent of the test's own.

What podman does with the environment (measured here): the ADD gets podman's environment, but
the DEL after a container exits (`run --rm`, `restart`, `stop`, a container that ends) comes from
podman's cleanup process, which conmon starts with a bare environment. Only the config reaches
both: hence the config's db-path (test_ipam_db_path_in_podmans_environment_leaks_db_path_does_not).

Needs root, podman, runc, busybox-static, containernetworking-plugins and util-linux.
"""

import ipaddress
import json
import os
import resource
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT

BRIDGE = Path("/usr/lib/cni/bridge")
BUSYBOX = Path("/bin/busybox")
DEFAULT_STORE = "/data/eni-ipam.db"  # where a DEL without db-path and without IPAM_DB_PATH goes
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Subnets of the test's networks (in its own namespace; skipped if the machine uses any of them).
V4, V4_ROUTE = "10.231.4.0/24", "10.231.40.0/24"
V6, V6_ROUTE = "fd00:e5:6::/64", "fd00:e5:60::/64"
DS4, DS6 = "10.231.46.0/24", "fd00:e5:46::/64"
WIDE, NARROW = "10.231.8.0/24", "10.231.8.0/25"  # two networks, one store, overlapping subnets
LEAK = "10.231.12.0/24"
SUBNETS = (V4, V4_ROUTE, V6, V6_ROUTE, DS4, DS6, WIDE, LEAK)


def _missing():
    if os.geteuid() != 0:
        return "podman with its CNI backend, bridges and namespaces need root"
    for tool in ("podman", "runc", "unshare", "nsenter", "ip"):
        if shutil.which(tool, path=PATH) is None:
            return f"{tool} is not installed (apt-get install podman runc util-linux iproute2)"
    if not BRIDGE.is_file():
        return f"{BRIDGE} is missing: install Debian's containernetworking-plugins"
    if not BUSYBOX.is_file():
        return f"{BUSYBOX} is missing: install busybox-static"
    return None


def _collisions():
    """The machine's addresses (`ip -o addr`) in a subnet the tests use, as text; empty when none."""
    shown = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in shown.splitlines():
        words = line.split()
        if len(words) > 3 and words[2] in ("inet", "inet6"):
            network = ipaddress.ip_interface(words[3]).network
            found += [f"{words[3]} on {words[1]} overlaps {subnet}" for subnet in SUBNETS
                      if ipaddress.ip_network(subnet).overlaps(network)]
    return "; ".join(found)


def _links(run=None):
    """The names of the links in the machine's own network namespace (or where run runs `ip`)."""
    command = ("ip", "-o", "link", "show")
    shown = (run(*command) if run else subprocess.run(command, capture_output=True, text=True, check=True)).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in shown.splitlines()}


def _ulimit(kind):
    """A limit within the hard one: podman's default open-files limit is above it here (and runc
    then fails), and runc may not raise the process limit to the hard limit itself."""
    hard = resource.getrlimit(kind)[1]
    return 1024 if hard == resource.RLIM_INFINITY else min(hard, 1024)


class Podman:
    """podman in the test's namespaces, with its state under base."""

    def __init__(self, base, artifact):
        self.base = base
        self.artifact = artifact
        self.tag = secrets.token_hex(3)
        self.cgroup_parent = f"ecs-ipam-test-{self.tag}"
        self.names = []  # every container this test session named, for the final rm -f
        self.bridges = 0
        self.rootfs = base / "rootfs"
        (self.rootfs / "bin").mkdir(parents=True)
        shutil.copy2(BUSYBOX, self.rootfs / "bin" / "busybox")
        (self.rootfs / "bin" / "sh").symlink_to("busybox")
        plugins = base / "cni-bin"
        plugins.mkdir()
        (plugins / "bridge").symlink_to(BRIDGE)
        (plugins / "ecs-ipam").symlink_to(Path(artifact).resolve())
        self.networks = base / "net.d"
        self.networks.mkdir()
        for directory in ("storage", "run", "tmp", "home"):
            (base / directory).mkdir()
        (base / "containers.conf").write_text(
            '[network]\nnetwork_backend = "cni"\n'
            f'cni_plugin_dirs = ["{plugins}"]\nnetwork_config_dir = "{self.networks}"\n'
            f'[engine]\ntmp_dir = "{base / "tmp"}"\nevents_logger = "none"\nlock_type = "file"\n')
        (base / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{base / "storage"}"\nrunroot = "{base / "run"}"\n')
        self.holder = None

    def open_namespaces(self):
        """Start the process that holds the namespaces; make /run, /var/lib (and /data) private there."""
        self.holder = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private",
                                        "sleep", "infinity"], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._in_own_namespaces():
            assert self.holder.poll() is None, "unshare could not make the namespaces"
            assert time.monotonic() < deadline, "unshare did not make its namespaces in time"
            time.sleep(0.01)
        for directory in ("/run", "/var/lib") + ((os.path.dirname(DEFAULT_STORE),)
                                                 if os.path.isdir(os.path.dirname(DEFAULT_STORE)) else ()):
            self.enter("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", directory)

    def _in_own_namespaces(self):
        try:
            return all(os.readlink(f"/proc/{self.holder.pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
                       for kind in ("net", "mnt"))
        except FileNotFoundError:
            return False

    def enter_args(self, *command, env=None):
        # Never run anything meant for the test's namespaces once their holder is gone (its pid
        # could name another process by then).
        assert self.holder.poll() is None and self._in_own_namespaces(), "the namespace holder is gone"
        environ = {"PATH": PATH, "HOME": str(self.base / "home"), "TMPDIR": str(self.base / "tmp"),
                   "CONTAINERS_CONF": str(self.base / "containers.conf"),
                   "CONTAINERS_STORAGE_CONF": str(self.base / "storage.conf"), **(env or {})}
        return (["nsenter", "-t", str(self.holder.pid), "--net", "--mount", "env", "-i"]
                + [f"{key}={value}" for key, value in environ.items()] + list(command))

    def enter(self, *command, env=None, check=True, timeout=120):
        proc = subprocess.run(self.enter_args(*command, env=env), capture_output=True, text=True, timeout=timeout)
        assert not check or proc.returncode == 0, proc
        return proc

    def podman_args(self, *args):
        return ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args]

    def __call__(self, *args, env=None, check=True, timeout=120):
        return self.enter(*self.podman_args(*args), env=env, check=check, timeout=timeout)

    def start(self, *args, env=None):
        """podman *args without waiting: a Popen (text, output captured)."""
        return subprocess.Popen(self.enter_args(*self.podman_args(*args), env=env), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def name(self, what):
        name = f"ecs-ipam-{self.tag}-{what}"
        self.names.append(name)
        return name

    def run_args(self, networks, *command, name=None, detach=False):
        """`podman run` of command in the busybox rootfs on networks (a list of network names)."""
        nofile, nproc = _ulimit(resource.RLIMIT_NOFILE), _ulimit(resource.RLIMIT_NPROC)
        return ["run", *(["-d"] if detach else ["--rm"]), *(["--name", name] if name else []),
                "--network", ",".join(networks), "--cgroup-parent", f"/{self.cgroup_parent}",
                "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}",
                "--rootfs", str(self.rootfs), *command]

    def network(self, name, ipam):
        """Write the conflist of an ecs-ipam network, on a bridge of its own (a bridge takes one
        IPv4 gateway address); return its path."""
        self.bridges += 1
        path = self.networks / f"{name}.conflist"
        path.write_text(json.dumps(conflist(name, f"ecsipambr{self.bridges}", ipam), indent=2))
        return path

    def listing(self, store):
        """`ecs-ipam db list --json --db store`: {"allocations": [...], "cursors": {...}}."""
        proc = subprocess.run([str(self.artifact), "db", "list", "--json", "--db", str(store)],
                              capture_output=True, text=True, env={"PATH": PATH}, timeout=30)
        assert proc.returncode == 0, proc
        return json.loads(proc.stdout)

    def gone(self, name):
        """The container is removed (so its network was torn down: podman does that first)."""
        return self("container", "exists", name, check=False).returncode == 1

    def close(self):
        """Remove every container by name, end the namespaces, remove the cgroups made under the parent."""
        if self.holder is None:
            return
        if self.holder.poll() is None and self.names:
            self("rm", "-f", "-t", "0", "--ignore", *self.names, check=False)
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait()
        root = Path("/sys/fs/cgroup")
        for parent in [*root.glob(f"*/{self.cgroup_parent}"), root / self.cgroup_parent]:
            for directory, _, _ in os.walk(parent, topdown=False):  # the cgroups podman made, innermost first
                try:
                    os.rmdir(directory)
                except OSError:
                    pass


def conflist(name, bridge, ipam):
    """A complete podman (CNI) network config: the bridge plugin, delegating IPAM to ecs-ipam."""
    return {"cniVersion": "1.0.0", "name": name,
            "plugins": [{"type": "bridge", "bridge": bridge, "isGateway": True,
                         "ipam": {"type": "ecs-ipam", **ipam}}]}


def readme_network():
    """The conflist in the README's "Using it with a container runtime"."""
    section = (ROOT / "README.md").read_text().split("\n## Using it with a container runtime\n", 1)[1]
    return json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])


# The README's network, which the dual-stack tests run (with db-path and the bridge their own).
README_IPAM = {key: value for key, value in readme_network()["plugins"][0]["ipam"].items()
               if key not in ("type", "db-path")}


def test_the_readme_network_is_the_one_the_tests_run():
    doc = readme_network()
    assert doc == conflist("ecsnet", "ecsbr0", {"db-path": "/var/lib/ecs-ipam/ecsnet.db", **README_IPAM})
    assert README_IPAM == {"ipv4-subnet": DS4, "ipv4-routes": [{"dst": V4_ROUTE}],
                           "ipv6-subnet": DS6, "ipv6-routes": [{"dst": V6_ROUTE}]}


@pytest.fixture(scope="module")
def podman(artifact, tmp_path_factory):
    missing = _missing()
    if missing:
        pytest.skip(missing)
    collisions = _collisions()
    if collisions:
        pytest.skip(f"this machine uses a subnet of the podman tests: {collisions}")
    runtime = Podman(tmp_path_factory.mktemp("podman"), artifact)
    # The default store's directory, then its files: should a DEL make any of them on the
    # machine (where /data did not exist, so it could not be hidden), they are removed by name.
    default_paths = [os.path.dirname(DEFAULT_STORE)] + [DEFAULT_STORE + suffix for suffix in ("", ".lock", ".journal")]
    new_default_paths = [path for path in default_paths if not os.path.lexists(path)]
    try:
        runtime.open_namespaces()
        probe = runtime("info", "--format", "{{.Host.NetworkBackend}}", check=False)
        if probe.returncode != 0 or probe.stdout.strip() != "cni":
            pytest.skip(f"podman cannot run with the CNI backend here: {probe.stdout.strip()} {probe.stderr.strip()}")
        yield runtime
        in_namespace = _links(runtime.enter)
    finally:
        runtime.close()
        made = [path for path in new_default_paths if os.path.lexists(path)]
        for path in reversed(made):
            (os.rmdir if os.path.isdir(path) else os.unlink)(path)
    assert made == [], f"a call made {made} on the machine"
    # Every bridge of these tests was made in their namespace, none in the machine's.
    ours = {f"ecsipambr{number}" for number in range(1, runtime.bridges + 1)}
    assert ours <= in_namespace, (ours, in_namespace)
    assert not ours & _links(), "a bridge of these tests is in the machine's own network namespace"


@pytest.fixture
def store(tmp_path):
    return tmp_path / "ipam.db"


@pytest.fixture
def networks(podman):
    """network(name, ipam) writes an ecs-ipam network for this test; the files go at its end."""
    made = []

    def network(name, ipam):
        made.append(podman.network(f"ecsipam-{name}", ipam))
        return f"ecsipam-{name}"

    yield network
    for path in made:
        path.unlink()


def inside(output):
    """{"addresses": [ip/prefix, ...] of eth0's global addresses, "routes": [route lines]} from
    `ip -o addr show dev eth0` and `ip route` / `ip -6 route` run in the container."""
    addresses, routes = [], []
    for line in output.splitlines():
        words = line.split()
        if len(words) > 3 and words[2] in ("inet", "inet6") and "global" in words:
            addresses.append(words[3])
        elif " via " in line or " dev " in line:
            routes.append(" ".join(words))
    return {"addresses": addresses, "routes": routes}


SHOW = ["/bin/busybox", "sh", "-c", "busybox ip -o addr show dev eth0; busybox ip route; busybox ip -6 route"]


def held(podman, store):
    """{address: (container, ifname, subnet)} of store."""
    return {a["address"]: (a["container"], a["ifname"], a["subnet"]) for a in podman.listing(store)["allocations"]}


def assert_in_subnets(addresses, subnets):
    """Each ip/prefix is a host address of one of subnets, with that subnet's prefix."""
    for text in addresses:
        interface = ipaddress.ip_interface(text)
        [subnet] = [s for s in map(ipaddress.ip_network, subnets) if s.version == interface.version]
        assert interface.network == subnet and interface.ip not in (subnet.network_address, subnet[1]), text


@pytest.mark.parametrize("ipam, routes", [
    ({"ipv4-subnet": V4, "ipv4-routes": [{"dst": V4_ROUTE}]},
     [f"{V4_ROUTE} via {ipaddress.ip_network(V4)[1]} dev eth0"]),
    ({"ipv6-subnet": V6, "ipv6-routes": [{"dst": V6_ROUTE}]},
     [f"{V6_ROUTE} via {ipaddress.ip_network(V6)[1]} dev eth0"]),
    (README_IPAM,
     [f"{V4_ROUTE} via {ipaddress.ip_network(DS4)[1]} dev eth0",
      f"{V6_ROUTE} via {ipaddress.ip_network(DS6)[1]} dev eth0"]),
], ids=["ipv4", "ipv6", "dual-stack-readme"])
def test_run_rm_adds_then_deletes(podman, networks, store, ipam, routes):
    net = networks("rm", {**ipam, "db-path": str(store)})
    subnets = [ipam[key] for key in ("ipv4-subnet", "ipv6-subnet") if key in ipam]
    seen = []
    for attempt in range(2):
        name = podman.name(f"rm-{attempt}")
        shown = inside(podman(*podman.run_args([net], *SHOW, name=name)).stdout)
        assert len(shown["addresses"]) == len(subnets), shown
        assert_in_subnets(shown["addresses"], subnets)
        for route in routes:
            assert any(line.startswith(route) for line in shown["routes"]), (route, shown)
        assert podman.gone(name)
        assert held(podman, store) == {}  # released when the container went
        seen += shown["addresses"]
    assert len(set(seen)) == len(seen), seen  # round-robin: the second run got the next address


def test_run_detached_restart_and_rm(podman, networks, store):
    net = networks("restart", {"ipv4-subnet": DS4, "ipv6-subnet": DS6, "db-path": str(store)})
    name = podman.name("restart")
    container = podman(*podman.run_args([net], "/bin/busybox", "sleep", "600", name=name, detach=True)).stdout.strip()

    def addresses():
        shown = inside(podman("exec", name, *SHOW).stdout)["addresses"]
        assert_in_subnets(shown, [DS4, DS6])
        assert held(podman, store) == {text.split("/")[0]: (container, "eth0", subnet)
                                       for text, subnet in zip(shown, [DS4, DS6])}
        return shown

    first = addresses()
    podman("restart", "-t", "0", name)
    second = addresses()
    assert not set(first) & set(second), (first, second)  # released, then the next ones allocated
    podman("rm", "-f", "-t", "0", name)
    assert held(podman, store) == {}


def test_twenty_containers_started_at_once_then_removed_at_once(podman, networks, store):
    net = networks("twenty", {"ipv4-subnet": DS4, "ipv6-subnet": DS6, "db-path": str(store)})
    names = [podman.name(f"many-{i}") for i in range(20)]
    starts = [podman.start(*podman.run_args([net], "/bin/busybox", "sleep", "600", name=name, detach=True))
              for name in names]
    ids = {}
    for name, proc in zip(names, starts):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, stdout, stderr)
        ids[stdout.strip()] = name
    allocations = held(podman, store)
    assert len(allocations) == 40  # one address per family per container, all distinct
    assert {container for container, _, _ in allocations.values()} == set(ids)
    for container, name in ids.items():
        shown = inside(podman("exec", name, *SHOW).stdout)["addresses"]
        assert_in_subnets(shown, [DS4, DS6])
        assert sorted(a for a, (c, _, _) in allocations.items() if c == container) == \
            sorted(text.split("/")[0] for text in shown)
    removals = [podman.start("rm", "-f", "-t", "0", name) for name in names]
    for proc in removals:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, (stdout, stderr)
    assert held(podman, store) == {}


def test_one_container_on_two_networks_sharing_a_store(podman, networks, store):
    """Overlapping subnets in one store: each network gets its own address and releases only its own."""
    wide = networks("wide", {"ipv4-subnet": WIDE, "db-path": str(store)})
    narrow = networks("narrow", {"ipv4-subnet": NARROW, "db-path": str(store)})
    name = podman.name("two-nets")
    container = podman(*podman.run_args([wide, narrow], "/bin/busybox", "sleep", "600", name=name,
                                        detach=True)).stdout.strip()
    shown = {ifname: inside(podman("exec", name, "/bin/busybox", "ip", "-o", "addr", "show", "dev", ifname)
                            .stdout)["addresses"] for ifname in ("eth0", "eth1")}
    allocations = held(podman, store)
    assert len(allocations) == 2
    by_interface = {ifname: (address, subnet) for address, (c, ifname, subnet) in allocations.items()
                    if c == container}
    assert set(by_interface) == {"eth0", "eth1"}
    assert {subnet for _, subnet in by_interface.values()} == {WIDE, NARROW}
    for ifname, (address, subnet) in by_interface.items():
        assert shown[ifname] == [f"{address}/{subnet.split('/')[1]}"], (ifname, shown, allocations)
        assert ipaddress.ip_address(address) in ipaddress.ip_network(NARROW)  # both in the overlap
    # A second container on the wide network only: it gets an address neither holder has.
    other = inside(podman(*podman.run_args([wide], *SHOW)).stdout)["addresses"]
    assert other[0].split("/")[0] not in allocations
    assert held(podman, store) == allocations
    podman("rm", "-f", "-t", "0", name)
    assert held(podman, store) == {}


def test_ipam_db_path_in_podmans_environment_leaks_db_path_does_not(podman, networks, tmp_path):
    """The ADD gets podman's environment; the cleanup DEL after the container exits does not.

    With db-path in the config, the ADD and the DEL go to the same store and the address is
    released. With only IPAM_DB_PATH (in podman's environment), the ADD goes to that store and the
    DEL to the default path: the address leaks (and the DEL, finding no store there, makes nothing).
    """
    keyed_store = tmp_path / "keyed" / "ipam.db"
    keyed = networks("keyed", {"ipv4-subnet": LEAK, "db-path": str(keyed_store)})
    for attempt in range(3):
        name = podman.name(f"keyed-{attempt}")
        shown = inside(podman(*podman.run_args([keyed], *SHOW, name=name), env={"IPAM_DB_PATH": keyed_store}).stdout)
        assert_in_subnets(shown["addresses"], [LEAK])
        assert podman.gone(name)
        assert held(podman, keyed_store) == {}
    # All three ADDs went to this store (its cursor moved on by three), and each DEL found them.
    assert podman.listing(keyed_store)["cursors"] == {LEAK: str(ipaddress.ip_network(LEAK)[4])}

    env_store = tmp_path / "env" / "ipam.db"
    env_only = networks("envonly", {"ipv4-subnet": LEAK})
    name = podman.name("envonly")
    shown = inside(podman(*podman.run_args([env_only], *SHOW, name=name), env={"IPAM_DB_PATH": env_store}).stdout)
    [leaked] = shown["addresses"]
    assert podman.gone(name)
    assert list(held(podman, env_store)) == [leaked.split("/")[0]]  # the container is gone; its address is not
    default_store = podman.enter("ls", "-a", os.path.dirname(DEFAULT_STORE), check=False)
    assert not any(name.startswith(os.path.basename(DEFAULT_STORE)) for name in default_store.stdout.split()), \
        default_store
