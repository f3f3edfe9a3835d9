"""End to end: ADD as a runtime runs it (seed examples, result shapes per CNI version, allocation order)."""

import time

import pytest

from e2e_support import (ALL_VERSIONS, DUAL, LEGACY_VERSIONS, V4, V6, VERSIONED_IPS,
                         add, add_address, add_addresses, assert_free, assert_held, delete, failed,
                         held_addresses, listing, netconf, store_files, succeeded)

# The three examples of the seed README, exactly as written there.
SEED_IPV4 = {
    "type": "ecs-ipam",
    "id": "12345",
    "ipv4-address": "10.0.0.2/24",
    "ipv4-gateway": "10.0.0.1",
    "ipv4-subnet": "10.0.0.0/24",
    "ipv4-routes": [
        {"dst": "169.254.170.2/32"},
        {"dst": "169.254.170.0/20", "gw": "10.0.0.1"},
    ],
}
SEED_DUAL = {
    "type": "ecs-ipam",
    "id": "container-12345",
    "ipv4-subnet": "10.0.0.0/24",
    "ipv4-address": "10.0.0.2/24",
    "ipv4-gateway": "10.0.0.1",
    "ipv4-routes": [{"dst": "169.254.170.2/32"}],
    "ipv6-subnet": "2001:db8::/64",
    "ipv6-address": "2001:db8::2/64",
    "ipv6-gateway": "2001:db8::1",
    "ipv6-routes": [{"dst": "fd00:ec2::254/128"}],
}
SEED_IPV6 = {
    "type": "ecs-ipam",
    "id": "container-12345",
    "ipv6-subnet": "2001:db8::/64",
    "ipv6-gateway": "2001:db8::1",
}

# The seed's "169.254.170.0/20" has host bits set: dst is printed canonically, as its network (the
# form the kernel accepts for a route; the Go plugin echoes the text as written).
IPV4_ROUTES = [{"dst": "169.254.170.2/32", "gw": "10.0.0.1"}, {"dst": "169.254.160.0/20", "gw": "10.0.0.1"}]


def expected(cni_version, ips, routes):
    """The result a runtime of cni_version expects; ips are (version, address, gateway), routes dicts."""
    if cni_version in LEGACY_VERSIONS:
        result = {"cniVersion": cni_version}
        for version, address, gateway in ips:
            entry = {"ip": address, "gateway": gateway}
            family_routes = [r for r in routes if (":" in r["dst"]) == (version == "6")]
            if family_routes:
                entry["routes"] = family_routes
            result["ip" + version] = entry
        result["dns"] = {}
        return result
    result = {"cniVersion": cni_version, "ips": [
        {"version": version, "address": address, "gateway": gateway} if cni_version in VERSIONED_IPS
        else {"address": address, "gateway": gateway}
        for version, address, gateway in ips]}
    if routes:
        result["routes"] = routes
    result["dns"] = {}
    return result


# -- the seed README's examples, per CNI version ------------------------------------------

@pytest.mark.parametrize("cni_version", ALL_VERSIONS)
def test_seed_ipv4_only_example(plugin, cni_version):
    outcome = succeeded(plugin.run("ADD", netconf(SEED_IPV4, cni_version)))
    assert outcome.json == expected(cni_version, [("4", "10.0.0.2/24", "10.0.0.1")], IPV4_ROUTES)


@pytest.mark.parametrize("cni_version", ALL_VERSIONS)
def test_seed_dual_stack_example(plugin, cni_version):
    outcome = succeeded(plugin.run("ADD", netconf(SEED_DUAL, cni_version)))
    assert outcome.json == expected(
        cni_version,
        [("4", "10.0.0.2/24", "10.0.0.1"), ("6", "2001:db8::2/64", "2001:db8::1")],
        [{"dst": "169.254.170.2/32", "gw": "10.0.0.1"}, {"dst": "fd00:ec2::254/128", "gw": "2001:db8::1"}])


@pytest.mark.parametrize("cni_version", ALL_VERSIONS)
def test_seed_ipv6_only_example(plugin, cni_version):
    outcome = succeeded(plugin.run("ADD", netconf(SEED_IPV6, cni_version)))
    assert outcome.json == expected(cni_version, [("6", "2001:db8::2/64", "2001:db8::1")], [])


def test_seed_examples_exact_shapes_spelled_out(plugin):
    """The three shapes written out once by hand, so the expected() helper is itself checked."""
    legacy = succeeded(plugin.run("ADD", netconf(SEED_DUAL, "0.2.0"))).json
    assert legacy == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1",
                "routes": [{"dst": "169.254.170.2/32", "gw": "10.0.0.1"}]},
        "ip6": {"ip": "2001:db8::2/64", "gateway": "2001:db8::1",
                "routes": [{"dst": "fd00:ec2::254/128", "gw": "2001:db8::1"}]},
        "dns": {},
    }
    delete(plugin, SEED_DUAL)
    rich = succeeded(plugin.run("ADD", netconf(SEED_DUAL, "0.4.0"))).json
    assert rich == {
        "cniVersion": "0.4.0",
        "ips": [{"version": "4", "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                {"version": "6", "address": "2001:db8::2/64", "gateway": "2001:db8::1"}],
        "routes": [{"dst": "169.254.170.2/32", "gw": "10.0.0.1"},
                   {"dst": "fd00:ec2::254/128", "gw": "2001:db8::1"}],
        "dns": {},
    }
    delete(plugin, SEED_DUAL)
    modern = succeeded(plugin.run("ADD", netconf(SEED_DUAL, "1.0.0"))).json
    assert modern == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                {"address": "2001:db8::2/64", "gateway": "2001:db8::1"}],
        "routes": [{"dst": "169.254.170.2/32", "gw": "10.0.0.1"},
                   {"dst": "fd00:ec2::254/128", "gw": "2001:db8::1"}],
        "dns": {},
    }


def test_seed_example_twice_is_a_duplicate_id(plugin):
    add(plugin, SEED_IPV4)
    failed(plugin.run("ADD", netconf(SEED_IPV4)), 102, "'12345'", "10.0.0.2")


# -- result shape details -------------------------------------------------------------------

@pytest.mark.parametrize("cni_version", [None, ""])
def test_missing_or_empty_cni_version_means_0_1_0(plugin, cni_version):
    conf = netconf(V4, None) if cni_version is None else netconf(V4, cni_version)
    outcome = succeeded(plugin.run("ADD", conf))
    assert outcome.json == {"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.2/24", "gateway": "10.0.0.1"},
                            "dns": {}}


@pytest.mark.parametrize("cni_version", ALL_VERSIONS)
def test_never_interfaces_and_result_version_is_the_configs(plugin, cni_version):
    result = add(plugin, DUAL, cni_version)
    assert result["cniVersion"] == cni_version
    assert "interfaces" not in result
    for entry in result.get("ips", []):
        assert "interface" not in entry


def test_routes_ipv4_first_then_ipv6_with_family_gateways(plugin):
    ipam = {"ipv6-subnet": "2001:db8::/64", "ipv6-routes": [{"dst": "::/0"}, {"dst": "fd00::/8", "gw": "2001:db8::9"}],
            "ipv4-subnet": "10.0.0.0/24", "ipv4-gateway": "10.0.0.254", "ipv4-routes": [{"dst": "0.0.0.0/0"}]}
    result = add(plugin, ipam)
    # With the gateway elsewhere, .1 is an ordinary host address.
    assert result["ips"] == [{"address": "10.0.0.1/24", "gateway": "10.0.0.254"},
                             {"address": "2001:db8::2/64", "gateway": "2001:db8::1"}]
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.0.0.254"},
                                {"dst": "::/0", "gw": "2001:db8::1"},
                                {"dst": "fd00::/8", "gw": "2001:db8::9"}]


def test_addresses_and_route_destinations_are_printed_canonically(plugin):
    ipam = {"ipv6-subnet": "2001:DB8:0:0::/64", "ipv6-gateway": "2001:0db8:0000::0001",
            "ipv6-address": "2001:DB8::00AB/64",
            "ipv6-routes": [{"dst": "FD00:EC2:0:0::254/128", "gw": "2001:DB8::FE"}]}
    result = add(plugin, ipam)
    assert result["ips"] == [{"address": "2001:db8::ab/64", "gateway": "2001:db8::1"}]
    assert result["routes"] == [{"dst": "fd00:ec2::254/128", "gw": "2001:db8::fe"}]


def test_static_address_echoes_its_own_prefix(plugin):
    result = add(plugin, {**DUAL, "ipv4-address": "10.0.0.7/16", "ipv6-address": "2001:db8::2/128"})
    assert [ip["address"] for ip in result["ips"]] == ["10.0.0.7/16", "2001:db8::2/128"]


def test_subnet_with_host_bits_is_taken_as_its_network(plugin):
    result = add(plugin, {"ipv4-subnet": "10.0.0.5/24", "ipv6-subnet": "2001:db8::77/64"})
    assert result["ips"] == [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"},
                             {"address": "2001:db8::2/64", "gateway": "2001:db8::1"}]
    # ... and it is the same subnet as its network written plainly: one cursor.
    assert add_addresses(plugin, DUAL) == ["10.0.0.3/24", "2001:db8::3/64"]
    assert held_addresses(plugin)["10.0.0.2"][3] == "10.0.0.0/24"


def test_subnet_spellings_share_one_cursor(plugin):
    assert add_address(plugin, {"ipv6-subnet": "2001:DB8:0::/64"}) == "2001:db8::2"
    assert add_address(plugin, {"ipv6-subnet": "2001:0db8:0000:0000::/64"}) == "2001:db8::3"
    assert listing(plugin)["cursors"] == {"2001:db8::/64": "2001:db8::3"}


def test_ipv6_all_ones_address_is_allocatable_statically(plugin):
    result = add(plugin, {**V6, "ipv6-address": "2001:db8::ffff:ffff:ffff:ffff/64"})
    assert result["ips"] == [{"address": "2001:db8::ffff:ffff:ffff:ffff/64", "gateway": "2001:db8::1"}]


def test_ipv6_all_ones_address_is_allocatable_automatically(plugin):
    ipam = {"ipv6-subnet": "2001:db8::/126"}
    assert add_address(plugin, ipam) == "2001:db8::2"
    assert add_address(plugin, ipam) == "2001:db8::3"


def test_runtime_extras_are_tolerated(plugin):
    conf = netconf(V4, args={"cni": {"ips": ["10.0.0.9"]}, "anything": [1, 2]},
                   runtimeConfig={"ips": ["10.0.0.9/24"], "portMappings": []},
                   dns={"nameservers": ["10.0.0.53"]}, someVendorKey={"x": 1})
    outcome = succeeded(plugin.run("ADD", conf, env={
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web;junk;=;a=b=c", "CNI_NETNS": "/nonexistent/netns",
        "CNI_PATH": "/nowhere", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth1"}))
    assert outcome.json["ips"] == [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    assert "unknown" not in outcome.stderr


def test_ecs_agent_config_as_it_sends_it(plugin):
    """The ECS agent's IPAMConfig: cniVersion and type inside ipam, an empty id, the ECS subnet."""
    conf = {"type": "ecs-bridge", "cniVersion": "0.3.0", "name": "ecs-task-network", "bridge": "ecs-bridge",
            "isGateway": False, "isDefaultGateway": False, "forceAddress": False, "ipMasq": False, "mtu": 0,
            "hairpinMode": False,
            "ipam": {"cniVersion": "0.3.0", "type": "ecs-ipam", "id": "", "ipv4-subnet": "169.254.172.0/22",
                     "ipv4-routes": [{"dst": "169.254.170.2/32"}]}}
    outcome = succeeded(plugin.run("ADD", conf, env={"CNI_CONTAINERID": "container-id", "CNI_IFNAME": "eth0",
                                                     "CNI_NETNS": "/proc/1234/ns/net", "CNI_PATH": "/ecs/cni"}))
    assert outcome.json == {"cniVersion": "0.3.0",
                            "ips": [{"version": "4", "address": "169.254.172.2/22", "gateway": "169.254.172.1"}],
                            "routes": [{"dst": "169.254.170.2/32", "gw": "169.254.172.1"}], "dns": {}}
    assert outcome.stderr == ""


def test_only_cni_command_is_needed(plugin):
    outcome = succeeded(plugin.run("ADD", netconf(V4), env={"CNI_IFNAME": None}))
    assert outcome.json["ips"][0]["address"] == "10.0.0.2/24"


def test_unknown_ipam_key_warns_on_stderr_but_succeeds(plugin):
    outcome = succeeded(plugin.run("ADD", netconf({**V4, "ipv4-gatway": "10.0.0.254"})))
    assert "ipv4-gatway" in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1
    # The typo was not taken as the gateway.
    assert outcome.json["ips"] == [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]


def test_null_means_absent(plugin):
    ipam = {**V4, "id": None, "ipv4-address": None, "ipv4-gateway": None,
            "ipv4-routes": [{"dst": "169.254.170.2/32", "gw": None}], "ipv6-subnet": None,
            "ipv6-address": None, "ipv6-gateway": None, "ipv6-routes": None}
    result = add(plugin, ipam)
    assert result["ips"] == [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    assert result["routes"] == [{"dst": "169.254.170.2/32", "gw": "10.0.0.1"}]
    # id null is no id: the same config may ADD again.
    assert add_address(plugin, ipam) == "10.0.0.3"


def test_empty_id_means_no_id(plugin):
    assert [add_address(plugin, {**V4, "id": ""}) for _ in range(3)] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]


@pytest.mark.parametrize("holder", ["x" * 256, "é" * 128, "task/arn:aws:ecs:1 2\n\t\"'{}", "☃"])
def test_id_of_any_characters_up_to_256_bytes(plugin, holder):
    assert add_address(plugin, {**V4, "id": holder}) == "10.0.0.2"
    failed(plugin.run("ADD", netconf({**V4, "id": holder})), 102, repr(holder))
    delete(plugin, {**V4, "id": holder})
    assert_free(plugin, V4, "10.0.0.2")


def test_add_records_id_container_ifname_and_subnet(plugin):
    add(plugin, {**DUAL, "id": "task-1"}, env={"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth1"})
    add(plugin, {"ipv4-subnet": "10.0.0.0/16"}, env={"CNI_IFNAME": None})
    before = time.time()
    assert held_addresses(plugin) == {
        "10.0.0.2": ("task-1", "c1", "eth1", "10.0.0.0/24"),
        "10.0.0.3": (None, None, None, "10.0.0.0/16"),
        "2001:db8::2": ("task-1", "c1", "eth1", "2001:db8::/64"),
    }
    for allocation in listing(plugin)["allocations"]:
        assert before - 60 < allocation["allocated_at"] <= before + 1


def test_rejected_adds_leave_the_listing_unchanged(plugin):
    add(plugin, {**DUAL, "id": "a"})
    add(plugin, {"ipv4-subnet": "10.9.0.0/30"})
    before = listing(plugin)
    for ipam in ({**V4, "id": "a"}, {"ipv4-subnet": "10.9.0.0/30"}, {**V4, "ipv4-address": "10.0.0.2/24"},
                 {**DUAL, "ipv6-address": "2001:db8::2/64"}, {**V4, "ipv4-subnet": "10.0.0.0/31"}):
        assert plugin.run("ADD", netconf(ipam)).code == 1
    assert listing(plugin) == before


# -- allocation order -----------------------------------------------------------------------

def test_allocation_order_from_the_behaviour_contract(plugin):
    other = {"ipv4-subnet": "10.1.0.0/24"}
    assert add_address(plugin, {**V4, "id": "a"}) == "10.0.0.2"
    assert add_address(plugin, other) == "10.1.0.2"
    assert add_address(plugin, {**V4, "id": "b"}) == "10.0.0.3"
    assert add_address(plugin, {**V4, "id": "s", "ipv4-address": "10.0.0.10/24"}) == "10.0.0.10"
    assert add_address(plugin, other) == "10.1.0.3"
    assert add_address(plugin, {**V4, "id": "c"}) == "10.0.0.11"
    delete(plugin, {**V4, "id": "b"})
    assert add_address(plugin, other) == "10.1.0.4"
    assert add_address(plugin, {**V4, "id": "d"}) == "10.0.0.4"
    assert add_address(plugin, {**V4, "id": "e"}) == "10.0.0.5"


def test_released_address_is_reused_last(plugin):
    ipam = {"ipv4-subnet": "10.0.0.0/29"}  # hosts .1-.6, .1 the gateway
    assert [add_address(plugin, ipam) for _ in range(3)] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    delete(plugin, {**ipam, "ipv4-address": "10.0.0.3/29"})
    assert [add_address(plugin, ipam) for _ in range(3)] == ["10.0.0.5", "10.0.0.6", "10.0.0.3"]
    failed(plugin.run("ADD", netconf(ipam)), 101, "10.0.0.0/29")


def test_search_wraps_around_and_skips_the_gateway(plugin):
    ipam = {"ipv4-subnet": "10.0.0.0/29", "ipv4-gateway": "10.0.0.3"}
    assert [add_address(plugin, ipam) for _ in range(5)] == \
        ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    delete(plugin, {**ipam, "ipv4-address": "10.0.0.2/29"})
    delete(plugin, {**ipam, "ipv4-address": "10.0.0.5/29"})
    # Cursor at .5 (the last release): .6 held, wrap to .1 held, then .2.
    assert add_address(plugin, ipam) == "10.0.0.2"
    assert add_address(plugin, ipam) == "10.0.0.5"


def test_ipv6_allocation_order(plugin):
    assert [add_address(plugin, V6) for _ in range(3)] == ["2001:db8::2", "2001:db8::3", "2001:db8::4"]
    assert add_address(plugin, {**V6, "ipv6-address": "2001:db8::a/64"}) == "2001:db8::a"
    assert add_address(plugin, V6) == "2001:db8::b"


def test_dual_stack_allocates_each_family_from_its_own_subnet(plugin):
    add(plugin, {**V4, "ipv4-address": "10.0.0.50/24"})
    assert add_addresses(plugin, {**DUAL, "id": "d"}) == ["10.0.0.51/24", "2001:db8::2/64"]


def test_no_id_may_add_many_times(plugin):
    addresses = [add_address(plugin, V4) for _ in range(12)]
    assert addresses == [f"10.0.0.{n}" for n in range(2, 14)]


def test_duplicate_id_names_the_id_and_its_address(plugin):
    add(plugin, {**V4, "id": "task-1"})
    before = store_files(plugin)
    error = failed(plugin.run("ADD", netconf({**V4, "id": "task-1"})), 102, "'task-1'", "10.0.0.2")
    assert error["cniVersion"] == "1.1.0"
    assert store_files(plugin) == before
    assert add_address(plugin, {**V4, "id": "task-2"}) == "10.0.0.3"


def test_duplicate_id_in_one_family_fails_a_dual_stack_add_whole(plugin):
    add(plugin, {**V6, "id": "task-1"})
    before = store_files(plugin)
    failed(plugin.run("ADD", netconf({**DUAL, "id": "task-1"})), 102, "'task-1'", "2001:db8::2")
    assert store_files(plugin) == before
    assert add_address(plugin, V4) == "10.0.0.2"


def test_an_id_may_hold_one_address_per_family(plugin):
    assert add_address(plugin, {**V4, "id": "task-1"}) == "10.0.0.2"
    assert add_address(plugin, {**V6, "id": "task-1"}) == "2001:db8::2"


@pytest.mark.parametrize("subnet, count", [("10.0.0.0/30", 1), ("10.0.0.0/29", 5), ("2001:db8::/126", 2)])
def test_exhaustion_names_the_subnet_and_its_size(plugin, subnet, count):
    family = "ipv6" if ":" in subnet else "ipv4"
    ipam = {f"{family}-subnet": subnet}
    for _ in range(count):
        add(plugin, ipam)
    before = store_files(plugin)
    failed(plugin.run("ADD", netconf(ipam)), 101, subnet, f" {count} ")
    assert store_files(plugin) == before


def test_static_address_held_names_the_holder(plugin):
    add(plugin, {**V4, "id": "owner", "ipv4-address": "10.0.0.9/24"})
    before = store_files(plugin)
    failed(plugin.run("ADD", netconf({**V4, "id": "other", "ipv4-address": "10.0.0.9/24"})), 100,
           "10.0.0.9", "'owner'")
    assert store_files(plugin) == before


def test_static_address_held_without_id(plugin):
    assert add_address(plugin, V4) == "10.0.0.2"
    error = failed(plugin.run("ADD", netconf({**V4, "ipv4-address": "10.0.0.2/24"})), 100, "10.0.0.2")
    assert "None" not in error["msg"]


def test_static_address_taken_automatically_before_is_refused(plugin):
    add(plugin, {**V4, "id": "auto"})
    failed(plugin.run("ADD", netconf({**V4, "ipv4-address": "10.0.0.2/24"})), 100, "10.0.0.2", "'auto'")


@pytest.mark.parametrize("ipam, gateway", [
    ({**V4, "ipv4-address": "10.0.0.1/24"}, "10.0.0.1"),
    ({**V4, "ipv4-gateway": "10.0.0.254", "ipv4-address": "10.0.0.254/24"}, "10.0.0.254"),
    ({**V6, "ipv6-address": "2001:db8::1/64"}, "2001:db8::1"),
])
def test_static_address_equal_to_the_gateway_is_refused(plugin, ipam, gateway):
    failed(plugin.run("ADD", netconf(ipam)), 100, gateway, "gateway")
    assert store_files(plugin) == {}


def test_dual_stack_is_all_or_nothing(plugin):
    add(plugin, {**V6, "id": "holder6", "ipv6-address": "2001:db8::5/64"})
    add(plugin, {**V4, "id": "first"})  # 10.0.0.2, cursor there
    before = store_files(plugin)
    failed(plugin.run("ADD", netconf({**DUAL, "id": "new", "ipv4-address": "10.0.0.20/24",
                                      "ipv6-address": "2001:db8::5/64"})), 100, "2001:db8::5", "'holder6'")
    failed(plugin.run("ADD", netconf({**DUAL, "id": "new2", "ipv6-address": "2001:db8::5/64"})), 100,
           "2001:db8::5")
    assert store_files(plugin) == before
    # Neither the automatic IPv4 address nor the static 10.0.0.20 was kept, nor did a cursor move.
    assert add_addresses(plugin, {**DUAL, "id": "new"}) == ["10.0.0.3/24", "2001:db8::6/64"]
    assert_free(plugin, V4, "10.0.0.20")


def test_dual_stack_with_one_family_exhausted_stores_nothing(plugin):
    small6 = {"ipv6-subnet": "2001:db8::/126"}
    add(plugin, small6)
    add(plugin, small6)
    before = store_files(plugin)
    failed(plugin.run("ADD", netconf({**V4, **small6, "id": "d"})), 101, "2001:db8::/126")
    assert store_files(plugin) == before
    assert add_address(plugin, V4) == "10.0.0.2"


def test_overlapping_subnets_share_addresses(plugin):
    wide, narrow = {"ipv4-subnet": "10.0.0.0/16"}, {"ipv4-subnet": "10.0.0.0/24"}
    assert add_address(plugin, {**wide, "id": "w"}) == "10.0.0.2"
    assert add_address(plugin, narrow) == "10.0.0.3"
    assert add_address(plugin, wide) == "10.0.0.4"
    failed(plugin.run("ADD", netconf({**narrow, "ipv4-address": "10.0.0.2/24"})), 100, "10.0.0.2", "'w'")
    # A DEL through the other config releases the shared address.
    delete(plugin, {**narrow, "ipv4-address": "10.0.0.4/24"})
    assert_free(plugin, wide, "10.0.0.4")


def test_changing_a_networks_subnet_does_not_wedge_it(plugin):
    small = {"ipv4-subnet": "10.0.0.0/29"}
    assert [add_address(plugin, small) for _ in range(3)] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    moved = {"ipv4-subnet": "10.9.0.0/24"}
    assert add_address(plugin, moved) == "10.9.0.2"
    assert add_address(plugin, small) == "10.0.0.5"


# -- cost -----------------------------------------------------------------------------------

@pytest.mark.parametrize("ipam", [
    {"ipv6-subnet": "2001:db8::/64", "ipv6-address": "2001:db8::ffff:ffff:ffff:ffff/64"},
    {"ipv6-subnet": "::/0", "ipv6-gateway": "::2", "ipv6-address": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/0"},
    {"ipv4-subnet": "0.0.0.0/0", "ipv4-address": "255.255.255.254/0"},
])
def test_huge_subnets_are_never_enumerated(plugin, ipam):
    """The cursor sits on the last address; the next automatic ADD wraps at once."""
    add(plugin, {**ipam, "id": "last"})
    family = "ipv6" if "ipv6-subnet" in ipam else "ipv4"
    auto = {k: v for k, v in ipam.items() if not k.endswith("-address")}
    start = time.monotonic()
    address = add_address(plugin, auto)
    elapsed = time.monotonic() - start
    assert elapsed < 60, elapsed  # enumerating would take hours; a loaded machine's ADD, seconds at most
    last = ipam[f"{family}-address"].split("/")[0]
    expected_next = {"2001:db8::ffff:ffff:ffff:ffff": "2001:db8::2",
                     "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                     "255.255.255.254": "0.0.0.2"}[last]
    assert address == expected_next


def test_many_allocations_stay_sequential_and_distinct(plugin):
    """Enough ADDs to fold the journal into the snapshot at least once; none lost, none twice."""
    ipam = {"ipv4-subnet": "10.0.0.0/16"}
    addresses = [add_address(plugin, {**ipam, "id": f"t{n}"}) for n in range(300)]
    assert addresses == [f"10.0.{(n + 2) // 256}.{(n + 2) % 256}" for n in range(300)]
    failed(plugin.run("ADD", netconf({**ipam, "id": "t7"})), 102, "'t7'", "10.0.0.9")
    delete(plugin, {**ipam, "id": "t150"})
    assert_free(plugin, ipam, "10.0.0.152")
    assert_held(plugin, ipam, "10.0.0.153", "t151")
