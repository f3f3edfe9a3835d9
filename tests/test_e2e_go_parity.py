"""End to end: replay what the Go plugin was run through and compare results and final holdings with it.

The fixtures (tests/fixtures/go-plugin-boltdb/NAME.json, written by the Go plugin itself) hold each step the Go plugin ran (command,
ipam section, the result it printed) and a dump of its store afterwards. We are a drop-in replacement,
so the same steps must hand out the same addresses and leave the same holders. Two deliberate
differences (docs/behaviour.md §2): a route without gw gets the family's gateway, and dst is printed
canonically (the Go plugin echoes "169.254.170.0/20" as written).
"""

import ipaddress
import json
import re
from pathlib import Path

import pytest

from e2e_support import held_addresses, netconf, silent_success, succeeded

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "go-plugin-boltdb"
NAMES = ["ipv4-basic", "dual-stack", "ecs-link-local-1000"]
DUMP_KEY = re.compile(r'^\s*key="([^"]*)" idx=\d+ value="([^"]*)"$')


def go_holders(dump):
    """{address: id or None} from the Go store dump, the gateways and cursors left out."""
    holders = {}
    for line in dump.splitlines():
        match = DUMP_KEY.match(line)
        if not match or match.group(2) in ("GateWay", "GateWayV6") or match.group(1).startswith("lastKnownIP"):
            continue
        key, holder = match.groups()
        address = key[1:] if key.startswith("6") and ":" in key else key
        holders[address] = holder or None
    return holders


def expected_routes(go_routes, ips):
    gateways = {ipaddress.ip_interface(ip["address"]).version: ip["gateway"] for ip in ips}
    routes = []
    for route in go_routes:
        dst = ipaddress.ip_network(route["dst"], strict=False)
        routes.append({"dst": str(dst), "gw": route.get("gw") or gateways[dst.version]})
    return routes


@pytest.mark.parametrize("name", NAMES)
def test_replay_matches_the_go_plugin(plugin, name):
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    for number, step in enumerate(fixture["steps"]):
        conf = netconf(step["ipam"], "0.3.0")  # the one version the Go plugin accepts
        outcome = plugin.run(step["command"], conf)
        if step["command"] == "DEL":
            silent_success(outcome)
            continue
        result = succeeded(outcome).json
        go = step["result"]
        assert result["ips"] == go["ips"], (number, step)
        assert result.get("routes", []) == expected_routes(go.get("routes", []), go["ips"]), (number, step)
        assert result["dns"] == {}
    ours = {address: held[0] for address, held in held_addresses(plugin).items()}
    assert ours == go_holders(fixture["dump"])


def test_go_holders_reads_the_dump():
    dump = json.loads((FIXTURES / "dual-stack.json").read_text())["dump"]
    assert go_holders(dump) == {"10.0.0.2": "d1", "10.0.0.4": "d3", "2001:db8::2": "d1", "2001:db8::4": "d3",
                                "2001:db8::5": "v6only"}
