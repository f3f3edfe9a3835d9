"""The Go plugin's store upgraded in place by the first call that needs it (ecs_ipam/upgrade.py).

Each fixture is a BoltDB file the Go plugin itself left, with a dump of who held what: the first
ADD, DEL or STATUS must carry every holder over, go on from the Go plugin's cursor, keep the file
byte for byte beside the store, wait for a Go call holding the file's flock, and survive a kill at
any instant.
"""

import fcntl
import json
import os
import random
import shutil
import signal
import time

import pytest

import kill_points

from conftest import FlockHolder, spawn, start
from e2e_support import failed, listing, netconf, run_db, silent_success, succeeded
from ecs_ipam import cli
from ecs_ipam.disk import open_store
from go_fixtures import NAMES, SUBNETS, fixture, go_cursors, go_holders, next_free

BACKUP = ".go-plugin"
UPGRADED = "upgraded the Go plugin's store"


def original(name):
    return fixture(name)[0].read_bytes()


def go_next(name):
    """{field: the address the Go plugin's next automatic ADD gives} from the fixture's dump."""
    dump = fixture(name)[1]["dump"]
    taken, cursors = set(go_holders(dump)), go_cursors(dump)
    return {field: next_free(SUBNETS[name][field], cursors["lastKnownIP" if field == "ipv4-subnet"
                                                           else "lastKnownIPv6"], taken)
            for field in SUBNETS[name]}


def on_store(plugin, go_store, name):
    path = go_store(name)
    plugin.db_path = path
    return path


def assert_upgraded(plugin, path, name, outcome):
    """Every Go holder listed under the config's subnet, the file kept byte for byte, one line said."""
    assert outcome.stderr.count(UPGRADED) == 1 and str(path) + BACKUP in outcome.stderr, outcome
    assert (path.parent / (path.name + BACKUP)).read_bytes() == original(name)
    held = {a["address"]: (a["id"], a["subnet"]) for a in listing(plugin)["allocations"]}
    for address, holder in go_holders(fixture(name)[1]["dump"]).items():
        field = "ipv6-subnet" if ":" in address else "ipv4-subnet"
        assert held[address] == (holder, SUBNETS[name][field]), address
    return held


@pytest.mark.parametrize("name", NAMES)
def test_the_first_add_upgrades_and_gives_the_go_plugins_next_address(plugin, go_store, name):
    path = on_store(plugin, go_store, name)
    outcome = succeeded(plugin.run("ADD", netconf({**SUBNETS[name], "id": "first-after-upgrade"})))
    got = [ip["address"].split("/")[0] for ip in outcome.json["ips"]]
    assert got == list(go_next(name).values())
    held = assert_upgraded(plugin, path, name, outcome)
    assert len(held) == len(go_holders(fixture(name)[1]["dump"])) + len(got)
    again = succeeded(plugin.run("ADD", netconf({**SUBNETS[name], "id": "second"})))
    assert UPGRADED not in again.stderr  # once


@pytest.mark.parametrize("name", NAMES)
def test_the_first_del_upgrades_and_releases_by_the_go_id(plugin, go_store, name):
    path = on_store(plugin, go_store, name)
    holders = go_holders(fixture(name)[1]["dump"])
    victim = next(holder for holder in holders.values() if holder is not None)
    # The classic agent's release: the id, no address, an EMPTY CNI_CONTAINERID.
    outcome = silent_success(plugin.run("DEL", netconf({**SUBNETS[name], "id": victim}, "0.3.0"),
                                        env={"CNI_CONTAINERID": "", "CNI_IFNAME": "ecs-eth0"}))
    held = {a["address"] for a in listing(plugin)["allocations"]}
    assert held == {address for address, holder in holders.items() if holder != victim}
    assert outcome.stderr.count(UPGRADED) == 1
    assert (path.parent / (path.name + BACKUP)).read_bytes() == original(name)


@pytest.mark.parametrize("name", NAMES)
def test_the_first_status_upgrades(plugin, go_store, name):
    path = on_store(plugin, go_store, name)
    outcome = silent_success(plugin.run("STATUS", netconf(SUBNETS[name])))
    held = assert_upgraded(plugin, path, name, outcome)
    assert len(held) == len(go_holders(fixture(name)[1]["dump"]))


@pytest.mark.parametrize("name", NAMES)
def test_every_go_allocation_is_releasable_by_its_go_id(tmp_path, name):
    """In-process (cli.respond, the plugin's own edge) for speed: 857 DELs on the largest."""
    path = tmp_path / "eni-ipam.db"
    shutil.copyfile(fixture(name)[0], path)
    holders = go_holders(fixture(name)[1]["dump"])

    def call(command, ipam):
        environ = {"CNI_COMMAND": command, "IPAM_DB_PATH": str(path)}
        doc = netconf({**SUBNETS[name], **ipam}, "0.3.0")
        call = cli.respond(environ, lambda: json.dumps(doc).encode(), lambda line: None)
        return call.output, call.code

    for holder in sorted({h for h in holders.values() if h is not None}):
        assert call("DEL", {"id": holder}) == (None, 0), holder
    left = {address for address, holder in holders.items() if holder is None}
    with open_store(str(path), 5, writable=False) as store:
        assert {str(a.address) for a in store.allocations()} == left
    for address in left:  # held without an id: the address alone identifies it
        field = "ipv6-address" if ":" in address else "ipv4-address"
        prefix = SUBNETS[name][field.replace("address", "subnet")].split("/")[1]
        assert call("DEL", {field: f"{address}/{prefix}"}) == (None, 0)
    with open_store(str(path), 5, writable=False) as store:
        assert store.allocations() == []


def test_no_upgrade_while_a_go_call_holds_the_files_flock(plugin, go_store):
    path = on_store(plugin, go_store, "dual-stack")
    with FlockHolder(path, create=False):  # as a Go plugin call holds its file
        began = time.monotonic()
        outcome = plugin.run("ADD", netconf({**SUBNETS["dual-stack"], "id": "new"}),
                             env={"IPAM_DB_CONNECTION_TIMEOUT": "1s"})
        waited = time.monotonic() - began
        failed(outcome, 11, str(path), "Go ecs-ipam plugin call")
        assert waited >= 1.0  # it waited the timeout, not less
        assert path.read_bytes() == original("dual-stack")
        assert sorted(p.name for p in path.parent.iterdir()) == ["eni-ipam.db", "eni-ipam.db.lock"]
    outcome = succeeded(plugin.run("ADD", netconf({**SUBNETS["dual-stack"], "id": "new"})))
    assert_upgraded(plugin, path, "dual-stack", outcome)


def test_an_address_no_configured_subnet_holds_is_refused_naming_it(plugin, go_store):
    path = on_store(plugin, go_store, "dual-stack")
    outcome = plugin.run("ADD", netconf({"ipv4-subnet": "10.0.0.0/24", "id": "new"}))  # no IPv6 subnet
    failed(outcome, 5, "3 IPv6 address(es)", "2001:db8::2", "no ipv6-subnet of this config contains",
           f"import-bolt {path}.bolt --db {path} --ipv6-subnet CIDR")
    assert path.read_bytes() == original("dual-stack")
    assert sorted(p.name for p in path.parent.iterdir()) == ["eni-ipam.db", "eni-ipam.db.lock"]


def test_a_journal_beside_the_go_file_is_refused(plugin, go_store):
    path = on_store(plugin, go_store, "ipv4-basic")
    (path.parent / "eni-ipam.db.journal").write_bytes(b"")
    failed(plugin.run("ADD", netconf({**SUBNETS["ipv4-basic"], "id": "new"})), 5, "eni-ipam.db.journal",
           "rollback")
    assert path.read_bytes() == original("ipv4-basic")


def test_db_list_and_check_show_the_go_store_without_writing(plugin, go_store):
    path = on_store(plugin, go_store, "dual-stack")
    listed = listing(plugin)
    assert listed["go_plugin_store"] is True
    assert {a["address"]: a["id"] for a in listed["allocations"]} == go_holders(fixture("dual-stack")[1]["dump"])
    checked = run_db(plugin, ["check", "--db", str(path)])
    assert checked.code == 0 and "5 allocation(s)" in checked.stdout and "upgrades it" in checked.stdout
    assert path.read_bytes() == original("dual-stack")
    assert not (path.parent / (path.name + BACKUP)).exists()


def test_a_different_backup_already_there_is_kept(plugin, go_store):
    path = on_store(plugin, go_store, "ipv4-basic")
    older = path.parent / (path.name + BACKUP)
    older.write_bytes(b"an older backup the operator kept")
    outcome = succeeded(plugin.run("ADD", netconf({**SUBNETS["ipv4-basic"], "id": "new"})))
    assert older.read_bytes() == b"an older backup the operator kept"
    assert (path.parent / (path.name + BACKUP + ".2")).read_bytes() == original("ipv4-basic")
    assert f"{path}{BACKUP}.2" in outcome.stderr


def test_a_go_call_that_waited_for_the_old_file_finds_it_invalid(plugin, go_store):
    """A Go call that opened the file before the switch must not allocate from it afterwards."""
    path = on_store(plugin, go_store, "ipv4-basic")
    waiting = os.open(path, os.O_RDONLY)  # opened before the upgrade, as a Go call waiting for its flock
    try:
        succeeded(plugin.run("ADD", netconf({**SUBNETS["ipv4-basic"], "id": "new"})))
        fcntl.flock(waiting, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the upgrade let go of it
        head = os.pread(waiting, 64, 0)
        assert head[16:20] == bytes(4)  # bolt's magic is gone from the meta page: "invalid database"
    finally:
        os.close(waiting)
    assert (path.parent / (path.name + BACKUP)).read_bytes() == original("ipv4-basic")


# --- kills: before and after every file operation of the upgrade, then at random ------------

def run_child(path, kill_at, command, doc):
    env = {"CNI_COMMAND": command, "IPAM_DB_PATH": str(path), "CNI_CONTAINERID": "ctr", "CNI_IFNAME": "eth0"}
    return kill_points.run_child(env, doc, kill_at)


def state(path):
    """"go" while path is the untouched Go file, else (allocations, cursors) of the ecs-ipam store."""
    if path.read_bytes() == original(NAME_OF[path.parent.name]):
        return "go"
    with open_store(str(path), 5, writable=False) as store:
        assert store.problems() == []
        return (tuple((str(a.address), a.id, a.container, a.ifname, str(a.subnet)) for a in store.allocations()),
                tuple(sorted(store.cursors().items())))


NAME_OF = {}


def copy_of(tmp_path, name, label):
    directory = tmp_path / label
    directory.mkdir()
    NAME_OF[label] = name
    shutil.copyfile(fixture(name)[0], directory / "eni-ipam.db")
    return directory / "eni-ipam.db"


@pytest.mark.parametrize("name, command", [("dual-stack", "ADD"), ("ipv4-basic", "DEL")])
def test_a_kill_at_any_file_operation_leaves_the_go_file_or_the_whole_store(tmp_path, name, command):
    ipam = {**SUBNETS[name], "id": "new" if command == "ADD" else "c1"}
    doc = netconf(ipam, "0.3.0")
    reference = copy_of(tmp_path, name, "reference")
    done = run_child(reference, -1, command, doc)
    report = json.loads(done.stdout)
    assert report["code"] == 0, report
    upgraded_only = copy_of(tmp_path, name, "status-only")
    assert json.loads(run_child(upgraded_only, -1, "STATUS", netconf(SUBNETS[name], "1.1.0")).stdout)["code"] == 0
    after, between = state(reference), state(upgraded_only)
    assert "go" not in (after, between) and after != between

    seen = set()
    for kill_at in range(report["points"]):
        path = copy_of(tmp_path, name, f"killed-{kill_at}")
        proc = run_child(path, kill_at, command, doc)
        assert proc.returncode == -signal.SIGKILL, (kill_at, proc)
        assert path.exists(), f"killed at {kill_at}: nothing at the store's path"
        now = state(path)
        assert now in ("go", between, after), f"killed at {kill_at}: the store is half upgraded"
        if now != "go":
            assert (path.parent / (path.name + BACKUP)).read_bytes() == original(name), kill_at
        seen.add(now if now == "go" else ("between" if now == between else "after"))
        # The next call (unkilled) upgrades if it must, and serves.
        again = json.loads(run_child(path, -1, "STATUS", netconf(SUBNETS[name], "1.1.0")).stdout)
        assert again["code"] == 0, (kill_at, again)
        assert state(path) in (between, after), kill_at
        assert not (path.parent / "eni-ipam.db.new").exists()
        assert sorted(p.name for p in path.parent.iterdir() if ".go-plugin" in p.name) == ["eni-ipam.db.go-plugin"]
        shutil.rmtree(path.parent)
    assert seen == {"go", "between", "after"}, seen  # the kills landed before, inside and after the switch


def test_random_kills_during_first_calls_on_the_1000_allocation_store(artifact, tmp_path):
    """The built file, SIGKILLed at random moments of its first ADD on the largest fixture."""
    seed = int(os.environ.get("ECS_IPAM_UPGRADE_SEED", "7"))
    rng = random.Random(seed)
    holders = go_holders(fixture("ecs-link-local-1000")[1]["dump"])
    doc = json.dumps(netconf({**SUBNETS["ecs-link-local-1000"], "id": "arn:task/new"}, "0.3.0")).encode()
    outcomes = {"go": 0, "upgraded": 0}
    for trial in range(24):
        path = copy_of(tmp_path, "ecs-link-local-1000", f"trial-{trial}")
        env = {"CNI_COMMAND": "ADD", "IPAM_DB_PATH": str(path)}
        proc = start([artifact], env, doc, start_new_session=True)
        time.sleep(rng.uniform(0.0, 0.2))  # an unkilled first ADD here takes about 0.1 s
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        now = state(path)
        if now == "go":
            outcomes["go"] += 1
        else:
            outcomes["upgraded"] += 1
            held = {address for address, *_ in now[0]}
            assert set(holders) <= held, f"seed {seed}, trial {trial}: a Go allocation was lost"
            assert (path.parent / (path.name + BACKUP)).read_bytes() == original("ecs-link-local-1000")
        # Whatever the kill left, the next call serves and every Go holder is there.
        after = spawn([artifact], env, doc.replace(b"arn:task/new", b"arn:task/next"))
        assert after.returncode == 0, (seed, trial, after)
        with open_store(str(path), 5, writable=False) as store:
            listed = {str(a.address): a.id for a in store.allocations()}
        assert {a: listed.get(a) for a in holders} == holders, f"seed {seed}, trial {trial}"
        shutil.rmtree(path.parent)
    print(f"upgrade kills (seed {seed}): {outcomes}")
    assert outcomes["go"] and outcomes["upgraded"], outcomes  # kills landed on both sides of the switch
