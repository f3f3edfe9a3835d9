"""The Go plugin's stores (tests/fixtures/go-plugin-boltdb): where they are, and their dumps read back."""

import ast
import ipaddress
import json
import re
from pathlib import Path

# Copied from the project's shared fixtures, so that a bare checkout (CI) has them.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "go-plugin-boltdb"
NAMES = ["ipv4-basic", "dual-stack", "ecs-link-local-1000"]
# The subnets the Go plugin allocated each fixture's addresses from (its steps' ipam sections).
SUBNETS = {
    "ipv4-basic": {"ipv4-subnet": "10.0.0.0/24"},
    "dual-stack": {"ipv4-subnet": "10.0.0.0/24", "ipv6-subnet": "2001:db8::/64"},
    "ecs-link-local-1000": {"ipv4-subnet": "169.254.172.0/22"},
}
CURSOR_FAMILY = {"lastKnownIP": "ipv4-subnet", "lastKnownIPv6": "ipv6-subnet"}
_HEADER = 'bucket "IPAM"'
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_ENTRY = re.compile(rf"^  key={_QUOTED} idx=(\d+) value={_QUOTED}$")


def fixture(name):
    """(the path of NAME.db, the parsed NAME.json)."""
    return FIXTURES / f"{name}.db", json.loads((FIXTURES / f"{name}.json").read_text())


def dump_entries(dump):
    """[(key bytes, libkv counter, payload bytes)] of the IPAM bucket, in the dump's order."""
    header, *lines = dump.splitlines()
    assert header == _HEADER, header
    entries = []
    for line in lines:
        match = _ENTRY.match(line)
        assert match, line
        key, idx, value = match.groups()
        entries.append((_unquote(key), int(idx), _unquote(value)))
    return entries


def go_holders(dump):
    """{address text: id or None} that the dump holds: gateways and the lastKnownIP cursors left out."""
    holders = {}
    for key, _, value in dump_entries(dump):
        if value in (b"GateWay", b"GateWayV6") or key.startswith(b"lastKnownIP"):
            continue
        text = key.decode()
        holders[text[1:] if ":" in text else text] = value.decode() or None
    return holders


def go_cursors(dump):
    """{"lastKnownIP": address text, ...} from the dump."""
    return {key.decode(): value.decode() for key, _, value in dump_entries(dump) if key.startswith(b"lastKnownIP")}


def _unquote(text):
    # Go's %q of these ASCII keys and values reads the same as a Python string literal.
    return ast.literal_eval(f'"{text}"').encode("utf-8")


def next_free(subnet, cursor, taken):
    """The address an automatic ADD should give: the first after cursor that is not taken."""
    network = ipaddress.ip_network(subnet)
    address = ipaddress.ip_address(cursor) + 1
    while str(address) in taken or address == network.network_address + 1:
        address += 1
    return str(address)
