"""Many plugin processes on one store at once: the lock serialises them, no address is handed out twice."""

import json
import time

import pytest

from conftest import finish, hold_store_lock
from ecs_ipam.disk import COMPACT_AFTER, open_store

SUBNET = "169.254.172.0/22"
CONFIG = {"cniVersion": "1.0.0", "name": "ecsnet", "type": "bridge",
          "ipam": {"type": "ecs-ipam", "ipv4-subnet": SUBNET}}
# Generous, so that a slow CI machine does not turn a queue of 200 processes into timeouts;
# the lock timeout itself is tested below.
PATIENT = {"IPAM_DB_CONNECTION_TIMEOUT": "60s"}


def config(holder_id=None):
    doc = json.loads(json.dumps(CONFIG))
    if holder_id is not None:
        doc["ipam"]["id"] = holder_id
    return doc


def start(plugin, command, doc, env=None):
    """Start the plugin as Plugin.run does (with the patient timeout), without waiting for it."""
    return plugin.start(command, doc, {**PATIENT, **(env or {})})


def stored(db_path):
    """{address text: allocation} as the store holds it, after checking its integrity."""
    with open_store(str(db_path), 5, writable=False) as store:
        assert store.problems() == []
        return {str(a.address): a for a in store.allocations()}


def address_of(outcome):
    assert outcome.code == 0, outcome
    (ip,) = outcome.json["ips"]
    return ip["address"].split("/")[0]


def concurrent_adds(plugin, count, prefix):
    """count ADDs released onto the store at the same instant: half by id, half by container only.

    Returns {address: (id, container)}.
    """
    lock = hold_store_lock(plugin.db_path)
    try:
        procs = []
        for n in range(count):
            holder = f"{prefix}-id-{n}" if n % 2 == 0 else None
            container = f"{prefix}-ctr-{n}"
            procs.append((holder, container,
                          start(plugin, "ADD", config(holder), {"CNI_CONTAINERID": container})))
        lock.wait_for_waiters(count)
    finally:
        lock.release()
    given = {}
    for holder, container, proc in procs:
        address = address_of(finish(proc))
        assert address not in given, f"{address} handed out to both {given[address]} and {(holder, container)}"
        given[address] = (holder, container)
    return given


def test_hundred_concurrent_adds_get_distinct_addresses_and_all_are_stored(plugin):
    given = concurrent_adds(plugin, 100, "a")

    assert len(given) == 100
    held = stored(plugin.db_path)
    assert set(held) == set(given)
    for address, (holder, container) in given.items():
        assert (held[address].id, held[address].container) == (holder, container)
    # A following run sees all hundred: it gets none of them.
    assert address_of(plugin.run("ADD", config=config("after"))) not in given


def journal_records(db_path):
    try:
        return (db_path.parent / (db_path.name + ".journal")).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_concurrent_adds_and_dels_leave_exactly_the_survivors(plugin):
    before = concurrent_adds(plugin, 100, "old")
    records_before = journal_records(plugin.db_path)
    lock = hold_store_lock(plugin.db_path)
    try:
        dels, adds = [], []
        for n, (address, (holder, container)) in enumerate(sorted(before.items())):
            if n % 2 == 0:  # by id, or by container when there is no id
                env = {"CNI_CONTAINERID": container}
                dels.append((address, start(plugin, "DEL", config(holder), env)))
            else:  # DEL of something never allocated succeeds too
                dels.append((None, start(plugin, "DEL", config(f"never-{n}"), {"CNI_CONTAINERID": f"none-{n}"})))
        for n in range(150):
            adds.append((f"new-{n}", start(plugin, "ADD", config(f"new-{n}"), {"CNI_CONTAINERID": f"new-{n}"})))
        lock.wait_for_waiters(len(dels) + len(adds))
    finally:
        lock.release()

    released = set()
    for address, proc in dels:
        outcome = finish(proc)
        assert (outcome.code, outcome.stdout) == (0, ""), outcome
        if address is not None:
            released.add(address)
    added = {}
    for holder, proc in adds:
        added[address_of(finish(proc))] = holder

    assert len(released) == 50 and len(added) == 150
    # The burst's 200 commits took the journal past COMPACT_AFTER: a compaction ran in the crowd.
    assert records_before + 200 > COMPACT_AFTER
    assert journal_records(plugin.db_path) < records_before + 200
    survivors = set(before) - released
    assert not survivors & set(added), "an address still held was handed out again"
    held = stored(plugin.db_path)
    assert set(held) == survivors | set(added)
    for address, holder in added.items():
        assert held[address].id == holder


def test_lock_timeout_is_code_11_naming_path_and_timeout(plugin):
    lock = hold_store_lock(plugin.db_path)
    try:
        began = time.monotonic()
        outcome = plugin.run("ADD", config=config("waiting"), env={"IPAM_DB_CONNECTION_TIMEOUT": "300ms"})
        elapsed = time.monotonic() - began
    finally:
        lock.release()

    assert outcome.code == 1, outcome
    assert outcome.json["code"] == 11
    assert str(plugin.db_path) in outcome.json["msg"]
    assert "0.3s" in outcome.json["msg"] or "300ms" in outcome.json["msg"]
    # It waited the whole timeout, then gave up (the margin is a loaded machine's process start).
    assert 0.3 <= elapsed < 0.3 + 10, elapsed
    # It gave up without writing anything: the id is still free.
    address_of(plugin.run("ADD", config=config("waiting")))


def test_bare_number_timeout_is_seconds(plugin):
    lock = hold_store_lock(plugin.db_path)
    try:
        began = time.monotonic()
        outcome = plugin.run("ADD", config=config(), env={"IPAM_DB_CONNECTION_TIMEOUT": "1"})
        elapsed = time.monotonic() - began
    finally:
        lock.release()
    assert outcome.json["code"] == 11, outcome
    # "1" is a second: not a millisecond (it would not wait 1 s), not a minute (it would wait 60).
    assert 1.0 <= elapsed < 1.0 + 10, elapsed


@pytest.mark.parametrize("command", ["ADD"])
def test_zero_timeout_waits_for_the_lock_without_limit(plugin, command):
    if command == "DEL":  # a DEL without a store has nothing to wait for: give it something to release
        held = address_of(plugin.run("ADD", config=config("patient")))
    lock = hold_store_lock(plugin.db_path)
    try:
        proc = start(plugin, command, config("patient"), {"IPAM_DB_CONNECTION_TIMEOUT": "0"})
        time.sleep(6.0)  # past the 5 s default too: 0 is no limit, not "unset"
        assert proc.poll() is None, finish(proc)
    finally:
        lock.release()
    outcome = finish(proc, timeout=30)
    assert outcome.code == 0, outcome
    if command == "ADD":
        assert address_of(outcome) in stored(plugin.db_path)
    else:
        assert held not in stored(plugin.db_path)
