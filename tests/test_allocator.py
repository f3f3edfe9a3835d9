"""Unit tests of address choice over an in-memory store."""

import ipaddress

import pytest

from ecs_ipam import allocator, config
from ecs_ipam.errors import CNIError
from ecs_ipam.store import CHUNK_BITS, Allocation, DictTables, Store


def family(**fields):
    doc = {"ipam": {key.replace("_", "-"): value for key, value in fields.items()}}
    return config.parse_ipam(doc).families[0]


def take(store, fam, holder=None):
    return str(allocator.allocate(store, fam, holder, None, None, 0).interface)


def test_round_robin_order_as_upstream():
    store = Store(DictTables())
    auto = family(ipv4_subnet="10.0.0.0/24")
    assert [take(store, auto), take(store, auto)] == ["10.0.0.2/24", "10.0.0.3/24"]
    assert take(store, family(ipv4_subnet="10.0.0.0/24", ipv4_address="10.0.0.10/24")) == "10.0.0.10/24"
    assert take(store, auto) == "10.0.0.11/24"
    allocator.release(store, ipaddress.ip_address("10.0.0.3"))
    assert store.cursor(auto.subnet) == ipaddress.ip_address("10.0.0.3")  # released: the cursor
    assert take(store, auto) == "10.0.0.4/24"


def test_just_released_address_is_reused_last():
    store = Store(DictTables())
    small = family(ipv4_subnet="10.0.0.0/29")  # hosts .1-.6, gateway .1
    held = [take(store, small) for _ in range(5)]
    assert held == [f"10.0.0.{n}/29" for n in range(2, 7)]
    allocator.release(store, ipaddress.ip_address("10.0.0.4"))
    assert take(store, small) == "10.0.0.4/29"  # the only free one
    with pytest.raises(CNIError) as caught:
        take(store, small)
    assert caught.value.code == 101 and "10.0.0.0/29" in caught.value.msg and "5" in caught.value.details


def test_wraps_around_and_skips_gateway_network_and_broadcast():
    store = Store(DictTables())
    fam = family(ipv4_subnet="10.0.0.0/30", ipv4_gateway="10.0.0.2")
    assert take(store, fam) == "10.0.0.1/30"
    with pytest.raises(CNIError):
        take(store, fam)


def test_ipv6_last_address_is_allocatable_and_wraps():
    store = Store(DictTables())
    fam = family(ipv6_subnet="2001:db8::/126")
    store.set_cursor(fam.subnet, ipaddress.ip_address("2001:db8::2"))
    assert take(store, fam) == "2001:db8::3/126"
    assert take(store, fam) == "2001:db8::2/126"


def test_slash_64_and_slash_0_never_enumerate():
    blocks = []

    def held_bits(block):
        blocks.append(block)
        return 0b1101  # ::0, ::2 and ::3 held in every block

    subnet = ipaddress.ip_network("::/0")
    found = allocator.next_free(subnet, subnet.network_address + 1, None, held_bits)
    assert found == ipaddress.ip_address("::4") and blocks == [0, 0]  # before and after the gateway
    top = ipaddress.ip_address("2001:db8::ffff:ffff:ffff:ffff")
    wide = ipaddress.ip_network("2001:db8::/64")
    assert allocator.next_free(wide, wide.network_address + 1, top, lambda block: 0) == ipaddress.ip_address(
        "2001:db8::2")


def test_an_add_after_a_del_far_behind_passes_full_blocks_not_allocations():
    """The cursor sits on a just-released address; what follows it is passed a block at a time."""
    store = Store(DictTables())
    subnet = ipaddress.ip_network("10.0.0.0/16")
    fam = family(ipv4_subnet=str(subnet))
    for value in range(int(subnet.network_address) + 2, int(subnet.network_address) + 20002):
        store.reserve(Allocation(ipaddress.ip_address(value), None, None, None, subnet, 0))
    allocator.release(store, ipaddress.ip_address("10.0.0.5"))
    looked_up = []

    def held_bits(block):
        looked_up.append(block)
        return store.held_bits(4, block)

    found = allocator.next_free(subnet, fam.gateway, store.cursor(subnet), held_bits)
    assert found == ipaddress.ip_address(int(subnet.network_address) + 20002)
    assert len(looked_up) <= 20002 // CHUNK_BITS + 2
    # Only once the rest is full does the walk come back round to the released address.
    store.reserve(Allocation(found, None, None, None, subnet, 0))
    for value in range(int(found) + 1, int(subnet.broadcast_address)):
        store.reserve(Allocation(ipaddress.ip_address(value), None, None, None, subnet, 0))
    assert allocator.next_free_address(store, fam) == ipaddress.ip_address("10.0.0.5")
    store.reserve(Allocation(ipaddress.ip_address("10.0.0.5"), None, None, None, subnet, 0))
    assert allocator.next_free_address(store, fam) is None


def test_gateway_in_the_middle_of_a_free_block_is_skipped():
    subnet = ipaddress.ip_network("10.0.0.0/24")
    gateway = ipaddress.ip_address("10.0.0.7")
    held = sum(1 << n for n in range(1, 7))  # .1 - .6
    assert allocator.next_free(subnet, gateway, None, lambda block: held) == ipaddress.ip_address("10.0.0.8")


def test_cursor_is_per_subnet():
    store = Store(DictTables())
    a, b = family(ipv4_subnet="10.0.0.0/24"), family(ipv4_subnet="10.1.0.0/24")
    assert [take(store, a), take(store, b), take(store, a)] == ["10.0.0.2/24", "10.1.0.2/24", "10.0.0.3/24"]


def test_overlapping_subnets_share_addresses():
    store = Store(DictTables())
    assert take(store, family(ipv4_subnet="10.0.0.0/24")) == "10.0.0.2/24"
    assert take(store, family(ipv4_subnet="10.0.0.0/16")) == "10.0.0.3/16"


def test_static_errors_name_address_and_holder():
    store = Store(DictTables())
    static = family(ipv4_subnet="10.0.0.0/24", ipv4_address="10.0.0.5/24")
    take(store, static, "task-a")
    with pytest.raises(CNIError) as caught:
        take(store, static, "task-b")
    assert caught.value.code == 100 and "10.0.0.5" in caught.value.msg and "task-a" in caught.value.msg
    with pytest.raises(CNIError) as caught:
        take(store, family(ipv4_subnet="10.0.0.0/24", ipv4_address="10.0.0.1/24"))
    assert caught.value.code == 100 and "gateway" in caught.value.msg


def test_one_address_per_id_per_family():
    store = Store(DictTables())
    take(store, family(ipv4_subnet="10.0.0.0/24"), "task")
    take(store, family(ipv6_subnet="2001:db8::/64"), "task")
    with pytest.raises(CNIError) as caught:
        take(store, family(ipv4_subnet="10.9.0.0/24"), "task")
    assert caught.value.code == 102 and "'task'" in caught.value.msg and "10.0.0.2" in caught.value.msg
    assert take(store, family(ipv4_subnet="10.9.0.0/24")) == "10.9.0.2/24"  # no id: no limit
