"""End to end: DEL, CHECK, GC and STATUS as a runtime runs them."""

import pytest

from e2e_support import (DUAL, V4, V6, add, add_address, add_addresses, assert_free, assert_held, delete,
                         failed, held_addresses, netconf, silent_success, store_files)

C1 = {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}
C2 = {"CNI_CONTAINERID": "c2", "CNI_IFNAME": "eth0"}


# -- DEL ------------------------------------------------------------------------------------

def test_del_by_address_of_an_anonymous_allocation(plugin):
    """No id and no container on either side: the address alone identifies it."""
    add(plugin, {**V4, "ipv4-address": "10.0.0.10/24"})
    delete(plugin, {**V4, "ipv4-address": "10.0.0.10/24"})
    assert_free(plugin, V4, "10.0.0.10")


def test_del_by_address_and_its_id(plugin):
    add(plugin, {**V4, "id": "a", "ipv4-address": "10.0.0.10/24"})
    delete(plugin, {**V4, "id": "a", "ipv4-address": "10.0.0.10/24"})
    assert_free(plugin, V4, "10.0.0.10")


def test_del_by_address_without_id_releases_an_address_held_without_id(plugin):
    assert add_address(plugin, V4) == "10.0.0.2"
    delete(plugin, {**V4, "ipv4-address": "10.0.0.2/24"})
    assert_free(plugin, V4, "10.0.0.2")


def test_del_by_id_releases_every_family(plugin):
    assert add_addresses(plugin, {**DUAL, "id": "task"}) == ["10.0.0.2/24", "2001:db8::2/64"]
    delete(plugin, {**V4, "id": "task"})  # a config naming only IPv4 still frees what the id holds
    assert_free(plugin, DUAL, "10.0.0.2")
    assert_free(plugin, DUAL, "2001:db8::2")


def test_del_by_id_leaves_other_ids_alone(plugin):
    add(plugin, {**V4, "id": "a"})
    add(plugin, {**V4, "id": "b"})
    delete(plugin, {**V4, "id": "a"})
    assert_free(plugin, V4, "10.0.0.2")
    assert_held(plugin, V4, "10.0.0.3", "b")


def test_del_by_container_and_ifname_recorded_at_add(plugin):
    assert add_address(plugin, V4, env=C1) == "10.0.0.2"
    assert add_address(plugin, V4, env={**C1, "CNI_IFNAME": "eth1"}) == "10.0.0.3"
    assert add_address(plugin, V4, env=C2) == "10.0.0.4"
    delete(plugin, V4, env=C1)
    assert_free(plugin, V4, "10.0.0.2")
    assert_held(plugin, V4, "10.0.0.3")
    assert_held(plugin, V4, "10.0.0.4")
    delete(plugin, V4, env={**C1, "CNI_IFNAME": "eth1"})
    assert_free(plugin, V4, "10.0.0.3")
    assert_held(plugin, V4, "10.0.0.4")


def test_del_by_container_releases_both_families(plugin):
    add(plugin, DUAL, env=C1)
    delete(plugin, DUAL, env=C1)
    assert_free(plugin, DUAL, "10.0.0.2")
    assert_free(plugin, DUAL, "2001:db8::2")


def test_del_by_container_releases_only_from_the_configs_subnets(plugin):
    add(plugin, DUAL, env=C1)
    delete(plugin, V6, env=C1)  # a config of the IPv6 subnet alone: its IPv4 address is another network's
    assert_held(plugin, DUAL, "10.0.0.2")
    assert_free(plugin, DUAL, "2001:db8::2")


def test_del_is_idempotent(plugin):
    add(plugin, {**V4, "id": "a"})
    for _ in range(2):
        delete(plugin, {**V4, "id": "a"})
        delete(plugin, {**V4, "ipv4-address": "10.0.0.2/24"})
    assert_free(plugin, V4, "10.0.0.2")


@pytest.mark.parametrize("ipam, env", [
    ({**V4, "id": "never"}, None),
    ({**V4, "ipv4-address": "10.0.0.77/24"}, None),
    ({**DUAL, "ipv6-address": "2001:db8::77/64", "id": "never"}, None),
    (V4, C1),
])
def test_del_of_what_was_never_allocated_succeeds(plugin, ipam, env):
    delete(plugin, ipam, env=env)
    add(plugin, {**V4, "id": "someone"})
    delete(plugin, ipam, env=env)
    assert_held(plugin, V4, "10.0.0.2", "someone")


def test_del_and_gc_where_there_is_no_store_create_nothing(plugin):
    """No store holds nothing: DEL and GC succeed there without making a directory or a lock file
    (a runtime's cleanup DEL pointed at the wrong store must leave no trace)."""
    directory = plugin.db_path.parent

    def release_all():
        for ipam, env in (({**V4, "id": "a"}, None), ({**V4, "ipv4-address": "10.0.0.7/24"}, None), (DUAL, C1)):
            delete(plugin, ipam, env=env)
        silent_success(gc(plugin, []))

    release_all()
    assert not directory.exists()
    directory.mkdir()
    release_all()
    assert list(directory.iterdir()) == []
    # Once there is a store, DEL takes its lock and releases as before.
    add(plugin, {**V4, "id": "a"})
    delete(plugin, {**V4, "id": "a"})
    assert_free(plugin, V4, "10.0.0.2")
    assert (directory / "ipam.db.lock").exists()


@pytest.mark.parametrize("cni_version", ["0.1.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_del_succeeds_silently_in_every_version(plugin, cni_version):
    add(plugin, {**V4, "id": "a"}, cni_version)
    delete(plugin, {**V4, "id": "a"}, cni_version=cni_version)
    delete(plugin, {**V4, "id": "a"}, cni_version=cni_version)
    assert_free(plugin, V4, "10.0.0.2")


def test_del_with_prev_result_still_succeeds(plugin):
    result = add(plugin, {**V4, "id": "a"})
    delete(plugin, {**V4, "id": "a"}, prevResult=result)
    delete(plugin, {**V4, "id": "a"}, prevResult=result)
    assert_free(plugin, V4, "10.0.0.2")


def test_del_leaves_an_address_that_went_to_another_id_alone(plugin):
    add(plugin, {**V4, "id": "old", "ipv4-address": "10.0.0.10/24"})
    delete(plugin, {**V4, "id": "old"})
    add(plugin, {**V4, "id": "new", "ipv4-address": "10.0.0.10/24"})
    before = store_files(plugin)
    delete(plugin, {**V4, "id": "old", "ipv4-address": "10.0.0.10/24"})
    assert store_files(plugin) == before
    assert_held(plugin, V4, "10.0.0.10", "new")


def test_del_with_address_and_id_spares_an_address_held_without_id(plugin):
    """With an id, the recorded id decides: an address held under none is not that id's."""
    assert add_address(plugin, {**V4, "ipv4-address": "10.0.0.10/24"}) == "10.0.0.10"
    before = store_files(plugin)
    delete(plugin, {**V4, "id": "whoever", "ipv4-address": "10.0.0.10/24"})
    assert store_files(plugin) == before


def test_del_with_one_static_address_releases_the_other_family_by_id(plugin):
    add(plugin, {**DUAL, "id": "task", "ipv4-address": "10.0.0.10/24"})
    add(plugin, {**V6, "id": "other"})
    delete(plugin, {**DUAL, "id": "task", "ipv4-address": "10.0.0.10/24"})
    assert_free(plugin, DUAL, "10.0.0.10")
    assert_free(plugin, DUAL, "2001:db8::2")
    assert_held(plugin, DUAL, "2001:db8::3", "other")


def test_bridge_del_after_a_failed_static_add_spares_the_holder(plugin):
    """bridge calls IPAM DEL after a failed ADD: that must not free the address someone else holds."""
    add(plugin, {**V4, "id": "a", "ipv4-address": "10.0.0.10/24"})
    conf = netconf({**V4, "id": "b", "ipv4-address": "10.0.0.10/24"})
    failed(plugin.run("ADD", conf, env=C2), 100, "10.0.0.10", "'a'")
    silent_success(plugin.run("DEL", conf, env=C2))
    assert_held(plugin, V4, "10.0.0.10", "a")


def test_bridge_del_after_an_add_into_an_exhausted_subnet_succeeds(plugin):
    add(plugin, {"ipv4-subnet": "10.0.0.0/30"}, env=C1)
    conf = netconf({"ipv4-subnet": "10.0.0.0/30"})
    failed(plugin.run("ADD", conf, env=C2), 101)
    silent_success(plugin.run("DEL", conf, env=C2))
    assert_held(plugin, {"ipv4-subnet": "10.0.0.0/30"}, "10.0.0.2")


def test_del_with_nothing_to_identify_is_a_config_error(plugin):
    add(plugin, V4)
    before = store_files(plugin)
    failed(plugin.run("DEL", netconf(V4)), 7, "CNI_CONTAINERID")
    assert store_files(plugin) == before


@pytest.mark.parametrize("ipam", [
    {"ipv4-subnet": "banana", "id": "victim"},
    {**V4, "ipv4-gateway": "10.0.0.0", "id": "victim"},
    {"id": "victim"},  # no subnet at all
    {**V4, "ipv4-routes": "oops", "id": "victim", "surprise": 1},
])
def test_del_with_an_invalid_config_still_releases_by_id(plugin, ipam):
    add(plugin, {**V4, "id": "victim"})
    add(plugin, {**V4, "id": "bystander"})
    delete(plugin, ipam)
    assert_free(plugin, V4, "10.0.0.2")
    assert_held(plugin, V4, "10.0.0.3", "bystander")


def test_del_with_an_invalid_config_still_releases_by_address(plugin):
    add(plugin, {**V4, "ipv4-address": "10.0.0.10/24"})
    add(plugin, {**V6, "ipv6-address": "2001:db8::10/64"})
    delete(plugin, {"ipv4-subnet": "10.0.0.0/33", "ipv4-address": "10.0.0.10/24",
                    "ipv6-address": "2001:db8::10/64"})
    assert_free(plugin, DUAL, "10.0.0.10")
    assert_free(plugin, DUAL, "2001:db8::10")


def test_del_with_an_invalid_config_still_releases_by_container_from_its_valid_subnet(plugin):
    add(plugin, V4, env=C1)
    silent_success(plugin.run("DEL", netconf({**V4, "ipv4-gateway": "nope"}), env=C1))
    assert_free(plugin, V4, "10.0.0.2")


def test_del_without_ipam_cannot_release_by_container(plugin):
    """Release by container needs the config's subnets (overlapping networks share a store)."""
    add(plugin, V4, env=C1)
    conf = netconf(V4)
    del conf["ipam"]
    before = store_files(plugin)
    failed(plugin.run("DEL", conf, env=C1), 7, "ipam is missing")
    assert store_files(plugin) == before


def test_del_with_an_invalid_config_and_nothing_to_identify_is_a_config_error(plugin):
    failed(plugin.run("DEL", netconf({"ipv4-subnet": "banana"})), 7, "banana")


def test_del_never_releases_the_gateway(plugin):
    ipam = {"ipv4-subnet": "10.0.0.0/30"}  # .1 gateway, .2 the only host
    delete(plugin, {**ipam, "ipv4-address": "10.0.0.1/30"})
    delete(plugin, {**ipam, "ipv4-address": "10.0.0.1/30", "id": "x"})
    assert add_address(plugin, ipam) == "10.0.0.2"
    failed(plugin.run("ADD", netconf(ipam)), 101, "10.0.0.0/30")
    failed(plugin.run("ADD", netconf({**ipam, "ipv4-address": "10.0.0.1/30"})), 100, "10.0.0.1")


# -- CHECK ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cni_version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_after_add_succeeds(plugin, cni_version):
    ipam = {**DUAL, "id": "task"}
    result = add(plugin, ipam, cni_version)
    silent_success(plugin.run("CHECK", netconf(ipam, cni_version)))
    silent_success(plugin.run("CHECK", netconf(ipam, cni_version, prevResult=result)))


def test_check_by_container(plugin):
    result = add(plugin, V4, env=C1)
    silent_success(plugin.run("CHECK", netconf(V4, prevResult=result), env=C1))
    failed(plugin.run("CHECK", netconf(V4), env=C2), 103, "'c2'")


def test_check_of_a_static_address(plugin):
    ipam = {**V4, "id": "task", "ipv4-address": "10.0.0.10/24"}
    add(plugin, ipam)
    silent_success(plugin.run("CHECK", netconf(ipam)))
    failed(plugin.run("CHECK", netconf({**ipam, "ipv4-address": "10.0.0.11/24"})), 103, "10.0.0.11", "10.0.0.10")


def test_check_of_an_id_that_holds_nothing(plugin):
    failed(plugin.run("CHECK", netconf({**V4, "id": "ghost"})), 103, "'ghost'")
    add(plugin, {**V4, "id": "task"})
    delete(plugin, {**V4, "id": "task"})
    failed(plugin.run("CHECK", netconf({**V4, "id": "task"})), 103, "'task'", "IPv4")


def test_check_of_a_missing_family(plugin):
    add(plugin, {**V4, "id": "task"})
    failed(plugin.run("CHECK", netconf({**DUAL, "id": "task"})), 103, "'task'", "IPv6")


@pytest.mark.parametrize("prev_ips", [
    [{"address": "10.0.0.3/24", "gateway": "10.0.0.1"}],
    [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}, {"address": "10.0.0.3/24", "gateway": "10.0.0.1"}],
    [],
])
def test_check_prev_result_mismatch(plugin, prev_ips):
    add(plugin, {**V4, "id": "task"})
    add(plugin, {**V4, "id": "other"})
    failed(plugin.run("CHECK", netconf({**V4, "id": "task"}, prevResult={"cniVersion": "1.1.0", "ips": prev_ips})),
           103, "prevResult", "10.0.0.2")


def test_check_prev_result_of_a_0_4_0_runtime(plugin):
    result = add(plugin, {**DUAL, "id": "task"}, "0.4.0")
    assert result["ips"][0]["version"] == "4"
    silent_success(plugin.run("CHECK", netconf({**DUAL, "id": "task"}, "0.4.0", prevResult=result)))
    result["ips"] = result["ips"][:1]
    failed(plugin.run("CHECK", netconf({**DUAL, "id": "task"}, "0.4.0", prevResult=result)), 103, "IPv6")


def test_check_does_not_change_the_store(plugin):
    ipam = {**V4, "id": "task"}
    add(plugin, ipam)
    before = store_files(plugin)
    silent_success(plugin.run("CHECK", netconf(ipam)))
    failed(plugin.run("CHECK", netconf({**V4, "id": "ghost"})), 103)
    assert store_files(plugin) == before


# -- GC -------------------------------------------------------------------------------------

def gc(plugin, attachments, key="cni.dev/valid-attachments", ipam=V4):
    return plugin.run("GC", netconf(ipam, **{key: attachments}))


def populate(plugin):
    """10.0.0.2 c1/eth0, .3 c2/eth0, .4 id only, .5 c1/eth1; 10.1.0.2 c3/eth0 in another network."""
    assert add_address(plugin, V4, env=C1) == "10.0.0.2"
    assert add_address(plugin, V4, env=C2) == "10.0.0.3"
    assert add_address(plugin, {**V4, "id": "no-container"}) == "10.0.0.4"
    assert add_address(plugin, V4, env={**C1, "CNI_IFNAME": "eth1"}) == "10.0.0.5"
    assert add_address(plugin, {"ipv4-subnet": "10.1.0.0/24"}, env={"CNI_CONTAINERID": "c3"}) == "10.1.0.2"


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc_releases_what_is_not_in_the_list(plugin, key):
    populate(plugin)
    silent_success(gc(plugin, [{"containerID": "c1", "ifname": "eth0"}], key))
    assert_held(plugin, V4, "10.0.0.2")
    assert_free(plugin, V4, "10.0.0.3")
    assert_held(plugin, V4, "10.0.0.4", "no-container")
    assert_free(plugin, V4, "10.0.0.5")
    assert_held(plugin, {"ipv4-subnet": "10.1.0.0/24"}, "10.1.0.2")


def test_gc_as_the_operator_listing_sees_it(plugin):
    populate(plugin)
    silent_success(gc(plugin, [{"containerID": "c1", "ifname": "eth1"}]))
    assert held_addresses(plugin) == {
        "10.0.0.4": ("no-container", None, "eth0", "10.0.0.0/24"),
        "10.0.0.5": (None, "c1", "eth1", "10.0.0.0/24"),
        "10.1.0.2": (None, "c3", "eth0", "10.1.0.0/24"),
    }


def test_gc_with_an_empty_list_releases_every_container_allocation(plugin):
    populate(plugin)
    silent_success(gc(plugin, []))
    for address in ("10.0.0.2", "10.0.0.3", "10.0.0.5"):
        assert_free(plugin, V4, address)
    assert_held(plugin, V4, "10.0.0.4", "no-container")
    assert_held(plugin, {"ipv4-subnet": "10.1.0.0/24"}, "10.1.0.2")


def test_gc_prefers_valid_attachments_over_the_old_key(plugin):
    populate(plugin)
    silent_success(plugin.run("GC", netconf(V4, **{
        "cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "eth0"}],
        "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]})))
    assert_free(plugin, V4, "10.0.0.2")
    assert_held(plugin, V4, "10.0.0.3")


def test_gc_releases_in_both_families(plugin):
    add(plugin, DUAL, env=C1)
    add(plugin, DUAL, env=C2)
    silent_success(gc(plugin, [{"containerID": "c2", "ifname": "eth0"}], ipam=DUAL))
    assert_free(plugin, DUAL, "10.0.0.2")
    assert_free(plugin, DUAL, "2001:db8::2")
    assert_held(plugin, DUAL, "10.0.0.3")
    assert_held(plugin, DUAL, "2001:db8::3")


def test_gc_keeps_a_live_container_recorded_without_ifname(plugin):
    add(plugin, V4, env={"CNI_CONTAINERID": "c1", "CNI_IFNAME": None})
    add(plugin, V4, env={"CNI_CONTAINERID": "c2", "CNI_IFNAME": None})
    silent_success(gc(plugin, [{"containerID": "c1", "ifname": "eth0"}]))
    assert_held(plugin, V4, "10.0.0.2")
    assert_free(plugin, V4, "10.0.0.3")


def test_gc_then_del_is_still_fine(plugin):
    add(plugin, V4, env=C1)
    silent_success(gc(plugin, []))
    delete(plugin, V4, env=C1)


# -- STATUS ---------------------------------------------------------------------------------

def test_status_ok_on_a_fresh_and_a_used_store(plugin):
    silent_success(plugin.run("STATUS", netconf(DUAL)))
    assert store_files(plugin) == {}  # STATUS creates nothing
    add(plugin, DUAL)
    silent_success(plugin.run("STATUS", netconf(DUAL)))


@pytest.mark.parametrize("ipam, subnet", [
    ({"ipv4-subnet": "10.0.0.0/30"}, "10.0.0.0/30"),
    ({"ipv4-subnet": "10.0.0.0/30", **V6}, "10.0.0.0/30"),
    ({**V4, "ipv6-subnet": "2001:db8::/126"}, "2001:db8::/126"),
])
def test_status_reports_an_exhausted_subnet(plugin, ipam, subnet):
    family = "ipv6" if ":" in subnet else "ipv4"
    single = {f"{family}-subnet": subnet}
    while plugin.run("ADD", netconf(single)).code == 0:
        pass
    failed(plugin.run("STATUS", netconf(ipam)), 50, subnet)
    released = {"10.0.0.0/30": "10.0.0.2/30", "2001:db8::/126": "2001:db8::2/126"}[subnet]
    delete(plugin, {**single, f"{family}-address": released})
    silent_success(plugin.run("STATUS", netconf(ipam)))


def test_del_by_container_finds_an_allocation_recorded_without_ifname(plugin):
    """ADD without CNI_IFNAME, DEL with it: the same container's address is released, as GC would."""
    add(plugin, V4, env={"CNI_CONTAINERID": "k1", "CNI_IFNAME": None})
    silent_success(plugin.run("DEL", netconf(V4), env={"CNI_CONTAINERID": "k1", "CNI_IFNAME": "eth0"}))
    assert_free(plugin, V4, "10.0.0.2")
