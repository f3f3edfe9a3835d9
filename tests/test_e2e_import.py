"""End to end: `ecs-ipam db import-bolt` carries the Go plugin's store over, and the plugin goes on from it.

Each fixture (tests/fixtures/go-plugin-boltdb) is a store the Go plugin left; its `dump` says
who holds what. After the import, `db list` must show exactly those holders, ADD must continue
after the Go plugin's cursor without handing out an imported address, and DEL by id must release
what the id held there. The bolt file is only ever read.
"""

import ipaddress
import shutil
from pathlib import Path

import pytest

from conftest import hold_store_lock
from e2e_support import add_address, add_addresses, delete, failed, listing, netconf, run_db, store_files
from go_fixtures import CURSOR_FAMILY, NAMES, SUBNETS, fixture, go_cursors, go_holders, next_free


def flags(subnets):
    return [arg for field, cidr in subnets.items() for arg in (f"--{field}", cidr)]


def import_bolt(plugin, bolt_path, subnets, env=None):
    return run_db(plugin, ["import-bolt", str(bolt_path), *flags(subnets)], env)


def imported(plugin, bolt_path, subnets):
    outcome = import_bolt(plugin, bolt_path, subnets)
    assert outcome.code == 0, outcome
    return outcome


def unchanged(bolt_path, name):
    """The copy is byte for byte the fixture, and nothing was created beside it."""
    assert bolt_path.read_bytes() == fixture(name)[0].read_bytes()
    assert [p.name for p in bolt_path.parent.iterdir()] == ["eni-ipam.db"]
    return True


@pytest.mark.parametrize("name", NAMES)
def test_db_list_shows_exactly_the_go_plugins_holders(plugin, go_store, name):
    bolt_path = go_store(name)
    mtime = bolt_path.stat().st_mtime_ns
    dump = fixture(name)[1]["dump"]
    outcome = imported(plugin, bolt_path, SUBNETS[name])
    holders = go_holders(dump)
    assert f"imported {len(holders)} address(es)" in outcome.stdout
    subnet_of = {4: SUBNETS[name]["ipv4-subnet"], 6: SUBNETS[name].get("ipv6-subnet")}
    listed = listing(plugin)
    assert {a["address"]: a["id"] for a in listed["allocations"]} == holders
    for allocation in listed["allocations"]:
        address = ipaddress.ip_address(allocation["address"])
        assert (allocation["container"], allocation["ifname"]) == (None, None)
        assert allocation["subnet"] == subnet_of[address.version]
    assert listed["cursors"] == {SUBNETS[name][CURSOR_FAMILY[key]]: address
                                 for key, address in go_cursors(dump).items()}
    assert unchanged(bolt_path, name) and bolt_path.stat().st_mtime_ns == mtime
    check = run_db(plugin, ["check"])
    assert check.code == 0 and f"sound, {len(holders)} allocation(s)" in check.stdout, check


@pytest.mark.parametrize("name", NAMES)
def test_add_continues_after_the_imported_cursor_and_skips_imported_addresses(plugin, go_store, name):
    dump = fixture(name)[1]["dump"]
    imported(plugin, go_store(name), SUBNETS[name])
    taken = set(go_holders(dump))
    subnet = SUBNETS[name]["ipv4-subnet"]
    cursor = go_cursors(dump)["lastKnownIP"]
    for number in range(12):
        expected = next_free(subnet, cursor, taken)
        assert add_address(plugin, {"ipv4-subnet": subnet, "id": f"new-{number}"}) == expected
        taken.add(expected)
        cursor = expected
    held = {a["address"]: a["id"] for a in listing(plugin)["allocations"]}
    assert {address: held[address] for address in go_holders(dump)} == go_holders(dump)


def test_ipv4_basic_after_import_goes_on_as_the_go_plugin_would(plugin, go_store):
    imported(plugin, go_store("ipv4-basic"), SUBNETS["ipv4-basic"])
    # Go left: .2 c1, .10 c3, .11 (no id); .3 released last (the cursor), so reused last.
    got = [add_address(plugin, {"ipv4-subnet": "10.0.0.0/24", "id": f"n{n}"}) for n in range(8)]
    assert got == ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9", "10.0.0.12",
                   "10.0.0.13"]


def test_dual_stack_add_after_import(plugin, go_store):
    imported(plugin, go_store("dual-stack"), SUBNETS["dual-stack"])
    assert add_addresses(plugin, {**SUBNETS["dual-stack"], "id": "d4"}) == ["10.0.0.5/24", "2001:db8::6/64"]


@pytest.mark.parametrize("name, holder", [("ipv4-basic", "c1"), ("dual-stack", "d1"),
                                          ("ecs-link-local-1000",
                                           "arn:aws:ecs:us-west-2:123456789012:task/cluster/0000000000000000000000000000002b")])
def test_del_by_id_releases_an_imported_address(plugin, go_store, name, holder):
    dump = fixture(name)[1]["dump"]
    imported(plugin, go_store(name), SUBNETS[name])
    held_by_holder = {address for address, held in go_holders(dump).items() if held == holder}
    assert held_by_holder
    delete(plugin, {**SUBNETS[name], "id": holder})
    left = {a["address"]: a["id"] for a in listing(plugin)["allocations"]}
    assert left == {address: held for address, held in go_holders(dump).items() if held != holder}


def test_del_of_the_address_held_without_an_id(plugin, go_store):
    imported(plugin, go_store("ipv4-basic"), SUBNETS["ipv4-basic"])
    delete(plugin, {"ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.11/24"})
    assert "10.0.0.11" not in {a["address"] for a in listing(plugin)["allocations"]}


def test_an_imported_address_is_refused_to_a_static_add(plugin, go_store):
    imported(plugin, go_store("ipv4-basic"), SUBNETS["ipv4-basic"])
    outcome = plugin.run("ADD", netconf({"ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.10/24", "id": "x"}))
    failed(outcome, 100, "10.0.0.10", "'c3'")


def test_a_conflict_refuses_with_nothing_written(plugin, go_store):
    add_address(plugin, {"ipv4-subnet": "10.0.0.0/24", "ipv4-address": "10.0.0.10/24", "id": "mine"})
    before = store_files(plugin)
    bolt_path = go_store("ipv4-basic")
    outcome = import_bolt(plugin, bolt_path, SUBNETS["ipv4-basic"])
    assert outcome.code == 1 and "10.0.0.10" in outcome.stderr and "nothing was imported" in outcome.stderr, outcome
    assert outcome.stdout == ""
    assert store_files(plugin) == before
    assert unchanged(bolt_path, "ipv4-basic")


@pytest.mark.parametrize("name, subnets, fragments", [
    ("dual-stack", {"ipv4-subnet": "10.0.0.0/24"}, ["--ipv6-subnet", "2001:db8::2"]),  # a flag missing
    ("ecs-link-local-1000", {"ipv4-subnet": "169.254.172.0/23"}, ["169.254.174.0", "169.254.172.0/23"]),  # wrong
])
def test_a_missing_or_wrong_subnet_flag_refuses_with_nothing_written(plugin, go_store, name, subnets, fragments):
    bolt_path = go_store(name)
    outcome = import_bolt(plugin, bolt_path, subnets)
    assert outcome.code == 1 and outcome.stdout == "", outcome
    for fragment in fragments:
        assert fragment in outcome.stderr, (fragment, outcome)
    assert store_files(plugin) == {}
    assert unchanged(bolt_path, name)


def test_a_subnet_flag_of_the_wrong_family_is_a_usage_error(plugin, go_store):
    outcome = import_bolt(plugin, go_store("ipv4-basic"), {"ipv4-subnet": "2001:db8::/64"})
    assert outcome.code == 2 and "--ipv4-subnet" in outcome.stderr and "IPv4" in outcome.stderr, outcome


def test_a_damaged_bolt_file_is_refused_by_name(plugin, tmp_path):
    bolt_path = tmp_path / "eni-ipam.db"
    bolt_path.write_bytes(fixture("ecs-link-local-1000")[0].read_bytes()[:20 * 4096])
    outcome = import_bolt(plugin, bolt_path, SUBNETS["ecs-link-local-1000"])
    assert outcome.code == 1 and str(bolt_path) in outcome.stderr and "truncated" in outcome.stderr, outcome
    assert store_files(plugin) == {}


def test_importing_the_store_path_itself_is_refused(plugin):
    plugin.db_path.parent.mkdir(parents=True)
    shutil.copyfile(fixture("ipv4-basic")[0], plugin.db_path)
    outcome = import_bolt(plugin, plugin.db_path, SUBNETS["ipv4-basic"])
    assert outcome.code == 1 and "move the Go plugin's file away first" in outcome.stderr, outcome
    assert plugin.db_path.read_bytes() == fixture("ipv4-basic")[0].read_bytes()


def test_the_import_waits_for_the_stores_lock(plugin, go_store):
    with hold_store_lock(plugin.db_path):
        outcome = import_bolt(plugin, go_store("ipv4-basic"), SUBNETS["ipv4-basic"],
                              env={"IPAM_DB_CONNECTION_TIMEOUT": "200ms"})
    assert outcome.code == 1 and "timed out" in outcome.stderr, outcome
    assert store_files(plugin) == {}


def test_the_migration_the_refusal_message_describes(plugin, tmp_path):
    """The plugin meets a Go file it cannot upgrade (its addresses lie outside the config's
    subnet), says what to do, and the steps it names work."""
    plugin.db_path.parent.mkdir(parents=True)
    shutil.copyfile(fixture("ecs-link-local-1000")[0], plugin.db_path)
    dump = fixture("ecs-link-local-1000")[1]["dump"]
    holders, cursor = go_holders(dump), go_cursors(dump)["lastKnownIP"]
    wrong = {"ipv4-subnet": "10.0.0.0/24", "id": "task-new"}
    error = failed(plugin.run("ADD", netconf(wrong)), 5, str(plugin.db_path), f"{len(holders)} IPv4 address(es)",
                   "no ipv4-subnet of this config contains", f"mv {plugin.db_path} {plugin.db_path}.bolt",
                   f"ecs-ipam db import-bolt {plugin.db_path}.bolt --db {plugin.db_path} --ipv4-subnet CIDR")
    assert plugin.db_path.read_bytes() == fixture("ecs-link-local-1000")[0].read_bytes()
    old = Path(f"{plugin.db_path}.bolt")
    plugin.db_path.rename(old)
    outcome = run_db(plugin, ["import-bolt", str(old), "--db", str(plugin.db_path),
                              "--ipv4-subnet", "169.254.172.0/22"], env={"IPAM_DB_PATH": "/nonexistent/x.db"})
    assert outcome.code == 0, (outcome, error)
    assert f"{len(holders)} in 169.254.172.0/22" in outcome.stdout
    assert f"cursor of 169.254.172.0/22: {cursor} (the Go plugin's lastKnownIP)" in outcome.stdout
    assert "skipped gateway(s) 169.254.172.1" in outcome.stdout
    right = {"ipv4-subnet": "169.254.172.0/22", "ipv4-gateway": "169.254.172.1", "id": "task-new"}
    assert add_address(plugin, right) == next_free("169.254.172.0/22", cursor, set(holders))


def test_several_subnets_per_family_each_address_under_the_one_that_holds_it(plugin, go_store):
    bolt_path = go_store("ipv4-basic")
    outcome = run_db(plugin, ["import-bolt", str(bolt_path), "--ipv4-subnet", "10.0.0.8/29",
                              "--ipv4-subnet", "10.0.0.0/24"])
    assert outcome.code == 0, outcome
    subnets = {a["address"]: a["subnet"] for a in listing(plugin)["allocations"]}
    assert subnets == {"10.0.0.2": "10.0.0.0/24", "10.0.0.10": "10.0.0.8/29", "10.0.0.11": "10.0.0.8/29"}
    outcome = run_db(plugin, ["import-bolt", str(go_store("dual-stack")), "--ipv4-subnet", "10.1.0.0/24",
                              "--ipv4-subnet", "10.2.0.0/24", "--ipv6-subnet", "2001:db8::/64"])
    assert outcome.code == 1 and "--ipv4-subnet 10.1.0.0/24, 10.2.0.0/24" in outcome.stderr, outcome
