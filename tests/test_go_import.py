"""ecs_ipam.go_import: the Go plugin's keys become allocations and cursors, or an error naming what does not fit."""

import ipaddress
import struct

import pytest

from ecs_ipam.bolt import read_bucket
from ecs_ipam.errors import CNIError
from ecs_ipam.go_import import BUCKET, address_of_key, plan_import
from ecs_ipam.store import Allocation
from go_fixtures import fixture

NOW = 1_700_000_000
V4 = ipaddress.ip_network("10.0.0.0/24")
V6 = ipaddress.ip_network("2001:db8::/64")
ip = ipaddress.ip_address


def libkv(payload, counter=1):
    return struct.pack("<Q", counter) + payload


def pairs(*items):
    return [(key, libkv(payload)) for key, payload in items]


def refused(items, subnets, *fragments):
    with pytest.raises(CNIError) as caught:
        plan_import(items, subnets, NOW)
    text = caught.value.msg + " " + caught.value.details
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


def test_ipv4_basic():
    plan = plan_import(read_bucket(str(fixture("ipv4-basic")[0]), BUCKET), [V4], NOW)
    assert plan.allocations == [Allocation(ip("10.0.0.2"), "c1", None, None, V4, NOW),
                                Allocation(ip("10.0.0.10"), "c3", None, None, V4, NOW),
                                Allocation(ip("10.0.0.11"), None, None, None, V4, NOW)]
    assert plan.cursors == {V4: ip("10.0.0.3")}
    assert plan.gateways == [ip("10.0.0.1")]
    [note] = plan.notes
    assert "10.0.0.11" in note and "without an id" in note


def test_dual_stack():
    plan = plan_import(read_bucket(str(fixture("dual-stack")[0]), BUCKET), [V4, V6], NOW)
    assert [(str(a.address), a.id, a.subnet) for a in plan.allocations] == [
        ("10.0.0.2", "d1", V4), ("10.0.0.4", "d3", V4),
        ("2001:db8::2", "d1", V6), ("2001:db8::4", "d3", V6), ("2001:db8::5", "v6only", V6)]
    assert plan.cursors == {V4: ip("10.0.0.3"), V6: ip("2001:db8::5")}
    assert plan.gateways == [ip("10.0.0.1"), ip("2001:db8::1")]
    assert plan.notes == []


def test_a_family_without_its_subnet_is_refused():
    items = read_bucket(str(fixture("dual-stack")[0]), BUCKET)
    refused(items, [V4], "no subnet given", "2001:db8::2", "3 IPv6")
    refused(items, [V6], "no subnet given", "10.0.0.2", "2 IPv4")


def test_an_address_outside_its_subnet_is_refused():
    items = pairs((b"10.0.0.2", b"c1"), (b"10.0.1.7", b"c2"))
    refused(items, [V4], "10.0.1.7", "outside the IPv4 subnets (10.0.0.0/24)")
    assert "10.0.0.2" not in refused(items, [V4])


def test_many_addresses_outside_are_counted_not_all_named():
    items = pairs(*[(f"10.9.0.{n}".encode(), b"x") for n in range(2, 40)])
    text = refused(items, [V4], "38 IPv4", "and 28 more")
    assert "10.9.0.39" not in text


def test_an_empty_id_is_no_id():
    [allocation] = plan_import(pairs((b"10.0.0.5", b"")), [V4], NOW).allocations
    assert allocation.id is None


def test_one_id_holding_two_addresses_of_a_family_keeps_both_and_says_so():
    plan = plan_import(pairs((b"10.0.0.2", b"task"), (b"10.0.0.3", b"task"), (b"62001:db8::2", b"task")),
                       [V4, V6], NOW)
    assert [str(a.address) for a in plan.allocations if a.id == "task"] == ["10.0.0.2", "10.0.0.3", "2001:db8::2"]
    [note] = plan.notes
    assert "'task' holds 2 IPv4 addresses (10.0.0.2, 10.0.0.3)" in note and "102" in note


def test_a_cursor_without_addresses_or_subnet_is_left_out_with_a_note():
    plan = plan_import(pairs((b"10.0.0.2", b"c1"), (b"lastKnownIPv6", b"2001:db8::9")), [V4], NOW)
    assert plan.cursors == {}
    [note] = plan.notes
    assert "lastKnownIPv6 2001:db8::9" in note and "no IPv6 subnet given contains it" in note


def test_a_cursor_outside_its_subnet_is_left_out_with_a_note():
    plan = plan_import(pairs((b"10.0.0.2", b"c1"), (b"lastKnownIP", b"10.5.0.9")), [V4], NOW)
    assert plan.cursors == {}
    assert "lastKnownIP 10.5.0.9" in plan.notes[0] and "no IPv4 subnet given contains it" in plan.notes[0]


def test_a_cursor_that_is_not_an_address_of_its_family():
    refused(pairs((b"lastKnownIP", b"2001:db8::9")), [V4, V6], "lastKnownIP", "IPv4")
    refused(pairs((b"lastKnownIPv6", b"garbage")), [V4, V6], "lastKnownIPv6", "garbage")


@pytest.mark.parametrize("key", [b"hello", b"10.0.0.256", b"2001:db8::2", b"6fe80::1%eth0", b"6", b"\xff"])
def test_a_key_that_is_not_an_address_is_refused(key):
    refused(pairs((key, b"x")), [V4, V6], repr(key), "not an address")


def test_keys_of_each_family():
    assert address_of_key(b"62001:db8::2") == ip("2001:db8::2")
    assert address_of_key(b"60.0.0.1") == ip("60.0.0.1")  # an IPv4 address that starts with 6
    assert address_of_key(b"6::1") == ip("::1")


def test_a_value_shorter_than_the_libkv_counter():
    refused([(b"10.0.0.2", b"abc")], [V4], "10.0.0.2", "3 bytes", "counter")


def test_an_id_that_is_not_utf8():
    refused(pairs((b"10.0.0.2", b"\xff\xfe")), [V4], "10.0.0.2", "UTF-8")


def test_gateways_of_either_family_are_skipped():
    plan = plan_import(pairs((b"10.0.0.1", b"GateWay"), (b"62001:db8::1", b"GateWayV6")), [], NOW)
    assert plan.allocations == [] and plan.gateways == [ip("10.0.0.1"), ip("2001:db8::1")]


def test_nothing_to_import():
    assert plan_import([], [], NOW) == ([], {}, [], [])


def test_several_subnets_of_a_family_each_address_under_the_most_specific():
    wide, narrow, other = (ipaddress.ip_network(n) for n in ("10.0.0.0/16", "10.0.5.0/24", "10.9.0.0/24"))
    plan = plan_import(pairs((b"10.0.5.7", b"a"), (b"10.0.6.7", b"b"), (b"10.9.0.2", b"c"),
                             (b"lastKnownIP", b"10.0.5.7")), [wide, other, narrow], NOW)
    assert [(str(a.address), a.subnet) for a in plan.allocations] == [
        ("10.0.5.7", narrow), ("10.0.6.7", wide), ("10.9.0.2", other)]
    assert plan.cursors == {narrow: ip("10.0.5.7")}
    refused(pairs((b"10.0.5.7", b"a"), (b"10.8.0.2", b"c")), [wide, other], "1 IPv4", "10.8.0.2",
            "10.0.0.0/16, 10.9.0.0/24")
