"""Chooses addresses: a static one if it is free, else the next free one after the subnet's cursor."""

import ipaddress

from ecs_ipam.errors import ADDRESS_IN_USE, DUPLICATE_ID, SUBNET_EXHAUSTED, CNIError
from ecs_ipam.result import IPConfig
from ecs_ipam.store import Allocation


def host_range(subnet):
    """(first, last) host addresses of subnet as integers: no network address, no IPv4 broadcast."""
    first = int(subnet.network_address) + 1
    last = int(subnet.broadcast_address) - (1 if subnet.version == 4 else 0)
    return first, last


def next_free(subnet, gateway, cursor, is_held):
    """The first free host address after cursor, wrapping around, the cursor itself last.

    Never enumerates the subnet: each step either returns or passes an address that
    is held (or the gateway), so the walk is bounded by the allocations, not the
    subnet's size. Returns None when every host address but the gateway is held.
    """
    first, last = host_range(subnet)
    size = last - first + 1
    start = int(cursor) + 1 if cursor is not None and first <= int(cursor) <= last else first
    make = type(subnet.network_address)
    for step in range(size):
        address = make(first + (start - first + step) % size)
        if address != gateway and not is_held(address):
            return address
    return None


def allocate(store, family, holder_id, container, ifname, now):
    """Reserve one address of family in store and return it as an IPConfig."""
    if holder_id is not None:
        for held in store.held_by_id(holder_id):
            if held.address.version == family.version:
                raise CNIError(DUPLICATE_ID, f"id {holder_id!r} already holds {held.address}",
                               f"an id holds at most one IPv{family.version} address; "
                               "DEL it first or use another id")
    if family.address is not None:
        address = family.address.ip
        if address == family.gateway:
            raise CNIError(ADDRESS_IN_USE, f"address {address} is the gateway of {family.subnet}")
        held = store.holder(address)
        if held is not None:
            owner = f" by id {held.id!r}" if held.id is not None else ""
            raise CNIError(ADDRESS_IN_USE, f"address {address} is already held{owner}")
        interface = family.address
    else:
        address = next_free(family.subnet, family.gateway, store.cursor(family.subnet), store.is_held)
        if address is None:
            first, last = host_range(family.subnet)
            raise CNIError(SUBNET_EXHAUSTED, f"subnet {family.subnet} is exhausted",
                           f"all {last - first} of its addresses (the gateway aside) are held")
        interface = ipaddress.ip_interface((address, family.subnet.prefixlen))
    store.reserve(Allocation(address, holder_id, container, ifname, family.subnet, now))
    return IPConfig(interface, family.gateway)
