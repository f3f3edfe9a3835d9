"""Unit tests of address choice over an in-memory store."""

import ipaddress

import pytest

from ecs_ipam import allocator, config
from ecs_ipam.errors import CNIError
from ecs_ipam.store import MemoryTables, Store


def family(**fields):
    doc = {"ipam": {key.replace("_", "-"): value for key, value in fields.items()}}
    return config.parse_ipam(doc).families[0]


def take(store, fam, holder=None):
    return str(allocator.allocate(store, fam, holder, None, None, 0).address)


def test_round_robin_order_as_upstream():
    store = Store(MemoryTables())
    auto = family(ipv4_subnet="10.0.0.0/24")
    assert [take(store, auto), take(store, auto)] == ["10.0.0.2/24", "10.0.0.3/24"]
    assert take(store, family(ipv4_subnet="10.0.0.0/24", ipv4_address="10.0.0.10/24")) == "10.0.0.10/24"
    assert take(store, auto) == "10.0.0.11/24"
    store.release(ipaddress.ip_address("10.0.0.3"))
    assert take(store, auto) == "10.0.0.4/24"


def test_just_released_address_is_reused_last():
    store = Store(MemoryTables())
    small = family(ipv4_subnet="10.0.0.0/29")  # hosts .1-.6, gateway .1
    held = [take(store, small) for _ in range(5)]
    assert held == [f"10.0.0.{n}/29" for n in range(2, 7)]
    store.release(ipaddress.ip_address("10.0.0.4"))
    assert take(store, small) == "10.0.0.4/29"  # the only free one
    with pytest.raises(CNIError) as caught:
        take(store, small)
    assert caught.value.code == 101 and "10.0.0.0/29" in caught.value.msg and "5" in caught.value.details


def test_wraps_around_and_skips_gateway_network_and_broadcast():
    store = Store(MemoryTables())
    fam = family(ipv4_subnet="10.0.0.0/30", ipv4_gateway="10.0.0.2")
    assert take(store, fam) == "10.0.0.1/30"
    with pytest.raises(CNIError):
        take(store, fam)


def test_ipv6_last_address_is_allocatable_and_wraps():
    store = Store(MemoryTables())
    fam = family(ipv6_subnet="2001:db8::/126")
    store.set_cursor(fam.subnet, ipaddress.ip_address("2001:db8::2"))
    assert take(store, fam) == "2001:db8::3/126"
    assert take(store, fam) == "2001:db8::2/126"


def test_slash_64_and_slash_0_never_enumerate():
    calls = []

    def is_held(address):
        calls.append(address)
        return len(calls) < 4

    subnet = ipaddress.ip_network("::/0")
    found = allocator.next_free(subnet, subnet.network_address + 1, None, is_held)
    assert found == ipaddress.ip_address("::5") and len(calls) == 4
    top = ipaddress.ip_address("2001:db8::ffff:ffff:ffff:ffff")
    wide = ipaddress.ip_network("2001:db8::/64")
    assert allocator.next_free(wide, wide.network_address + 1, top, lambda a: False) == ipaddress.ip_address(
        "2001:db8::2")


def test_cursor_is_per_subnet():
    store = Store(MemoryTables())
    a, b = family(ipv4_subnet="10.0.0.0/24"), family(ipv4_subnet="10.1.0.0/24")
    assert [take(store, a), take(store, b), take(store, a)] == ["10.0.0.2/24", "10.1.0.2/24", "10.0.0.3/24"]


def test_overlapping_subnets_share_addresses():
    store = Store(MemoryTables())
    assert take(store, family(ipv4_subnet="10.0.0.0/24")) == "10.0.0.2/24"
    assert take(store, family(ipv4_subnet="10.0.0.0/16")) == "10.0.0.3/16"


def test_static_errors_name_address_and_holder():
    store = Store(MemoryTables())
    static = family(ipv4_subnet="10.0.0.0/24", ipv4_address="10.0.0.5/24")
    take(store, static, "task-a")
    with pytest.raises(CNIError) as caught:
        take(store, static, "task-b")
    assert caught.value.code == 100 and "10.0.0.5" in caught.value.msg and "task-a" in caught.value.msg
    with pytest.raises(CNIError) as caught:
        take(store, family(ipv4_subnet="10.0.0.0/24", ipv4_address="10.0.0.1/24"))
    assert caught.value.code == 100 and "gateway" in caught.value.msg


def test_one_address_per_id_per_family():
    store = Store(MemoryTables())
    take(store, family(ipv4_subnet="10.0.0.0/24"), "task")
    take(store, family(ipv6_subnet="2001:db8::/64"), "task")
    with pytest.raises(CNIError) as caught:
        take(store, family(ipv4_subnet="10.9.0.0/24"), "task")
    assert caught.value.code == 102 and "'task'" in caught.value.msg and "10.0.0.2" in caught.value.msg
    assert take(store, family(ipv4_subnet="10.9.0.0/24")) == "10.9.0.2/24"  # no id: no limit
