"""Debian's CNI bridge plugin delegating IPAM to ecs-ipam, in real network namespaces.

This is how the ECS agent uses the plugin: the bridge plugin finds `ecs-ipam` on CNI_PATH,
passes it the whole config and its own environment, and configures what it returns.
The bridge plugin itself runs in a network namespace of the test's own (the "host" side:
the bridge and the host ends of the veths live and die there), never in the machine's own.
Needs root, iproute2 (`ip`) and containernetworking-plugins (/usr/lib/cni/bridge).
"""

import ipaddress
import json
import secrets

import pytest

from conftest import BRIDGE, Outcome, addresses_in, ip, spawn
from ecs_ipam.disk import open_store

V4 = "169.254.172.0/22"
V6 = "fd00:ec2:1::/64"


@pytest.fixture
def netns(namespaces):
    """The container's network namespace."""
    return namespaces("container")


@pytest.fixture
def host_netns(namespaces):
    """Where the bridge plugin runs: its bridge and the host ends of the veths are made here."""
    return namespaces("host")


@pytest.fixture
def bridge_name():
    return f"ecsbr{secrets.token_hex(4)}"  # 13 characters: under IFNAMSIZ, unique per test


class Bridge:
    """Runs Debian's bridge plugin as a runtime would, for one container in one netns."""

    def __init__(self, cni_path, host_netns, netns, db_path, bridge_name):
        self.cni_path, self.host_netns, self.netns = cni_path, host_netns, netns
        self.db_path, self.bridge_name = db_path, bridge_name

    def config(self, holder_id, v6=False):
        ipam = {"type": "ecs-ipam", "id": holder_id, "ipv4-subnet": V4,
                "ipv4-routes": [{"dst": "169.254.170.2/32"}]}
        if v6:
            ipam.update({"ipv6-subnet": V6, "ipv6-routes": [{"dst": "fd00:ec2::254/128"}]})
        return {"cniVersion": "1.0.0", "name": "ecsnet", "type": "bridge", "bridge": self.bridge_name,
                "ipam": ipam}

    def run(self, command, doc, container="container-1", ifname="eth0"):
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container, "CNI_NETNS": f"/var/run/netns/{self.netns}",
               "CNI_IFNAME": ifname, "CNI_PATH": str(self.cni_path), "IPAM_DB_PATH": str(self.db_path)}
        proc = spawn(["ip", "netns", "exec", self.host_netns, BRIDGE], env, json.dumps(doc).encode())
        # The bridge is on the host side of the test's own namespaces, never in the machine's.
        assert ip("link", "show", "dev", self.bridge_name, check=False).returncode != 0
        return Outcome(proc)

    def addresses(self, family):
        return addresses_in(self.netns, "eth0", family)

    def routes(self, family):
        return ip("-n", self.netns, f"-{family}", "route", "show").stdout


@pytest.fixture
def bridge(cni_path, host_netns, netns, tmp_path, bridge_name):
    return Bridge(cni_path, host_netns, netns, tmp_path / "db" / "ipam.db", bridge_name)


def held_by(db_path, holder_id):
    with open_store(str(db_path), 5, writable=False) as store:
        assert store.problems() == []
        return sorted(str(a.address) for a in store.held_by_id(holder_id))


def test_bridge_add_configures_the_address_ecs_ipam_allocated(bridge):
    doc = bridge.config("task-1")
    added = bridge.run("ADD", doc)
    assert added.code == 0, added

    (entry,) = added.json["ips"]
    assert entry["address"] == "169.254.172.2/22" and entry["gateway"] == "169.254.172.1"
    assert ip("-n", bridge.host_netns, "link", "show", "dev", bridge.bridge_name, check=False).returncode == 0
    assert bridge.addresses(4) == ["169.254.172.2/22"]
    # A route without gw goes via the gateway (bridge fills it in).
    assert "169.254.170.2 via 169.254.172.1 dev eth0" in bridge.routes(4)
    assert held_by(bridge.db_path, "task-1") == ["169.254.172.2"]

    deleted = bridge.run("DEL", doc)
    assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert held_by(bridge.db_path, "task-1") == []
    assert bridge.addresses(4) == []

    # Released: the same id can ADD again (the cursor moves on, so it gets the next address).
    again = bridge.run("ADD", doc)
    assert again.code == 0, again
    assert bridge.addresses(4) == ["169.254.172.3/22"]
    assert held_by(bridge.db_path, "task-1") == ["169.254.172.3"]

    # DEL is idempotent all the way down: twice is fine.
    for _ in range(2):
        deleted = bridge.run("DEL", doc)
        assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert held_by(bridge.db_path, "task-1") == []


def test_bridge_add_fails_cleanly_when_ecs_ipam_refuses(bridge):
    """An IPAM error reaches the runtime through bridge, and the first container keeps its address."""
    doc = bridge.config("task-dup")
    assert bridge.run("ADD", doc).code == 0
    duplicate = bridge.run("ADD", doc, container="container-2", ifname="eth1")
    assert duplicate.code != 0, duplicate
    assert "task-dup" in duplicate.json["msg"] and "169.254.172.2" in duplicate.json["msg"], duplicate
    assert held_by(bridge.db_path, "task-dup") == ["169.254.172.2"]  # the first one's address is kept
    assert bridge.addresses(4) == ["169.254.172.2/22"]


def ipv6_usable(netns):
    probe = ip("-n", netns, "-6", "addr", "add", "fd00:ec2:9::1/64", "dev", "lo", check=False)
    if probe.returncode == 0:
        ip("-n", netns, "-6", "addr", "del", "fd00:ec2:9::1/64", "dev", "lo", check=False)
    return probe.returncode == 0


def test_bridge_dual_stack(bridge):
    if not ipv6_usable(bridge.netns):
        pytest.skip("IPv6 is disabled in this sandbox")
    doc = bridge.config("task-ds", v6=True)
    added = bridge.run("ADD", doc)
    assert added.code == 0, added

    ips = added.json["ips"]
    assert [(e["address"], e["gateway"]) for e in ips] == [("169.254.172.2/22", "169.254.172.1"),
                                                          ("fd00:ec2:1::2/64", "fd00:ec2:1::1")]
    # What ADD printed is what bridge put on the container's eth0, family by family...
    assert bridge.addresses(4) == [ips[0]["address"]]
    assert bridge.addresses(6) == [ips[1]["address"]]
    assert "fd00:ec2::254 via fd00:ec2:1::1 dev eth0" in bridge.routes(6)
    # ...and what the store holds for the id: the same addresses, from the configured subnets,
    # recorded with the runtime's container and ifname.
    with open_store(str(bridge.db_path), 5, writable=False) as store:
        assert store.problems() == []
        held = [(str(a.address), str(a.subnet), a.container, a.ifname) for a in store.held_by_id("task-ds")]
    assert sorted(held) == sorted((str(ipaddress.ip_interface(e["address"]).ip), subnet, "container-1", "eth0")
                                  for e, subnet in zip(ips, (V4, V6)))

    for _ in range(2):
        deleted = bridge.run("DEL", doc)
        assert (deleted.code, deleted.stdout) == (0, ""), deleted
    assert held_by(bridge.db_path, "task-ds") == []
    assert bridge.addresses(4) == [] and bridge.addresses(6) == []
