"""Unit tests of config parsing: typed values out, code 7 naming field and value for bad input."""

import ipaddress

import pytest

from ecs_ipam import config
from ecs_ipam.errors import CNIError

SEED_DUAL_STACK = {
    "type": "ecs-ipam", "id": "container-12345",
    "ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.2/24", "ipv4-gateway": "10.0.0.1",
    "ipv4-routes": [{"dst": "169.254.170.2/32"}],
    "ipv6-subnet": "2001:db8::/64", "ipv6-address": "2001:db8::2/64", "ipv6-gateway": "2001:db8::1",
    "ipv6-routes": [{"dst": "fd00:ec2::254/128"}],
}


def ipam(**fields):
    return config.parse_ipam({"ipam": {key.replace("_", "-"): value for key, value in fields.items()}})


def rejected(**fields):
    with pytest.raises(CNIError) as caught:
        ipam(**fields)
    assert caught.value.code == 7
    return caught.value.msg + " " + caught.value.details


def test_seed_dual_stack_parses_into_typed_families():
    parsed = config.parse_ipam({"ipam": SEED_DUAL_STACK})
    assert parsed.id == "container-12345"
    v4, v6 = parsed.families
    assert (v4.version, v4.subnet, v4.gateway) == (4, ipaddress.ip_network("10.0.0.0/24"),
                                                   ipaddress.ip_address("10.0.0.1"))
    assert v4.static == ipaddress.ip_interface("10.0.0.2/24")
    assert v4.routes == (config.Route(ipaddress.ip_network("169.254.170.2/32"), v4.gateway),)
    assert v6.static == ipaddress.ip_interface("2001:db8::2/64")
    assert v6.routes[0].gw == ipaddress.ip_address("2001:db8::1")


def test_defaults_gateway_to_network_plus_one_even_with_host_bits_set():
    (family,) = ipam(ipv4_subnet="10.0.0.5/24").families
    assert family.subnet == ipaddress.ip_network("10.0.0.0/24")
    assert family.gateway == ipaddress.ip_address("10.0.0.1")
    (family,) = ipam(ipv6_subnet="2001:db8::/64").families
    assert family.gateway == ipaddress.ip_address("2001:db8::1")


def test_route_gw_is_kept_when_given_and_dst_is_canonical():
    (family,) = ipam(ipv4_subnet="10.0.0.0/24",
                     ipv4_routes=[{"dst": "169.254.170.0/20", "gw": "10.0.0.9"}]).families
    assert family.routes[0] == (ipaddress.ip_network("169.254.160.0/20"), ipaddress.ip_address("10.0.0.9"))


def test_null_means_absent():
    parsed = ipam(id=None, ipv4_subnet="10.0.0.0/24", ipv4_address=None, ipv4_gateway=None,
                  ipv4_routes=None, ipv6_subnet=None)
    assert parsed.id is None and len(parsed.families) == 1 and parsed.families[0].static is None


def test_empty_id_means_no_id():
    assert ipam(id="", ipv4_subnet="10.0.0.0/24").id is None


@pytest.mark.parametrize("fields, words", [
    ({}, ["ipv4-subnet or ipv6-subnet"]),
    ({"ipv4_subnet": "2001:db8::/64"}, ["ipv4-subnet", "2001:db8::/64", "IPv6"]),
    ({"ipv4_subnet": "10.0.0.0/31"}, ["ipv4-subnet", "10.0.0.0/31", "too small"]),
    ({"ipv4_subnet": "10.0.0.0/32"}, ["ipv4-subnet", "/30"]),
    ({"ipv6_subnet": "2001:db8::/127"}, ["ipv6-subnet", "/126"]),
    ({"ipv6_subnet": "2001:db8::/128"}, ["ipv6-subnet", "too small"]),
    ({"ipv4_subnet": 24}, ["ipv4-subnet", "must be a string", "24"]),
    ({"ipv4_subnet": "10.0.0.300/24"}, ["ipv4-subnet", "10.0.0.300/24"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_address": "10.0.0.2"}, ["ipv4-address", "10.0.0.2", "prefix"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_address": "10.0.1.2/24"}, ["ipv4-address", "10.0.1.2", "outside"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_address": "10.0.0.0/24"}, ["ipv4-address", "network address"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_address": "10.0.0.255/24"}, ["ipv4-address", "broadcast"]),
    ({"ipv6_subnet": "::ffff:0:0/96", "ipv6_address": "::ffff:10.0.0.2/96"}, ["ipv6-subnet", "IPv4-mapped"]),
    ({"ipv6_subnet": "2001:db8::/64", "ipv6_address": "::ffff:10.0.0.2/64"}, ["ipv6-address"]),
    ({"ipv6_subnet": "2001:db8::/64", "ipv6_gateway": "fe80::1%eth0"}, ["ipv6-gateway", "scoped"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_gateway": "10.0.0.1/24"}, ["ipv4-gateway", "without a prefix"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_gateway": "10.0.9.1"}, ["ipv4-gateway", "10.0.9.1", "outside"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_gateway": "10.0.0.255"}, ["ipv4-gateway", "broadcast"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_routes": {"dst": "1.2.3.4/32"}}, ["ipv4-routes", "list"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_routes": ["1.2.3.4/32"]}, ["ipv4-routes[0]", "object"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_routes": [{"gw": "10.0.0.1"}]}, ["ipv4-routes[0].dst", "missing"]),
    ({"ipv4_subnet": "10.0.0.0/24", "ipv4_routes": [{"dst": "fd00::/8"}]}, ["ipv4-routes[0].dst", "fd00::/8"]),
    ({"ipv6_subnet": "2001:db8::/64", "ipv6_routes": [{"dst": "::/0", "gw": "10.0.0.1"}]},
     ["ipv6-routes[0].gw", "10.0.0.1", "IPv4"]),
    ({"ipv4_address": "10.0.0.2/24"}, ["ipv4-address", "ipv4-subnet is missing"]),
    ({"id": 12345, "ipv4_subnet": "10.0.0.0/24"}, ["id", "must be a string", "12345"]),
    ({"id": "x" * 257, "ipv4_subnet": "10.0.0.0/24"}, ["id", "257", "256"]),
])
def test_rejects_with_field_and_value_named(fields, words):
    message = rejected(**fields)
    for word in words:
        assert word in message


def test_id_limit_counts_bytes_not_characters():
    assert ipam(id="é" * 128, ipv4_subnet="10.0.0.0/24").id == "é" * 128
    assert "257" in rejected(id="é" * 128 + "x", ipv4_subnet="10.0.0.0/24")


def test_ipv6_all_ones_address_and_static_128_are_allowed():
    (family,) = ipam(ipv6_subnet="2001:db8::/64", ipv6_address="2001:db8::ffff:ffff:ffff:ffff/64").families
    assert family.static.ip == ipaddress.ip_address("2001:db8::ffff:ffff:ffff:ffff")
    (family,) = ipam(ipv6_subnet="2001:db8::/64", ipv6_address="2001:db8::2/128").families
    assert family.static.network.prefixlen == 128


def test_missing_or_non_object_ipam():
    for doc in ({}, {"ipam": "x"}, {"ipam": []}):
        with pytest.raises(CNIError) as caught:
            config.parse_ipam(doc)
        assert caught.value.code == 7 and "ipam" in caught.value.msg


def test_unknown_ipam_keys_are_reported_not_rejected():
    doc = {"ipam": {"type": "ecs-ipam", "ipv4-subnet": "10.0.0.0/24", "ipv4-gatway": "10.0.0.1"}}
    assert config.unknown_ipam_keys(doc) == ["ipv4-gatway"]
    assert config.parse_ipam(doc).families[0].gateway == ipaddress.ip_address("10.0.0.1")


def test_decode_and_version():
    with pytest.raises(CNIError) as caught:
        config.decode("{not json")
    assert caught.value.code == 6
    with pytest.raises(CNIError) as caught:
        config.decode("[1]")
    assert caught.value.code == 6
    assert config.cni_version_of({}) == "0.1.0"
    assert config.cni_version_of({"cniVersion": ""}) == "0.1.0"
    assert config.cni_version_of({"cniVersion": "0.3.1"}) == "0.3.1"
    for bad in ("0.3", "2.0.0", 1):
        with pytest.raises(CNIError) as caught:
            config.cni_version_of({"cniVersion": bad})
        assert caught.value.code == 1 and str(bad) in caught.value.details


def test_release_hints_skip_invalid_fields_independently():
    doc = {"ipam": {"id": "task-1", "ipv4-subnet": "bogus", "ipv4-address": "10.0.0.7/24",
                    "ipv6-address": "not-an-address", "ipv6-subnet": "2001:db8::/64"}}
    assert config.parse_release_hints(doc) == ("task-1", (ipaddress.ip_address("10.0.0.7"),),
                                               (ipaddress.ip_network("2001:db8::/64"),))
    # A subnet too small to allocate from is invalid for DEL too; host bits are dropped as in ADD.
    assert config.parse_release_hints({"ipam": {"ipv4-subnet": "10.0.0.0/31"}}) == (None, (), ())
    assert config.parse_release_hints({"ipam": {"ipv4-subnet": "10.0.0.5/24"}})[2] == (
        ipaddress.ip_network("10.0.0.0/24"),)
    assert config.parse_release_hints({"ipam": {"id": 5}}) == (None, (), ())
    assert config.parse_release_hints({}) == (None, (), ())


def test_prev_result_in_every_shape():
    rich = {"prevResult": {"ips": [{"address": "10.0.0.2/24"}, {"address": "2001:db8::2/64"}]}}
    legacy = {"prevResult": {"ip4": {"ip": "10.0.0.2/24"}, "ip6": {"ip": "2001:db8::2/64"}}}
    expected = (ipaddress.ip_interface("10.0.0.2/24"), ipaddress.ip_interface("2001:db8::2/64"))
    assert config.parse_prev_result(rich) == expected
    assert config.parse_prev_result(legacy) == expected
    assert config.parse_prev_result({}) is None
    with pytest.raises(CNIError) as caught:
        config.parse_prev_result({"prevResult": {"ips": [{"address": "nope"}]}})
    assert caught.value.code == 7 and "nope" in caught.value.msg


def test_attachments_accept_both_keys_and_check_shape():
    pairs = [{"containerID": "c1", "ifname": "eth0"}]
    assert config.parse_attachments({"cni.dev/valid-attachments": pairs}) == {("c1", "eth0")}
    assert config.parse_attachments({"cni.dev/attachments": pairs}) == {("c1", "eth0")}
    assert config.parse_attachments({"cni.dev/valid-attachments": []}) == frozenset()
    for doc in ({}, {"cni.dev/valid-attachments": "c1"}, {"cni.dev/valid-attachments": [{"ifname": "x"}]}):
        with pytest.raises(CNIError) as caught:
            config.parse_attachments(doc)
        assert caught.value.code == 7


@pytest.mark.parametrize("depth", [400, 700])
def test_deeply_nested_values_are_code_7_not_a_crash(depth):
    # The decoder accepts nesting that a recursive encoder cannot show back in the message.
    nested = config.decode('{"ipam": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(CNIError) as caught:
        config.parse_ipam(nested)
    assert caught.value.code == 7 and "nested too deeply" in caught.value.details
    routes = config.decode('{"ipam": {"ipv4-subnet": "10.0.0.0/24", "ipv4-routes": [' + "[" * depth + "]" * depth + "]}}")
    with pytest.raises(CNIError) as caught:
        config.parse_ipam(routes)
    assert caught.value.code == 7 and "ipv4-routes[0]" in caught.value.msg


def store_keys(**fields):
    return config.parse_store_keys({"ipam": {"ipv4-subnet": "10.0.0.0/24",
                                             **{key.replace("_", "-"): value for key, value in fields.items()}}})


@pytest.mark.parametrize("fields, expected", [
    ({}, (None, None)),
    ({"db_path": None, "db_connection_timeout": None}, (None, None)),  # null means absent
    ({"db_path": "/var/lib/ecs-ipam/net.db"}, ("/var/lib/ecs-ipam/net.db", None)),
    ({"db_path": "/a/./b.db"}, ("/a/./b.db", None)),
    ({"db_connection_timeout": "300ms"}, (None, 0.3)),
    ({"db_connection_timeout": "1m30s"}, (None, 90.0)),
    ({"db_connection_timeout": 2}, (None, 2.0)),
    ({"db_connection_timeout": 0.25}, (None, 0.25)),
    ({"db_connection_timeout": 0}, (None, 0.0)),
    ({"db_connection_timeout": "0"}, (None, 0.0)),
])
def test_store_keys(fields, expected):
    path, timeout = store_keys(**fields)
    assert path == expected[0]
    assert timeout == (None if expected[1] is None else pytest.approx(expected[1]))


@pytest.mark.parametrize("fields, fragments", [
    ({"db_path": "ipam.db"}, ["db-path", "'ipam.db'", "absolute"]),
    ({"db_path": "./ipam.db"}, ["db-path", "'./ipam.db'", "absolute"]),
    ({"db_path": ""}, ["db-path", "''", "absolute"]),
    ({"db_path": "/var/lib/ecs-ipam/"}, ["db-path", "'/var/lib/ecs-ipam/'", "directory"]),
    ({"db_path": "/var/lib/.."}, ["db-path", "'/var/lib/..'", "directory"]),
    ({"db_path": "/"}, ["db-path", "'/'", "directory"]),
    ({"db_path": "/a\0b"}, ["db-path", "NUL"]),
    ({"db_path": "/a/\udcff"}, ["db-path", "Unicode"]),
    ({"db_path": 5}, ["db-path", "string", "5"]),
    ({"db_path": ["/a"]}, ["db-path", "string", '["/a"]']),
    ({"db_connection_timeout": "5x"}, ["db-connection-timeout", "'5x'", "not a duration"]),
    ({"db_connection_timeout": ""}, ["db-connection-timeout", "''", "not a duration"]),
    ({"db_connection_timeout": "-1s"}, ["db-connection-timeout", "'-1s'", "0 or more"]),
    ({"db_connection_timeout": -1}, ["db-connection-timeout", "-1", "0 or more"]),
    ({"db_connection_timeout": 1e300}, ["db-connection-timeout", "1e+300", "longer than a Go duration"]),
    ({"db_connection_timeout": True}, ["db-connection-timeout", "true"]),
    ({"db_connection_timeout": {"s": 5}}, ["db-connection-timeout", '{"s": 5}']),
])
def test_bad_store_keys_are_code_7_naming_field_and_value(fields, fragments):
    with pytest.raises(CNIError) as caught:
        store_keys(**fields)
    assert caught.value.code == 7
    text = caught.value.msg + " " + caught.value.details
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_store_keys_are_known_keys():
    doc = {"ipam": {"ipv4-subnet": "10.0.0.0/24", "db-path": "/x/ipam.db", "db-connection-timeout": "5s"}}
    assert config.unknown_ipam_keys(doc) == []
    assert config.parse_store_keys({"ipam": "not an object"}) == (None, None)  # parse_ipam reports it
