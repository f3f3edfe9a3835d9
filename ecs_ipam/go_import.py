"""Turns the Go plugin's IPAM bucket (its keys, under libkv's counter) into allocations and cursors to import.

The Go plugin (through docker/libkv) writes, each value after an 8-byte little-endian counter:
- ``10.0.0.2`` -> the id holding that IPv4 address (empty: no id), or ``GateWay`` for the gateway;
- ``6`` + an IPv6 address -> the same, with ``GateWayV6`` for the gateway;
- ``lastKnownIP`` / ``lastKnownIPv6`` -> the last address handed out or released in that family.
It keeps one cursor per family for the whole store, and no subnet: the caller names the
subnets (the operator's flags, or the config an upgrade in place serves), and each address is
recorded under the most specific one that contains it.
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


class Unplaced(CNIError):
    """Addresses of one family that none of the given subnets contains (code 7: name the subnets)."""

    def __init__(self, version, addresses, subnets):
        within = ", ".join(map(str, subnets)) or "no subnet given"
        super().__init__(INVALID_CONFIG, f"{len(addresses)} IPv{version} address(es) lie outside "
                                         f"the IPv{version} subnets ({within}): {names(addresses)}",
                         "name the subnets they were allocated from; nothing was imported")
        self.version = version
        self.addresses = addresses


def plan_import(pairs, subnets, now):
    """The Plan for the Go plugin's (key, value) pairs, placing each address in one of subnets.

    Raises Unplaced for addresses no subnet contains, and CNIError naming the key when a pair
    cannot be carried over whole.
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
    specific_first = sorted(subnets, key=lambda subnet: -subnet.prefixlen)
    placed = [(address, holder, _subnet_of(address, specific_first)) for address, holder in allocations]
    for version in (4, 6):
        outside = [address for address, _, subnet in placed if subnet is None and address.version == version]
        if outside:
            raise Unplaced(version, outside, [s for s in subnets if s.version == version])
    cursors, notes = _cursors(go_cursors, specific_first)
    notes += _shared_id_notes(allocations) + _no_id_notes(allocations)
    return Plan([Allocation(address, holder, None, None, subnet, now) for address, holder, subnet in placed],
                cursors, sorted(gateways, key=_order), notes)


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


def per_subnet(plan):
    """How many of plan's allocations go to each subnet: "3 in 10.0.0.0/24, 1 in ..." ("" for none)."""
    counts = {}
    for allocation in plan.allocations:
        counts[allocation.subnet] = counts.get(allocation.subnet, 0) + 1
    return ", ".join(f"{count} in {subnet}" for subnet, count in counts.items())


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


def _subnet_of(address, subnets):
    """The first of subnets (most specific first) that contains address, or None."""
    return next((subnet for subnet in subnets if subnet.version == address.version and address in subnet), None)


def _cursors(go_cursors, subnets):
    """({subnet: the Go plugin's cursor}, notes on cursors left out) for the given subnets."""
    cursors, notes = {}, []
    for version, (key, address) in sorted(go_cursors.items()):
        subnet = _subnet_of(address, subnets)
        if subnet is None:
            notes.append(f"{key} {address} not carried over: no IPv{version} subnet given contains it")
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
