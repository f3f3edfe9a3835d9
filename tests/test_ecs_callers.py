"""The ECS agent's real call patterns, replayed with the values it sends (README, "Using it with ECS").

The classic agent (ecs-bridge delegating ADD; the release a direct ecs-ipam DEL with an EMPTY
CNI_CONTAINERID) and the newer network library, netlib (CNI_CONTAINERID=container-id and
CNI_IFNAME=eth0 for every task and the daemon). Where the agent goes through a bridge plugin,
Debian's `bridge` stands in for ecs-bridge, in network namespaces of the test's own; where it
calls the IPAM directly, so do the tests.
"""

import ipaddress
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import BRIDGE, Outcome, addresses_in, ip, spawn

LINK_LOCAL = "169.254.172.0/22"
NETLIB_V6 = "fd00:ec2::172:0/112"
ENI_MAC = "0a:1b:2c:3d:4e:5f"
PAUSE_ID = "4f2ad1c8e0b95c7a3d6e8f1027b4c9d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90a1b"  # 64 hex, a docker id
DEFAULT_STORE = Path("/data/eni-ipam.db")
SUFFIXES = ("", ".journal", ".lock", ".new")


def classic_config(bridge_name):
    """agent/ecscni/netconfig_linux.go: what the classic agent hands ecs-bridge for an awsvpc task."""
    return {"cniVersion": "0.3.0", "name": "ecs-bridge", "type": "bridge", "bridge": bridge_name,
            "isGateway": True,
            "ipam": {"type": "ecs-ipam", "id": ENI_MAC, "ipv4-subnet": LINK_LOCAL,
                     "ipv4-routes": [{"dst": "169.254.170.2/32"}]}}


def netlib_task_ipam(task, v6=False):
    ipam = {"type": "ecs-ipam", "id": f"/var/run/netns/{task}-eth1", "ipv4-subnet": LINK_LOCAL,
            "ipv4-routes": [{"dst": "169.254.170.2/32"}], "connectedSubnetMaskSizeIPv4": 22}
    if v6:
        ipam.update({"ipv6-subnet": NETLIB_V6, "connectedSubnetMaskSizeIPv6": 112})
    return ipam


NETLIB_DAEMON_IPAM = {
    "type": "ecs-ipam", "id": "/var/run/netns/host-daemon",
    "ipv4-address": "169.254.172.2/32", "ipv4-gateway": "169.254.172.1", "ipv4-subnet": LINK_LOCAL,
    "ipv4-routes": [{"dst": "0.0.0.0/0"}],
    "ipv6-address": "fd00:ec2::172:2/128", "ipv6-gateway": "fd00:ec2::172:1", "ipv6-subnet": NETLIB_V6,
    "ipv6-routes": [{"dst": "::/0"}],
    "connectedSubnetMaskSizeIPv4": 22, "connectedSubnetMaskSizeIPv6": 112,
}
NETLIB_ENV = {"CNI_CONTAINERID": "container-id", "CNI_IFNAME": "eth0"}


def netlib_config(ipam, bridge_name="task-br"):
    return {"cniVersion": "0.3.0", "name": "ecs-bridge", "type": "bridge", "bridge": bridge_name,
            "isGateway": True, "ipam": ipam}


def run(program, doc, env, netns=None):
    """Run program (a plugin) as a runtime does: a bare environment, doc on stdin, in netns if given."""
    argv = [program] if netns is None else ["ip", "netns", "exec", netns, program]
    return Outcome(spawn(argv, env, json.dumps(doc).encode(), timeout=120))


def listing(artifact, db_path):
    outcome = Outcome(spawn([artifact, "db", "list", "--json", "--db", db_path]))
    assert outcome.code == 0, outcome
    return outcome.json["allocations"]


@pytest.fixture
def default_store():
    """The classic agent sets no IPAM_DB_PATH: the default /data/eni-ipam.db, when it is ours to use.

    Yields (the environment to add, the store's path); removes exactly what the test made.
    """
    if os.geteuid() != 0 or any(DEFAULT_STORE.with_name(DEFAULT_STORE.name + s).exists() for s in SUFFIXES):
        pytest.skip("the default store /data/eni-ipam.db is not this test's to use (not root, or it exists)")
    made_directory = not DEFAULT_STORE.parent.exists()
    try:
        yield {}, DEFAULT_STORE
    finally:
        for suffix in SUFFIXES:
            DEFAULT_STORE.with_name(DEFAULT_STORE.name + suffix).unlink(missing_ok=True)
        if made_directory:
            DEFAULT_STORE.parent.rmdir()


@pytest.fixture
def namespaces(namespaces):
    """conftest's namespaces, where the machine does not already use the subnets the agent's configs give."""
    used = ip("-o", "addr").stdout
    for subnet in (LINK_LOCAL, NETLIB_V6):
        network = ipaddress.ip_network(subnet)
        for word in used.split():
            try:
                if ipaddress.ip_interface(word).ip in network:
                    pytest.skip(f"this machine already uses {word}, inside {subnet}")
            except ValueError:
                continue
    return namespaces


# -- the classic agent ----------------------------------------------------------------------

def test_classic_agent_task_start_and_release(artifact, cni_path, namespaces, default_store):
    extra_env, store = default_store
    host, task = namespaces(), namespaces()
    conf = classic_config("ecs-br0")
    start_env = {**extra_env, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": PAUSE_ID, "CNI_IFNAME": "ecs-eth0",
                 # The agent sends /host/proc/<pid>/ns/net (its view of the host's /proc); here the
                 # container's namespace is a named one, which is what the bridge plugin opens.
                 "CNI_NETNS": f"/var/run/netns/{task}", "CNI_PATH": str(cni_path), "ECS_CNI_LOGLEVEL": "info"}
    added = run(BRIDGE, conf, start_env, netns=host)
    assert added.code == 0, added
    assert added.json["ips"][0]["address"] == "169.254.172.2/22"
    assert addresses_in(task, "ecs-eth0", 4) == ["169.254.172.2/22"]
    assert "169.254.170.2 via 169.254.172.1 dev ecs-eth0" in ip("-n", task, "-4", "route", "show").stdout
    [held] = listing(artifact, store)
    assert (held["address"], held["id"], held["container"], held["ifname"]) == (
        "169.254.172.2", ENI_MAC, PAUSE_ID, "ecs-eth0")

    # Task stop: ecs-bridge's DEL carries "ipam": {}, so the bridge leaves the IPAM alone...
    stop_env = {**start_env, "CNI_COMMAND": "DEL"}
    stopped = run(BRIDGE, {**conf, "ipam": {}}, stop_env, netns=host)
    assert stopped.code == 0, stopped
    assert [a["address"] for a in listing(artifact, store)] == ["169.254.172.2"]
    # ...and releaseIPInIPAM calls ecs-ipam itself: the id, no address, an EMPTY CNI_CONTAINERID.
    release_env = {**extra_env, "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "", "CNI_IFNAME": "ecs-eth0",
                   "CNI_NETNS": "/host/proc//ns/net", "CNI_PATH": str(cni_path)}
    released = run(cni_path / "ecs-ipam", {k: v for k, v in conf.items() if k not in ("bridge", "isGateway")},
                   release_env)
    assert (released.code, released.stdout) == (0, ""), released
    assert listing(artifact, store) == []
    # The agent's release is fire-and-forget and may come twice: idempotent.
    assert run(cni_path / "ecs-ipam", conf, release_env).code == 0


def test_classic_agent_start_up_probes(artifact):
    """The agent runs `ecs-ipam --capabilities` at start-up and parses it; Go's flags take one dash."""
    for flag in ("--capabilities", "-capabilities"):
        proc = subprocess.run([str(artifact), flag], capture_output=True, text=True, env={}, timeout=60)
        assert proc.returncode == 0, (flag, proc)
        assert "awsvpc-network-mode" in json.loads(proc.stdout)["capabilities"]
    for flag in ("--version", "-version"):
        proc = subprocess.run([str(artifact), flag], capture_output=True, text=True, env={}, timeout=60)
        assert proc.returncode == 0 and isinstance(json.loads(proc.stdout)["version"], str), (flag, proc)
        assert json.loads(proc.stdout)["version"]
    for flag in ("-h", "--help"):
        proc = subprocess.run([str(artifact), flag], capture_output=True, text=True, env={}, timeout=60)
        assert proc.returncode == 0 and "CNI_COMMAND" in proc.stdout + proc.stderr, (flag, proc)


# -- netlib ---------------------------------------------------------------------------------

def test_netlib_tasks_through_the_bridge(artifact, cni_path, namespaces, tmp_path):
    store = tmp_path / "state" / "eni-ipam.db"
    host = namespaces()
    tasks = {"task-a": (namespaces(), False), "task-b": (namespaces(), True)}
    env = {**NETLIB_ENV, "CNI_PATH": str(cni_path), "IPAM_DB_PATH": str(store)}
    for task, (netns, v6) in tasks.items():
        added = run(BRIDGE, netlib_config(netlib_task_ipam(task, v6)),
                    {**env, "CNI_COMMAND": "ADD", "CNI_NETNS": f"/var/run/netns/{netns}"}, netns=host)
        assert added.code == 0, added
        assert "unknown ipam key" not in added.stderr, added  # connectedSubnetMaskSize*: for the bridge
    assert addresses_in(tasks["task-a"][0], "eth0", 4) == ["169.254.172.2/22"]
    assert addresses_in(tasks["task-b"][0], "eth0", 4) == ["169.254.172.3/22"]
    assert addresses_in(tasks["task-b"][0], "eth0", 6) == ["fd00:ec2::172:2/112"]
    held = {a["address"]: a["id"] for a in listing(artifact, store)}
    assert held == {"169.254.172.2": "/var/run/netns/task-a-eth1", "169.254.172.3": "/var/run/netns/task-b-eth1",
                    "fd00:ec2::172:2": "/var/run/netns/task-b-eth1"}
    # Every call carries the same container id and ifname: a DEL naming no id must free nothing.
    stray = run(cni_path / "ecs-ipam", netlib_config({"type": "ecs-ipam", "ipv4-subnet": LINK_LOCAL}),
                {**env, "CNI_COMMAND": "DEL"})
    assert stray.code == 0 and len(listing(artifact, store)) == 3, stray
    # Task stop: DEL resends the same config.
    netns, v6 = tasks["task-a"]
    deleted = run(BRIDGE, netlib_config(netlib_task_ipam("task-a", v6)),
                  {**env, "CNI_COMMAND": "DEL", "CNI_NETNS": f"/var/run/netns/{netns}"}, netns=host)
    assert deleted.code == 0, deleted
    assert sorted(a["address"] for a in listing(artifact, store)) == ["169.254.172.3", "fd00:ec2::172:2"]


def test_netlib_daemon_direct(artifact, tmp_path):
    store = tmp_path / "state" / "eni-ipam.db"
    ecs_ipam = Path(artifact)
    env = {**NETLIB_ENV, "IPAM_DB_PATH": str(store), "CNI_NETNS": "/var/run/netns/host-daemon"}
    added = run(ecs_ipam, netlib_config(NETLIB_DAEMON_IPAM), {**env, "CNI_COMMAND": "ADD"})
    assert added.code == 0, added
    assert added.stderr == "", added  # the connectedSubnetMaskSize keys draw no warning
    assert added.json == {
        "cniVersion": "0.3.0",
        "ips": [{"version": "4", "address": "169.254.172.2/32", "gateway": "169.254.172.1"},
                {"version": "6", "address": "fd00:ec2::172:2/128", "gateway": "fd00:ec2::172:1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.172.1"}, {"dst": "::/0", "gw": "fd00:ec2::172:1"}],
        "dns": {}}
    deleted = run(ecs_ipam, netlib_config(NETLIB_DAEMON_IPAM), {**env, "CNI_COMMAND": "DEL"})
    assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert listing(artifact, store) == []


def test_netlib_burst_of_50_tasks_with_a_daemon_restart(artifact, tmp_path):
    """50 task starts at once, the daemon restarting among them, then 50 stops at once: one store."""
    store = tmp_path / "state" / "eni-ipam.db"
    env = {**NETLIB_ENV, "IPAM_DB_PATH": str(store), "IPAM_DB_CONNECTION_TIMEOUT": "60s"}
    ecs_ipam = Path(artifact)
    daemon = netlib_config(NETLIB_DAEMON_IPAM)
    assert run(ecs_ipam, daemon, {**env, "CNI_COMMAND": "ADD"}).code == 0
    tasks = [f"task-{n:02d}" for n in range(50)]
    results, failures = {}, []

    def call(key, command, doc):
        outcome = run(ecs_ipam, doc, {**env, "CNI_COMMAND": command, "CNI_NETNS": f"/var/run/netns/{key}"})
        if outcome.code != 0:
            failures.append((key, command, outcome))
        results[key] = outcome

    def restart_daemon():
        call("daemon-del", "DEL", daemon)
        call("daemon-add", "ADD", daemon)

    threads = [threading.Thread(target=call, args=(t, "ADD", netlib_config(netlib_task_ipam(t, v6=n % 2 == 0))))
               for n, t in enumerate(tasks)]
    threads.insert(25, threading.Thread(target=restart_daemon))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]
    given = [ip["address"] for t in tasks for ip in results[t].json["ips"]]
    assert len(given) == len(set(given)) == 75
    assert results["daemon-add"].json["ips"][0]["address"] == "169.254.172.2/32"
    held = listing(artifact, store)
    assert len(held) == 77 and len({a["address"] for a in held}) == 77
    assert {a["address"] for a in held if a["id"] == "/var/run/netns/host-daemon"} == {"169.254.172.2",
                                                                                        "fd00:ec2::172:2"}

    threads = [threading.Thread(target=call, args=(t, "DEL", netlib_config(netlib_task_ipam(t, v6=n % 2 == 0))))
               for n, t in enumerate(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[0]
    assert {a["address"] for a in listing(artifact, store)} == {"169.254.172.2", "fd00:ec2::172:2"}
    assert run(ecs_ipam, daemon, {**env, "CNI_COMMAND": "DEL"}).code == 0
    assert listing(artifact, store) == []
