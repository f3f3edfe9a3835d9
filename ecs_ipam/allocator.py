"""Chooses addresses and keeps the cursors: a static one if it is free, else the next free one after
the subnet's cursor, which is the last address allocated or released in the subnet."""

import ipaddress

from ecs_ipam.errors import ADDRESS_IN_USE, DUPLICATE_ID, SUBNET_EXHAUSTED, CNIError
from ecs_ipam.result import IPConfig
from ecs_ipam.store import CHUNK_BITS, Allocation


def host_range(subnet):
    """(first, last) host addresses of subnet as integers: no network address, no IPv4 broadcast."""
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    return first, last


def usable(subnet):
    """How many addresses of subnet ADD can hand out: its host addresses, the gateway aside."""
    first, last = host_range(subnet)
    return last - first


def next_free(subnet, gateway, cursor, held_bits):
    """The first free host address after cursor, wrapping around, the cursor itself last.

    held_bits(block) gives the bitmap of the held addresses block * CHUNK_BITS onwards
    (Store.held_bits). The walk never enumerates the subnet: each step returns, passes
    the gateway, or passes the rest of a block, so its cost is bounded by the blocks that
    are full, not by the subnet's size or the number of allocations. Returns None when
    every host address but the gateway is held.
    """
    first, last = host_range(subnet)
    start = int(cursor) + 1 if cursor is not None and first <= int(cursor) <= last else first
    found = _first_free(start, last, int(gateway), held_bits)
    if found is None:
        found = _first_free(first, start - 1, int(gateway), held_bits)
    return None if found is None else type(subnet.network_address)(found)


def next_free_address(store, family):
    """The address an automatic ADD of family would get from store now, or None when it is full."""
    return next_free(family.subnet, family.gateway, store.cursor(family.subnet),
                     lambda block: store.held_bits(family.version, block))


def _first_free(low, high, gateway, held_bits):
    """The lowest integer address in [low, high] that is neither held nor the gateway, or None."""
    value = low
    while value <= high:
        block, bit = divmod(value, CHUNK_BITS)
        held = held_bits(block) >> bit
        candidate = value + ((held + 1) & ~held).bit_length() - 1  # the lowest clear bit
        block_end = (block + 1) * CHUNK_BITS - 1
        if candidate > min(high, block_end):
            value = block_end + 1
        elif candidate == gateway:
            value = candidate + 1
        else:
            return candidate
    return None


def allocate(store, family, holder_id, container, ifname, now):
    """Reserve one address of family in store and return it as an IPConfig."""
    if holder_id is not None:
        for held in store.held_by_id(holder_id):
            if held.address.version == family.version:
                raise CNIError(DUPLICATE_ID, f"id {holder_id!r} already holds {held.address}",
                               f"an id holds at most one IPv{family.version} address; "
                               "DEL it first or use another id")
    if family.static is not None:
        address = family.static.ip
        if address == family.gateway:
            raise CNIError(ADDRESS_IN_USE, f"address {address} is the gateway of {family.subnet}")
        held = store.allocation_at(address)
        if held is not None:
            owner = f" by id {held.id!r}" if held.id is not None else ""
            raise CNIError(ADDRESS_IN_USE, f"address {address} is already held{owner}")
        interface = family.static
    else:
        address = next_free_address(store, family)
        if address is None:
            raise CNIError(SUBNET_EXHAUSTED, f"subnet {family.subnet} is exhausted",
                           f"all {usable(family.subnet)} of its addresses (the gateway aside) are held")
        interface = ipaddress.ip_interface((address, family.subnet.prefixlen))
    store.reserve(Allocation(address, holder_id, container, ifname, family.subnet, now))
    store.set_cursor(family.subnet, address)
    return IPConfig(interface, family.gateway)


def release(store, address):
    """Free address, and make it its subnet's cursor (so that it is handed out again last);
    return the allocation it had, or None when it was not held."""
    allocation = store.release(address)
    if allocation is not None:
        store.set_cursor(allocation.subnet, address)
    return allocation
