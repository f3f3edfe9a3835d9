"""End to end: the operator tools `ecs-ipam db list` and `ecs-ipam db gc`, run from the built file."""

import json
import time

import pytest

from e2e_support import add, add_address, delete, listing, netconf, run_db, store_files
from ecs_ipam.disk import open_store

LINK_LOCAL = {"ipv4-subnet": "169.254.172.0/22"}
DUAL = {"ipv4-subnet": "169.254.172.0/22", "ipv6-subnet": "fd00:ec2::/64"}


def backdate(plugin, seconds_by_address):
    """Make the allocations of the given addresses look that many seconds older (an ADD made back then)."""
    with open_store(str(plugin.db_path), 5) as store:
        for allocation in store.allocations():
            seconds = seconds_by_address.get(str(allocation.address))
            if seconds is not None:
                cursor = store.cursor(allocation.subnet)
                store.reserve(allocation._replace(allocated_at=allocation.allocated_at - seconds))
                store.set_cursor(allocation.subnet, cursor)


def table(outcome):
    """The rows of `db list` as dicts by column name (the lines before the blank line)."""
    lines = outcome.stdout.split("\n\n")[0].splitlines()
    header = lines[0].split()
    return [dict(zip(header, line.split())) for line in lines[1:]]


def summary(outcome):
    """The lines of `db list` after the blank line."""
    return outcome.stdout.split("\n\n")[1].splitlines()


# -- db list --------------------------------------------------------------------------------

def test_list_sorts_by_address_numerically_ipv4_first(plugin):
    for address in ("2001:db8::10/64", "10.0.0.100/24", "2001:db8::9/64", "10.0.0.9/24", "10.0.0.10/24"):
        family = 6 if ":" in address else 4
        subnet = "2001:db8::/64" if family == 6 else "10.0.0.0/24"
        add(plugin, {f"ipv{family}-subnet": subnet, f"ipv{family}-address": address, "id": address})
    expected = ["10.0.0.9", "10.0.0.10", "10.0.0.100", "2001:db8::9", "2001:db8::10"]
    listed = run_db(plugin, ["list"])
    assert listed.code == 0, listed
    assert [row["ADDRESS"] for row in table(listed)] == expected
    assert [a["address"] for a in listing(plugin)["allocations"]] == expected


def test_list_ends_with_each_subnets_usage(plugin):
    for n in range(3):
        add(plugin, {**DUAL, "id": f"task-{n}"})
    add(plugin, {"ipv4-subnet": "10.0.0.0/30", "id": "small"})  # .1 is the gateway: one usable address
    add(plugin, {"ipv4-subnet": "10.0.1.0/24", "id": "gone"})
    delete(plugin, {"ipv4-subnet": "10.0.1.0/24", "id": "gone"})  # leaves a cursor and nothing held
    listed = run_db(plugin, ["list"])
    assert listed.code == 0, listed
    assert summary(listed) == [
        f"7 allocation(s) in {plugin.db_path}",
        "10.0.0.0/30:      1 held of 1 usable (100.0%), cursor 10.0.0.2",
        "10.0.1.0/24:      0 held of 253 usable (0%), cursor 10.0.1.2",
        "169.254.172.0/22: 3 held of 1021 usable (0.3%), cursor 169.254.172.4",
        "fd00:ec2::/64:    3 held of 18446744073709551614 usable (<0.1%), cursor fd00:ec2::4",
    ]
    assert listing(plugin)["subnets"] == {
        "10.0.0.0/30": {"held": 1, "usable": 1, "cursor": "10.0.0.2"},
        "10.0.1.0/24": {"held": 0, "usable": 253, "cursor": "10.0.1.2"},
        "169.254.172.0/22": {"held": 3, "usable": 2**10 - 3, "cursor": "169.254.172.4"},
        "fd00:ec2::/64": {"held": 3, "usable": 2**64 - 2, "cursor": "fd00:ec2::4"},
    }


def test_list_filters_by_id_container_and_subnet(plugin):
    for n in range(3):
        add(plugin, {**DUAL, "id": f"task-{n}"}, env={"CNI_CONTAINERID": f"pause-{n}"})
    add(plugin, {"ipv4-subnet": "10.0.0.0/24"}, env={"CNI_CONTAINERID": "pause-1"})

    def rows(*args):
        outcome = run_db(plugin, ["list", *args])
        assert outcome.code == 0, outcome
        return [(row["ADDRESS"], row["ID"], row["CONTAINER"]) for row in table(outcome)], summary(outcome)

    shown, lines = rows("--id", "task-1")
    assert shown == [("169.254.172.3", "task-1", "pause-1"), ("fd00:ec2::3", "task-1", "pause-1")]
    assert lines[0] == f"2 of 7 allocation(s) in {plugin.db_path} match --id task-1"
    assert len(lines) == 4  # every subnet's line: they count whole subnets
    shown, _ = rows("--container", "pause-1")
    assert shown == [("10.0.0.2", "-", "pause-1"), ("169.254.172.3", "task-1", "pause-1"),
                     ("fd00:ec2::3", "task-1", "pause-1")]
    shown, lines = rows("--subnet", "fd00:ec2::/64", "--container", "pause-2")
    assert shown == [("fd00:ec2::4", "task-2", "pause-2")]
    assert lines[1:] == ["fd00:ec2::/64: 3 held of 18446744073709551614 usable (<0.1%), cursor fd00:ec2::4"]
    shown, _ = rows("--subnet", "169.254.173.9/22")  # host bits dropped, as in the config
    assert [address for address, _, _ in shown] == ["169.254.172.2", "169.254.172.3", "169.254.172.4"]
    as_json = json.loads(run_db(plugin, ["list", "--json", "--subnet", "10.0.0.0/24"]).stdout)
    assert [a["address"] for a in as_json["allocations"]] == ["10.0.0.2"]
    assert as_json["subnets"] == {"10.0.0.0/24": {"held": 1, "usable": 253, "cursor": "10.0.0.2"}}
    assert as_json["cursors"] == {"10.0.0.0/24": "10.0.0.2"}


def test_list_names_a_subnet_the_store_does_not_know_and_a_bad_cidr(plugin):
    add(plugin, {**LINK_LOCAL, "id": "a"})
    unknown = run_db(plugin, ["list", "--subnet", "169.254.172.0/24"])
    assert unknown.code == 1 and unknown.stdout == "", unknown
    assert "--subnet 169.254.172.0/24" in unknown.stderr and "169.254.172.0/22" in unknown.stderr, unknown
    bad = run_db(plugin, ["list", "--subnet", "169.254.172.0/33"])
    assert bad.code == 2 and "--subnet" in bad.stderr and "'169.254.172.0/33'" in bad.stderr, bad


def test_list_ages_are_human_readable(plugin):
    for n in range(4):
        add(plugin, {**LINK_LOCAL, "id": f"task-{n}"})
    backdate(plugin, {"169.254.172.2": 3 * 86400 + 4 * 3600 + 59, "169.254.172.3": 2 * 3600 + 5 * 60,
                      "169.254.172.4": 75})
    ages = [row["AGE"] for row in table(run_db(plugin, ["list"]))]
    assert ages[:2] == ["3d4h", "2h5m"]
    assert ages[2] in ("1m15s", "1m16s", "1m17s")  # the list runs a second or two after the backdating
    assert ages[3] in ("0s", "1s", "2s")


# -- db gc ----------------------------------------------------------------------------------

MACS = ["0a:1b:2c:3d:4e:01", "0a:1b:2c:3d:4e:02", "0a:1b:2c:3d:4e:03", "0a:1b:2c:3d:4e:04"]


def classic_host(plugin, age=86400):
    """Four classic-agent tasks (ENI MAC ids) and one allocation without an id, made age seconds ago
    (a day: shown as 1d however long the test takes): {address: id or None}."""
    held = {}
    for n, mac in enumerate(MACS):
        held[add_address(plugin, {**LINK_LOCAL, "id": mac}, env={"CNI_CONTAINERID": f"{n:064x}"})] = mac
    held[add_address(plugin, LINK_LOCAL, env={"CNI_CONTAINERID": "anonymous"})] = None
    backdate(plugin, {address: age for address in held})
    return held


def journal_records(plugin):
    journal = plugin.db_path.parent / (plugin.db_path.name + ".journal")
    return journal.read_bytes().count(b"\n") if journal.exists() else 0


def test_gc_releases_every_allocation_whose_id_is_not_listed_in_one_commit(plugin):
    held = classic_host(plugin)
    assert list(held) == ["169.254.172.2", "169.254.172.3", "169.254.172.4", "169.254.172.5", "169.254.172.6"]
    records = journal_records(plugin)
    # As an operator's pipe may deliver it: CRLF, blank lines, a stray space, an id of another host.
    keep = f"{MACS[1]}\r\n\n  {MACS[3]} \n0a:1b:2c:3d:4e:99\n".encode()
    outcome = run_db(plugin, ["gc", "--keep-ids", "-"], stdin=keep)
    assert outcome.code == 0, outcome
    assert outcome.stdout.splitlines() == [
        f"released 169.254.172.2 (id {MACS[0]}, age 1d)",
        f"released 169.254.172.4 (id {MACS[2]}, age 1d)",
        f"released 2 allocation(s) in {plugin.db_path}; kept 2 whose id is listed, "
        "1 without an id (gc never touches those)",
    ]
    assert sorted(a["address"] for a in listing(plugin)["allocations"]) == \
        ["169.254.172.3", "169.254.172.5", "169.254.172.6"]
    assert journal_records(plugin) == records + 1


def test_gc_reads_the_keep_list_from_a_file(plugin, tmp_path):
    classic_host(plugin)
    keep = tmp_path / "live-ids"
    keep.write_text("\n".join(MACS[:3]) + "\n")
    outcome = run_db(plugin, ["gc", "--keep-ids", str(keep)])
    assert outcome.code == 0, outcome
    assert outcome.stdout.splitlines()[0] == f"released 169.254.172.5 (id {MACS[3]}, age 1d)"
    assert len(listing(plugin)["allocations"]) == 4


def test_gc_dry_run_prints_what_would_go_and_changes_nothing(plugin):
    classic_host(plugin)
    before = store_files(plugin)
    outcome = run_db(plugin, ["gc", "--keep-ids", "-", "--dry-run"], stdin=MACS[0].encode())
    assert outcome.code == 0, outcome
    assert outcome.stdout.splitlines() == [
        f"would release 169.254.172.3 (id {MACS[1]}, age 1d)",
        f"would release 169.254.172.4 (id {MACS[2]}, age 1d)",
        f"would release 169.254.172.5 (id {MACS[3]}, age 1d)",
        f"would release 3 allocation(s) in {plugin.db_path}; kept 1 whose id is listed, "
        "1 without an id (gc never touches those); dry run: nothing was changed",
    ]
    assert store_files(plugin) == before


def test_gc_older_than_spares_young_allocations(plugin):
    classic_host(plugin, age=0)
    backdate(plugin, {"169.254.172.2": 2 * 3600, "169.254.172.3": 3600 + 5 * 60, "169.254.172.6": 86400})
    outcome = run_db(plugin, ["gc", "--keep-ids", "-", "--older-than", "1h"], stdin=MACS[3].encode())
    assert outcome.code == 0, outcome
    assert outcome.stdout.splitlines() == [
        f"released 169.254.172.2 (id {MACS[0]}, age 2h)",
        f"released 169.254.172.3 (id {MACS[1]}, age 1h5m)",
        f"released 2 allocation(s) in {plugin.db_path}; kept 1 whose id is listed, 1 younger than 1h, "
        "1 without an id (gc never touches those)",
    ]
    assert sorted(a["address"] for a in listing(plugin)["allocations"]) == \
        ["169.254.172.4", "169.254.172.5", "169.254.172.6"]


def test_gc_subnet_limits_it_to_one_pool(plugin):
    for name in ("a", "b"):
        add(plugin, {**DUAL, "id": f"/var/run/netns/task-{name}-eth1"}, env={"CNI_CONTAINERID": "container-id"})
    backdate(plugin, {"fd00:ec2::3": 3 * 86400})
    outcome = run_db(plugin, ["gc", "--keep-ids", "-", "--subnet", "fd00:ec2::/64"],
                     stdin=b"/var/run/netns/task-a-eth1\n")
    assert outcome.code == 0, outcome
    assert outcome.stdout.splitlines()[0] == "released fd00:ec2::3 (id /var/run/netns/task-b-eth1, age 3d)"
    assert sorted(a["address"] for a in listing(plugin)["allocations"]) == \
        ["169.254.172.2", "169.254.172.3", "fd00:ec2::2"]


@pytest.mark.parametrize("keep", [b"", b"\n\n", b"0a:1b:2c:3d:4e:01/\n0a:1b:2c:3d:4e:02/\n"])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_gc_refuses_a_keep_list_that_spares_nothing_unless_allow_all(plugin, keep, dry_run):
    """An empty list (a recipe that printed nothing) or one that names no holder (IMDS's trailing '/')."""
    classic_host(plugin)
    before = store_files(plugin)
    refused = run_db(plugin, ["gc", "--keep-ids", "-", *dry_run], stdin=keep)
    assert refused.code == 1 and refused.stdout == "", refused
    assert "names none of the 4 id(s) holding addresses" in refused.stderr, refused
    assert "would release all 4" in refused.stderr and "--allow-all" in refused.stderr, refused
    assert store_files(plugin) == before
    allowed = run_db(plugin, ["gc", "--keep-ids", "-", "--allow-all", *dry_run], stdin=keep)
    assert allowed.code == 0, allowed
    remaining = [a["address"] for a in listing(plugin)["allocations"]]
    assert remaining == (["169.254.172.2", "169.254.172.3", "169.254.172.4", "169.254.172.5", "169.254.172.6"]
                         if dry_run else ["169.254.172.6"])  # the one without an id stays


def test_gc_with_nothing_to_release_needs_no_allow_all(plugin):
    add(plugin, LINK_LOCAL, env={"CNI_CONTAINERID": "anonymous"})
    outcome = run_db(plugin, ["gc", "--keep-ids", "-"], stdin=b"")
    assert outcome.code == 0, outcome
    assert outcome.stdout == (f"released 0 allocation(s) in {plugin.db_path}; kept 0 whose id is listed, "
                              "1 without an id (gc never touches those)\n")


@pytest.mark.parametrize("args, stdin, code, fragments", [
    ([], b"", 2, ["--keep-ids"]),
    (["--keep-ids", "/nonexistent/live-ids"], b"", 1, ["--keep-ids /nonexistent/live-ids", "No such file"]),
    (["--keep-ids", "-"], b"0a:1b:2c:3d:4e:01\n\xff\xfe\n", 1, ["--keep-ids standard input", "line 2", "UTF-8"]),
    (["--keep-ids", "-", "--older-than", "10 minutes"], b"x\n", 2, ["--older-than", "'10 minutes'"]),
    (["--keep-ids", "-", "--older-than=-5m"], b"x\n", 2, ["--older-than", "'-5m'"]),
    (["--keep-ids", "-", "--older-than", ""], b"x\n", 2, ["--older-than", "''"]),
    (["--keep-ids", "-", "--subnet", "169.254.172.0/24"], b"x\n", 1, ["--subnet 169.254.172.0/24",
                                                                     "169.254.172.0/22"]),
    (["--keep-ids", "-", "--subnet", "nonsense"], b"x\n", 2, ["--subnet", "'nonsense'"]),
])
def test_gc_bad_input_is_named_and_changes_nothing(plugin, args, stdin, code, fragments):
    classic_host(plugin)
    before = store_files(plugin)
    outcome = run_db(plugin, ["gc", *args], stdin=stdin)
    assert outcome.code == code and outcome.stdout == "", outcome
    for fragment in fragments:
        assert fragment in outcome.stderr, (fragment, outcome)
    assert store_files(plugin) == before


def test_gc_waits_for_the_plugins_lock(plugin):
    import fcntl

    classic_host(plugin)
    before = store_files(plugin)
    with open(str(plugin.db_path) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        outcome = run_db(plugin, ["gc", "--keep-ids", "-"], env={"IPAM_DB_CONNECTION_TIMEOUT": "200ms"},
                         stdin=MACS[0].encode())
    assert outcome.code == 1 and "timed out" in outcome.stderr and "lock" in outcome.stderr, outcome
    assert store_files(plugin) == before
