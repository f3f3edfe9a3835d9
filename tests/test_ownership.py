"""ecs_ipam.ownership: who holds an allocation, and what DEL, GC and CHECK may touch (pure)."""

import ipaddress

import pytest

from ecs_ipam import ownership
from ecs_ipam.config import Family
from ecs_ipam.errors import CNIError
from ecs_ipam.ownership import Caller
from ecs_ipam.store import Allocation

A = ipaddress.ip_network("10.0.0.0/24")
B = ipaddress.ip_network("10.0.0.128/25")  # overlaps A
V6 = ipaddress.ip_network("2001:db8::/64")


def held(address, holder_id=None, container=None, ifname=None, subnet=A):
    return Allocation(ipaddress.ip_address(address), holder_id, container, ifname, subnet, 0)


def family(subnet, address=None):
    version = subnet.version
    static = None if address is None else ipaddress.ip_interface(address)
    return Family(version, subnet, subnet.network_address + 1, static, ())


# -- holds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("caller, allocation, expected", [
    # A caller with an id: the recorded id decides...
    (Caller("a", None, None), held("10.0.0.2", "a"), True),
    (Caller("a", None, None), held("10.0.0.2", "b"), False),
    (Caller("a", None, None), held("10.0.0.2", None), False),  # held under no id: not a's
    (Caller("a", None, None), held("10.0.0.2", "a", "c1", "eth0"), True),  # classic DEL: empty container
    (Caller("a", "c1", "eth0"), held("10.0.0.2", "a", None, None), True),  # imported from the Go plugin
    (Caller("a", "c1", "eth0"), held("10.0.0.2", "a", "c1", "eth0"), True),
    (Caller("a", "c1", None), held("10.0.0.2", "a", "c1", "eth0"), True),
    # ...and a container both sides name must agree (the failed ADD of a second container with the same id).
    (Caller("a", "c2", "eth0"), held("10.0.0.2", "a", "c1", "eth0"), False),
    (Caller("a", "c1", "eth1"), held("10.0.0.2", "a", "c1", "eth0"), False),
    # Without an id: the recorded container and ifname, and never an allocation under an id.
    (Caller(None, "c1", "eth0"), held("10.0.0.2", None, "c1", "eth0"), True),
    (Caller(None, "c1", "eth0"), held("10.0.0.2", None, "c1", None), True),
    (Caller(None, "c1", None), held("10.0.0.2", None, "c1", "eth1"), True),
    (Caller(None, "c1", "eth0"), held("10.0.0.2", None, "c1", "eth1"), False),
    (Caller(None, "c1", "eth0"), held("10.0.0.2", None, "c2", "eth0"), False),
    (Caller(None, "c1", "eth0"), held("10.0.0.2", None, None, None), False),
    (Caller(None, "container-id", "eth0"), held("10.0.0.2", "task", "container-id", "eth0"), False),
    # Anonymous: holds only what was allocated anonymously.
    (Caller(None, None, None), held("10.0.0.2"), True),
    (Caller(None, None, "eth0"), held("10.0.0.2", None, None, "eth1"), True),
    (Caller(None, None, None), held("10.0.0.2", None, "c1", "eth0"), False),
    (Caller(None, None, None), held("10.0.0.2", "a"), False),
])
def test_holds(caller, allocation, expected):
    assert ownership.holds(caller, allocation) is expected


@pytest.mark.parametrize("caller, subnets, addresses, expected", [
    (Caller("a", None, None), (), (), True),
    (Caller(None, None, None), (), (ipaddress.ip_address("10.0.0.2"),), True),
    (Caller(None, "c1", None), (A,), (), True),
    (Caller(None, "c1", None), (), (), False),  # a container, but no subnet to release from
    (Caller(None, None, "eth0"), (A,), (), False),
])
def test_identifies(caller, subnets, addresses, expected):
    assert ownership.identifies(caller, subnets, addresses) is expected


# -- DEL ------------------------------------------------------------------------------------

def released(caller, subnets, addresses, candidates):
    plan = ownership.release_by_del(caller, subnets, [ipaddress.ip_address(a) for a in addresses], candidates)
    return sorted(str(a.address) for a in plan.allocations), sorted(str(a.address) for a in plan.spared)


def test_del_by_id_releases_what_the_id_holds_from_any_subnet_and_family():
    candidates = [held("10.0.0.2", "a"), held("10.0.0.130", "a", subnet=B), held("2001:db8::2", "a", subnet=V6),
                  held("10.0.0.3", "b")]
    assert released(Caller("a", None, None), (A,), (), candidates) == (
        ["10.0.0.130", "10.0.0.2", "2001:db8::2"], [])


def test_del_by_id_and_address_ignores_an_address_someone_else_holds():
    candidates = [held("10.0.0.10", "new"), held("2001:db8::2", "old", subnet=V6)]
    assert released(Caller("old", None, None), (A, V6), ["10.0.0.10"], candidates) == (["2001:db8::2"], [])


def test_del_by_container_releases_only_from_the_configs_subnets():
    candidates = [held("10.0.0.2", None, "c1", None, A), held("10.0.0.130", None, "c1", "eth1", B),
                  held("2001:db8::2", None, "c1", "eth1", V6)]
    assert released(Caller(None, "c1", "eth1"), (B, V6), (), candidates) == (["10.0.0.130", "2001:db8::2"], [])


def test_del_by_container_releases_a_named_address_from_an_edited_subnet():
    candidates = [held("10.0.0.10", None, "c1", "eth0", ipaddress.ip_network("10.0.0.0/16"))]
    assert released(Caller(None, "c1", "eth0"), (A,), ["10.0.0.10"], candidates) == (["10.0.0.10"], [])
    assert released(Caller(None, "c1", "eth0"), (A,), (), candidates) == ([], [])


def test_del_without_id_spares_and_reports_what_the_container_holds_under_ids():
    netlib = Caller(None, "container-id", "eth0")
    candidates = [held(f"10.0.0.{n}", f"task{n}", "container-id", "eth0") for n in (2, 3, 4)]
    assert released(netlib, (A,), (), candidates) == ([], ["10.0.0.2", "10.0.0.3", "10.0.0.4"])


def test_anonymous_del_releases_only_the_named_anonymous_addresses():
    candidates = [held("10.0.0.2"), held("10.0.0.3"), held("10.0.0.4", None, "c1", "eth0"), held("10.0.0.5", "a")]
    assert released(Caller(None, None, "eth0"), (A,), ["10.0.0.2", "10.0.0.4", "10.0.0.5"], candidates) == (
        ["10.0.0.2"], [])


def test_del_counts_a_candidate_found_twice_once():
    twice = held("10.0.0.2", None, "c1", "eth0")
    assert ownership.release_by_del(Caller(None, "c1", "eth0"), (A,), [twice.address], [twice, twice]) \
        .allocations == [twice]


# -- GC -------------------------------------------------------------------------------------

def test_gc_releases_unlisted_containers_from_its_own_subnets_only():
    candidates = [held("10.0.0.2", None, "c1", "eth0"), held("10.0.0.3", None, "c2", "eth0"),
                  held("10.0.0.130", None, "c3", "eth0", B), held("10.0.0.4"), held("10.0.0.5", "a", "c4", "eth0"),
                  held("10.0.0.6", None, "c1", "eth1")]
    live = {"c1": {"eth0"}}
    assert sorted(str(a.address) for a in ownership.release_by_gc((A,), live, candidates)) == [
        "10.0.0.3", "10.0.0.5", "10.0.0.6"]
    assert ownership.release_by_gc((A,), {"c1": {None}, "c2": {"eth0"}, "c4": {"eth0"}}, candidates) == []


# -- CHECK and a repeated ADD ---------------------------------------------------------------

def test_held_in_is_per_subnet():
    candidates = [held("10.0.0.2", None, "c1", "eth0", A), held("10.0.0.130", None, "c1", "eth0", B)]
    assert ownership.held_in(Caller(None, "c1", "eth0"), family(B), candidates) == [candidates[1]]
    assert ownership.held_in(Caller(None, "c2", "eth0"), family(B), candidates) == []


def test_interface_of_is_the_static_prefix_else_the_subnets():
    assert str(ownership.interface_of(held("10.0.0.7"), family(A, "10.0.0.7/32"))) == "10.0.0.7/32"
    assert str(ownership.interface_of(held("10.0.0.8"), family(A, "10.0.0.7/32"))) == "10.0.0.8/24"
    assert str(ownership.interface_of(held("10.0.0.8"), family(A))) == "10.0.0.8/24"


def verdict(caller, families, expected, candidates):
    try:
        ownership.check(caller, families, None if expected is None else [ipaddress.ip_interface(i) for i in expected],
                        candidates)
        return None
    except CNIError as err:
        assert err.code == 103
        return err.msg + " " + err.details


def test_check_passes_for_what_the_caller_holds_from_each_subnet():
    candidates = [held("10.0.0.2", "t"), held("2001:db8::2", "t", subnet=V6)]
    assert verdict(Caller("t", None, None), [family(A), family(V6)], None, candidates) is None
    assert verdict(Caller("t", None, None), [family(A), family(V6)], ["10.0.0.2/24", "2001:db8::2/64"],
                   candidates) is None


@pytest.mark.parametrize("caller, families, expected, fragment", [
    (Caller("t", None, None), [family(ipaddress.ip_network("10.9.0.0/24"))], None, "from 10.9.0.0/24"),
    (Caller("t", None, None), [family(A)], ["10.0.0.2/16"], "10.0.0.2/16"),
    (Caller("t", None, None), [family(A)], ["10.0.0.2/24", "10.0.0.3/24"], "10.0.0.3/24"),
    (Caller("t", None, None), [family(A, "10.0.0.9/24")], None, "configured 10.0.0.9/24"),
    (Caller("u", None, None), [family(A)], None, "id 'u' holds no IPv4"),
    (Caller(None, "c1", "eth0"), [family(A)], None, "container 'c1' holds no IPv4"),  # t's, not c1's
])
def test_check_fails_naming_what_differs(caller, families, expected, fragment):
    candidates = [held("10.0.0.2", "t", "c1", "eth0")]
    message = verdict(caller, families, expected, candidates)
    assert message is not None and fragment in message, message
