"""Turns the Go plugin's IPAM bucket (its keys, under libkv's counter) into allocations and cursors to import.

The Go plugin (through docker/libkv) writes, each value after an 8-byte little-endian counter:
- ``10.0.0.2`` -> the id holding that IPv4 address (empty: no id), or ``GateWay`` for the gateway;
- ``6`` + an IPv6 address -> the same, with ``GateWayV6`` for the gateway;
- ``lastKnownIP`` / ``lastKnownIPv6`` -> the last address handed out or released in that family.
It keeps one cursor per family for the whole store, and no subnet; the operator names the
subnet of each family, and every address must lie in it.
"""

import ipaddress
from collections import namedtuple

from ecs_ipam.errors import INVALID_CONFIG, IO_FAILURE, CNIError
from ecs_ipam.store import Allocation

BUCKET = b"IPAM"
GATEWAY_MARKS = (b"GateWay", b"GateWayV6")
CURSOR_KEYS = {b"lastKnownIP": 4, b"lastKnownIPv6": 6}
_COUNTER_BYTES = 8
_IPV6_PREFIX = b"6"
_SHOWN = 10  # addresses named in one message

# allocations in address order (IPv4 first); cursors {subnet: address}; gateways the skipped
# gateway addresses; notes sentences for the operator about what was not carried over as is.
Plan = namedtuple("Plan", "allocations cursors gateways notes")


def plan_import(pairs, subnets, now):
    """The Plan for the Go plugin's (key, value) pairs; subnets is {4: ip_network or None, 6: ...}.

    Raises CNIError naming the key or address when a pair cannot be carried over whole.
    """
    allocations, gateways, go_cursors = [], [], {}
    for key, value in pairs:
        payload = _payload(key, value)
        if key in CURSOR_KEYS:
            go_cursors[CURSOR_KEYS[key]] = (key.decode(), _cursor_address(key, payload, CURSOR_KEYS[key]))
            continue
        address = address_of_key(key)
        if payload in GATEWAY_MARKS:
            gateways.append(address)
            continue
        allocations.append((address, _holder_id(key, payload)))
    allocations.sort(key=lambda held: _order(held[0]))
    _require_subnets(allocations, subnets)
    cursors, notes = _cursors(go_cursors, subnets)
    notes += _shared_id_notes(allocations) + _no_id_notes(allocations)
    return Plan([Allocation(address, holder, None, None, subnets[address.version], now)
                 for address, holder in allocations], cursors, sorted(gateways, key=_order), notes)


def address_of_key(key):
    """The address a Go plugin key names: ``10.0.0.2``, or ``6`` + an IPv6 address."""
    try:
        text = key.decode("ascii")
        if ":" in text:
            if not text.startswith(_IPV6_PREFIX.decode()) or "%" in text:
                raise ValueError(text)
            return ipaddress.IPv6Address(text[len(_IPV6_PREFIX):])
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise CNIError(IO_FAILURE, f"the Go plugin's store holds key {key!r}, which is not an address "
                                   "nor lastKnownIP/lastKnownIPv6",
                       "nothing was imported: it may have been written by another program")


def names(addresses):
    """Up to _SHOWN addresses, comma-separated, and how many more there are."""
    shown = ", ".join(map(str, addresses[:_SHOWN]))
    return shown + (f" and {len(addresses) - _SHOWN} more" if len(addresses) > _SHOWN else "")


def _payload(key, value):
    if len(value) < _COUNTER_BYTES:
        raise CNIError(IO_FAILURE, f"the value of key {key!r} is {len(value)} bytes long, "
                                   f"shorter than libkv's {_COUNTER_BYTES}-byte counter")
    return value[_COUNTER_BYTES:]


def _cursor_address(key, payload, version):
    try:
        address = ipaddress.ip_address(payload.decode("ascii"))
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise CNIError(IO_FAILURE, f"{key.decode()} holds {payload!r}, not an IPv{version} address")
    return address


def _holder_id(key, payload):
    try:
        return payload.decode("utf-8") or None
    except UnicodeDecodeError:
        raise CNIError(IO_FAILURE, f"the id held by {address_of_key(key)} is not UTF-8 text: {payload!r}")


def _require_subnets(allocations, subnets):
    for version in (4, 6):
        addresses = [address for address, _ in allocations if address.version == version]
        subnet = subnets.get(version)
        if addresses and subnet is None:
            raise CNIError(INVALID_CONFIG, f"the Go plugin's store holds {len(addresses)} IPv{version} "
                                           f"address(es) ({names(addresses)}): give --ipv{version}-subnet",
                           "the subnet the ECS config allocates them from"
                           + (", e.g. 169.254.172.0/22 for the ECS link-local network" if version == 4 else ""))
        outside = [address for address in addresses if address not in subnet] if addresses else []
        if outside:
            raise CNIError(INVALID_CONFIG, f"{len(outside)} IPv{version} address(es) lie outside "
                                           f"--ipv{version}-subnet {subnet}: {names(outside)}",
                           "give the subnet they were allocated from; nothing was imported")


def _cursors(go_cursors, subnets):
    """({subnet: the Go plugin's cursor}, notes on cursors left out) for the given subnets."""
    cursors, notes = {}, []
    for version, (key, address) in sorted(go_cursors.items()):
        subnet = subnets.get(version)
        if subnet is None:
            notes.append(f"{key} {address} not carried over: no --ipv{version}-subnet")
        elif address not in subnet:
            notes.append(f"{key} {address} not carried over: it is outside {subnet}")
        else:
            cursors[subnet] = address
    return cursors, notes


def _shared_id_notes(allocations):
    """A note per id that holds more than one address of a family (the Go plugin allows it)."""
    by_id = {}
    for address, holder in allocations:
        if holder is not None:
            by_id.setdefault((holder, address.version), []).append(address)
    return [f"id {holder!r} holds {len(held)} IPv{version} addresses ({names(held)}): all kept; "
            "a DEL by that id releases them all, and an ADD with it fails (code 102) until then"
            for (holder, version), held in sorted(by_id.items()) if len(held) > 1]


def _no_id_notes(allocations):
    without = [address for address, holder in allocations if holder is None]
    if not without:
        return []
    return [f"{len(without)} address(es) held without an id ({names(without)}): "
            "`ecs-ipam db release ADDRESS` frees each when its task is gone"]


def _order(address):
    return address.version, address
