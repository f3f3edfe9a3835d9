"""Unit tests of the result's JSON shape per CNI version."""

import ipaddress

from ecs_ipam.config import Route
from ecs_ipam.result import IPConfig, Result, encode

RESULT = Result(
    [IPConfig(ipaddress.ip_interface("10.0.0.2/24"), ipaddress.ip_address("10.0.0.1")),
     IPConfig(ipaddress.ip_interface("2001:DB8:0::2/64"), ipaddress.ip_address("2001:db8::1"))],
    [Route(ipaddress.ip_network("169.254.170.2/32"), ipaddress.ip_address("10.0.0.1")),
     Route(ipaddress.ip_network("fd00:ec2::254/128"), ipaddress.ip_address("2001:db8::1"))],
)


def test_legacy_shape_splits_routes_by_family():
    for version in ("0.1.0", "0.2.0"):
        assert encode(RESULT, version) == {
            "cniVersion": version,
            "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                    "routes": [{"dst": "169.254.170.2/32", "gw": "10.0.0.1"}]},
            "ip6": {"ip": "2001:db8::2/64", "gateway": "2001:db8::1",
                    "routes": [{"dst": "fd00:ec2::254/128", "gw": "2001:db8::1"}]},
            "dns": {},
        }


def test_rich_shape_with_and_without_version_keys():
    routes = [{"dst": "169.254.170.2/32", "gw": "10.0.0.1"}, {"dst": "fd00:ec2::254/128", "gw": "2001:db8::1"}]
    for version in ("0.3.0", "0.3.1", "0.4.0"):
        assert encode(RESULT, version) == {
            "cniVersion": version,
            "ips": [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                    {"version": "6", "address": "2001:db8::2/64", "gateway": "2001:db8::1"}],
            "routes": routes, "dns": {}}
    for version in ("1.0.0", "1.1.0"):
        assert encode(RESULT, version) == {
            "cniVersion": version,
            "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                    {"address": "2001:db8::2/64", "gateway": "2001:db8::1"}],
            "routes": routes, "dns": {}}


def test_no_routes_key_without_routes_and_never_interfaces():
    bare = Result(RESULT.ips[:1], [])
    assert encode(bare, "1.0.0") == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24",
                                                                      "gateway": "10.0.0.1"}], "dns": {}}
    assert encode(bare, "0.2.0") == {"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"},
                                     "dns": {}}
