"""End to end: replay what the Go plugin was run through and compare results and final holdings with it.

The fixtures (tests/fixtures/go-plugin-boltdb/NAME.json, written by the Go plugin itself) hold each step the Go plugin ran (command,
ipam section, the result it printed) and a dump of its store afterwards. We are a drop-in replacement,
so the same steps must hand out the same addresses and leave the same holders. Two deliberate
differences (docs/behaviour.md §2): a route without gw gets the family's gateway, and dst is printed
canonically (the Go plugin echoes "169.254.170.0/20" as written).
"""

import ipaddress

import pytest

from e2e_support import held_addresses, netconf, silent_success, succeeded
from go_fixtures import NAMES, fixture, go_holders


def expected_routes(go_routes, ips):
    gateways = {ipaddress.ip_interface(ip["address"]).version: ip["gateway"] for ip in ips}
    routes = []
    for route in go_routes:
        dst = ipaddress.ip_network(route["dst"], strict=False)
        routes.append({"dst": str(dst), "gw": route.get("gw") or gateways[dst.version]})
    return routes


@pytest.mark.parametrize("name", NAMES)
def test_replay_matches_the_go_plugin(plugin, name):
    steps, dump = fixture(name)[1]["steps"], fixture(name)[1]["dump"]
    for number, step in enumerate(steps):
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
    assert ours == go_holders(dump)


def test_go_holders_reads_the_dump():
    dump = fixture("dual-stack")[1]["dump"]
    assert go_holders(dump) == {"10.0.0.2": "d1", "10.0.0.4": "d3", "2001:db8::2": "d1", "2001:db8::4": "d3",
                                "2001:db8::5": "v6only"}
