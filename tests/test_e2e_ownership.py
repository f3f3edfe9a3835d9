"""End to end: a caller releases, checks and re-ADDs only what it holds (ecs_ipam/ownership.py).

Each test is a duplicate-address path found with the built file, run as separate processes.
"""

from e2e_support import (V4, add, add_address, assert_free, assert_held, delete, failed, held_addresses,
                         netconf, silent_success, store_files)


def ctr(container, ifname="eth0"):
    return {"CNI_CONTAINERID": container, "CNI_IFNAME": ifname}


STATIC_10 = {**V4, "ipv4-address": "10.0.0.10/24"}


def test_static_del_without_id_from_another_container_spares_the_holder(plugin):
    """Case 1: C1 holds static .10 under id a; C2's DEL of the same static config, no id, frees nothing."""
    add(plugin, {**STATIC_10, "id": "a"}, env=ctr("c1"))
    before = store_files(plugin)
    delete(plugin, STATIC_10, env=ctr("c2"))
    assert store_files(plugin) == before
    assert_held(plugin, V4, "10.0.0.10", "a")


def test_bridge_del_after_a_failed_add_spares_the_holder_without_ids(plugin):
    """Case 2: no ids. C2's ADD fails, the bridge's DEL for C2 must not free C1's address for C3."""
    add(plugin, STATIC_10, env=ctr("c1"))
    failed(plugin.run("ADD", netconf(STATIC_10), env=ctr("c2")), 100, "10.0.0.10")
    delete(plugin, STATIC_10, env=ctr("c2"))
    failed(plugin.run("ADD", netconf(STATIC_10), env=ctr("c3")), 100, "10.0.0.10")
    assert held_addresses(plugin)["10.0.0.10"][:2] == (None, "c1")


def test_bridge_del_after_a_failed_add_with_the_networks_id_spares_the_holder(plugin):
    """The seed README's config carries one id for the network: a second container's ADD fails
    (102), and the bridge's DEL for it names the same id but another container."""
    ipam = {**V4, "id": "12345"}
    assert add_address(plugin, ipam, env=ctr("c1")) == "10.0.0.2"
    failed(plugin.run("ADD", netconf(ipam), env=ctr("c2")), 102, "'12345'")
    delete(plugin, ipam, env=ctr("c2"))
    assert_held(plugin, V4, "10.0.0.2", "12345")
    delete(plugin, ipam, env=ctr("c1"))
    assert_free(plugin, V4, "10.0.0.2")


NETLIB = ctr("container-id", "eth0")  # netlib's constant container id and ifname


def test_netlib_del_without_id_or_address_releases_nothing(plugin):
    """Case 3: three tasks under one constant CNI_CONTAINERID; a DEL naming no id frees none of them."""
    tasks = [f"/var/run/netns/task{n}-eni" for n in range(3)]
    ipam = {"ipv4-subnet": "169.254.172.0/22"}
    held = [add_address(plugin, {**ipam, "id": task}, env=NETLIB) for task in tasks]
    before = store_files(plugin)
    outcome = silent_success(plugin.run("DEL", netconf(ipam), env=NETLIB))
    assert store_files(plugin) == before
    assert "none of the 3 address(es) container 'container-id' holds under ids" in outcome.stderr, outcome
    for task, address in zip(tasks, held):
        assert_held(plugin, ipam, address, task)
    delete(plugin, {**ipam, "id": tasks[1]}, env=NETLIB)  # each task's own DEL frees its own
    assert_free(plugin, ipam, held[1])
    assert_held(plugin, ipam, held[0], tasks[0])


NET_A = {"ipv4-subnet": "10.0.0.0/24"}
NET_B = {"ipv4-subnet": "10.0.0.128/25"}


def test_gc_of_one_network_spares_another_networks_allocation_in_its_range(plugin):
    """Case 4: GC of A ([c1] live) must not free c3's .130, allocated from B inside A's range."""
    assert add_address(plugin, NET_A, env=ctr("c1")) == "10.0.0.2"
    assert add_address(plugin, NET_A, env=ctr("c2")) == "10.0.0.3"
    assert add_address(plugin, NET_B, env=ctr("c3")) == "10.0.0.130"  # B's gateway is .129
    gc = netconf(NET_A, **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]})
    silent_success(plugin.run("GC", gc))
    held = held_addresses(plugin)
    assert sorted(held) == ["10.0.0.130", "10.0.0.2"], held  # c2's .3 was A's to collect
    assert held["10.0.0.130"] == (None, "c3", "eth0", "10.0.0.128/25")


def test_del_by_container_of_one_network_spares_its_other_network(plugin):
    """Case 5: C1 on A without CNI_IFNAME, on B as eth1; the DEL of B for eth1 leaves A's address."""
    assert add_address(plugin, {"ipv4-subnet": "10.1.0.0/24"}, env={"CNI_CONTAINERID": "c1", "CNI_IFNAME": None}) \
        == "10.1.0.2"
    assert add_address(plugin, {"ipv4-subnet": "10.2.0.0/24"}, env=ctr("c1", "eth1")) == "10.2.0.2"
    delete(plugin, {"ipv4-subnet": "10.2.0.0/24"}, env=ctr("c1", "eth1"))
    held = held_addresses(plugin)
    assert list(held) == ["10.1.0.2"], held


def test_check_compares_the_subnet_and_the_prefix(plugin):
    """Case 6: id t holds 10.0.0.2/24: CHECK of another subnet, or of prevResult /16, fails."""
    result = add(plugin, {**V4, "id": "t"})
    assert result["ips"][0]["address"] == "10.0.0.2/24"
    silent_success(plugin.run("CHECK", netconf({**V4, "id": "t"}, prevResult=result)))
    failed(plugin.run("CHECK", netconf({"ipv4-subnet": "10.9.0.0/24", "id": "t"})), 103, "10.9.0.0/24")
    wrong_prefix = {**result, "ips": [{**result["ips"][0], "address": "10.0.0.2/16"}]}
    failed(plugin.run("CHECK", netconf({**V4, "id": "t"}, prevResult=wrong_prefix)), 103, "10.0.0.2/16")


def test_check_of_a_static_address_compares_its_own_prefix(plugin):
    ipam = {**V4, "id": "t", "ipv4-address": "10.0.0.7/32"}
    result = add(plugin, ipam)
    assert result["ips"][0]["address"] == "10.0.0.7/32"
    silent_success(plugin.run("CHECK", netconf(ipam, prevResult=result)))
    as_subnet = {**result, "ips": [{**result["ips"][0], "address": "10.0.0.7/24"}]}
    failed(plugin.run("CHECK", netconf(ipam, prevResult=as_subnet)), 103, "10.0.0.7/24")


def test_a_retried_add_without_id_gets_the_address_it_holds(plugin):
    """Case 7: a runtime without ipam ids retries an ADD: the same address, not a second one."""
    first = add(plugin, V4, env=ctr("c1"))
    again = add(plugin, V4, env=ctr("c1"))
    assert again == first
    assert list(held_addresses(plugin)) == ["10.0.0.2"]
    assert add_address(plugin, V4, env=ctr("c1", "eth1")) == "10.0.0.3"  # another interface: its own
    assert add_address(plugin, V4, env=ctr("c2")) == "10.0.0.4"
    delete(plugin, V4, env=ctr("c1"))
    assert sorted(held_addresses(plugin)) == ["10.0.0.3", "10.0.0.4"]


def test_a_retried_add_with_an_id_is_still_a_duplicate(plugin):
    """With an id the Go plugin's 102 stays: netlib's constant container id must not share addresses."""
    add(plugin, {**V4, "id": "task"}, env=NETLIB)
    failed(plugin.run("ADD", netconf({**V4, "id": "task"}), env=NETLIB), 102, "'task'", "10.0.0.2")
    assert add_address(plugin, {**V4, "id": "other-task"}, env=NETLIB) == "10.0.0.3"


def test_a_retried_add_of_another_static_address_is_refused(plugin):
    add(plugin, STATIC_10, env=ctr("c1"))
    before = store_files(plugin)
    failed(plugin.run("ADD", netconf({**V4, "ipv4-address": "10.0.0.11/24"}), env=ctr("c1")), 102,
           "10.0.0.10", "10.0.0.11")
    assert store_files(plugin) == before
