"""ecs_ipam.store over DictTables: allocations, their indexes, the held bitmaps and problems()."""

import ipaddress

from ecs_ipam.store import Allocation, DictTables, Store

SUBNET = ipaddress.ip_network("10.0.0.0/24")


def allocation(last_octet, holder="task", container="c1", ifname="eth0"):
    return Allocation(ipaddress.ip_address(f"10.0.0.{last_octet}"), holder, container, ifname, SUBNET, 1700000000)


def test_reserve_release_and_indexes():
    store = Store(DictTables())
    store.reserve(allocation(2))
    store.reserve(allocation(3, holder=None, container="c2"))
    assert store.allocation_at(ipaddress.ip_address("10.0.0.2")) == allocation(2)
    assert [a.address.packed[-1] for a in store.held_by_id("task")] == [2]
    assert [a.address.packed[-1] for a in store.held_by_container("c2")] == [3]
    assert store.held_by_container("c2", "eth1") == []
    assert store.cursor(SUBNET) is None  # the cursor is the allocator's to move, not the record's
    assert store.release(ipaddress.ip_address("10.0.0.2")) == allocation(2)
    assert store.release(ipaddress.ip_address("10.0.0.2")) is None
    assert store.held_by_id("task") == []
    assert store.cursor(SUBNET) is None
    store.set_cursor(SUBNET, ipaddress.ip_address("10.0.0.3"))
    assert store.cursor(SUBNET) == ipaddress.ip_address("10.0.0.3")
    assert store.problems() == []


def test_problems_finds_broken_indexes():
    tables = DictTables()
    store = Store(tables)
    store.reserve(allocation(2))
    tables.put("i/task", '["10.0.0.9"]')
    tables.put("junk", "x")
    tables.put("h/4/9", "ff")
    found = " ".join(store.problems())
    assert "i/task" in found and "10.0.0.9" in found and "junk" in found and "h/4/9" in found


def test_held_bitmaps_follow_reserve_and_release():
    tables = DictTables()
    store = Store(tables)
    block = int(ipaddress.ip_address("10.0.0.2")) // 1024
    store.reserve(allocation(2))
    store.reserve(allocation(3, holder="other"))
    assert store.held_bits(4, block) >> (int(ipaddress.ip_address("10.0.0.0")) % 1024) == 0b1100
    store.release(ipaddress.ip_address("10.0.0.2"))
    store.release(ipaddress.ip_address("10.0.0.3"))
    assert store.held_bits(4, block) == 0 and not [k for k in tables.keys() if k.startswith("h/")]
    assert store.problems() == []
