"""The store's crash-safety promises: SIGKILL at any instant loses nothing reported and tears nothing.

Three layers. Unit tests damage the journal and the snapshot by hand the ways a crash
can. A fault-injection test kills a store session before and after every file
operation it makes (appends, compactions, the first snapshot) and checks that the store
is then exactly as before or exactly as after that commit. And a soak test SIGKILLs
real plugin processes at random moments while they ADD and DEL concurrently.
"""

import errno
import ipaddress
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import threading
import time
import zlib

import pytest

import kill_points

import ecs_ipam.disk as disk_module
from conftest import Outcome, start
from e2e_support import run_db
from ecs_ipam import cli
from ecs_ipam.errors import CNIError
from ecs_ipam.disk import COMPACT_AFTER, open_store

V4 = "169.254.172.0/22"
V6 = "fd00:ec2::/64"


def config(holder_id=None, v6=False, **extra):
    ipam = {"type": "ecs-ipam", "ipv4-subnet": V4, **extra}
    if v6:
        ipam["ipv6-subnet"] = V6
    if holder_id is not None:
        ipam["id"] = holder_id
    return {"cniVersion": "1.0.0", "name": "ecsnet", "type": "bridge", "ipam": ipam}


def environ(db_path, command, container=None):
    env = {"IPAM_DB_PATH": str(db_path), "CNI_COMMAND": command, "CNI_IFNAME": "eth0"}
    if container is not None:
        env["CNI_CONTAINERID"] = container
    return env


def respond(db_path, command, doc, container=None):
    """One CNI call in this process, through the plugin's own entry point: (JSON output, exit code)."""
    call = cli.respond(environ(db_path, command, container), lambda: json.dumps(doc).encode(), lambda line: None)
    return call.output, call.code


def add(db_path, holder_id=None, container=None, v6=False):
    """ADD in this process; return the addresses it got, as text."""
    output, code = respond(db_path, "ADD", config(holder_id, v6), container)
    assert code == 0, output
    return [ip["address"].split("/")[0] for ip in output["ips"]]


def delete(db_path, holder_id=None, container=None):
    output, code = respond(db_path, "DEL", config(holder_id), container)
    assert (output, code) == (None, 0), output


def state(db_path):
    """What the store holds, checked for integrity: allocations (time aside) and cursors."""
    with open_store(str(db_path), 5, writable=False) as store:
        assert store.problems() == []
        allocations = tuple((str(a.address), a.id, a.container, a.ifname, str(a.subnet))
                            for a in store.allocations())
        return allocations, store.cursors()


def journal_path(db_path):
    return db_path.parent / (db_path.name + ".journal")


def journal_lines(db_path):
    return journal_path(db_path).read_bytes().split(b"\n")


@pytest.fixture
def db(tmp_path):
    return tmp_path / "db" / "ipam.db"


@pytest.fixture
def small_compaction(monkeypatch):
    """Compact after 5 commits in this process (the threshold is read at each commit)."""
    monkeypatch.setattr(disk_module, "COMPACT_AFTER", 5)
    return 5


# --- the journal, damaged by hand -------------------------------------------------------------

def store_with_journal(db, records):
    """A store whose snapshot holds one allocation and whose journal holds `records` more."""
    held = [add(db, f"id-{n}")[0] for n in range(records + 1)]
    assert len(journal_lines(db)) == records + 1  # the records and what follows the last newline
    return held


def test_journal_records_are_checksummed_lines(db):
    store_with_journal(db, 3)
    *records, tail = journal_lines(db)
    assert tail == b""
    for record in records:
        checksum, _, payload = record.partition(b" ")
        assert checksum == b"%08x" % zlib.crc32(payload), record
        assert json.loads(payload)


@pytest.mark.parametrize("cut", [1, 2, 10, "half", "all but the newline"])
def test_torn_last_record_is_dropped_and_the_next_commit_works(db, cut):
    held = store_with_journal(db, 4)
    data = journal_path(db).read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1  # start of the last record
    keep = {"half": last + (len(data) - last) // 2, "all but the newline": len(data) - 1}.get(cut)
    journal_path(db).write_bytes(data[:keep if keep is not None else len(data) - cut])

    allocations, _ = state(db)
    assert [a[0] for a in allocations] == held[:-1]  # the torn ADD was never reported: gone
    new = add(db, "after")[0]
    assert new not in held[:-1]
    allocations, _ = state(db)
    assert [a[0] for a in allocations] == sorted(held[:-1] + [new], key=_address_key)
    # The torn bytes are gone: every record is whole again.
    *records, tail = journal_lines(db)
    assert tail == b"" and len(records) == 4


def test_garbage_without_newline_after_the_last_record_is_dropped(db):
    held = store_with_journal(db, 3)
    with open(journal_path(db), "ab") as journal:
        journal.write(b"deadbeef [[\"a/169.254.172.99\",")
    assert [a[0] for a in state(db)[0]] == held
    add(db, "after")
    *records, tail = journal_lines(db)
    assert tail == b"" and len(records) == 4
    assert len(state(db)[0]) == len(held) + 1


def test_complete_last_record_with_a_bad_checksum_is_dropped(db):
    held = store_with_journal(db, 3)
    data = bytearray(journal_path(db).read_bytes())
    # Change one character of the last record's payload, keeping its length and newline.
    position = data.rindex(b"169.254.172.")
    data[position] = ord("2")
    journal_path(db).write_bytes(bytes(data))

    assert [a[0] for a in state(db)[0]] == held[:-1]
    add(db, "after")
    assert len(state(db)[0]) == len(held)
    assert len(journal_lines(db)) == 4


def test_damaged_record_in_the_middle_is_code_5_and_the_store_is_left_alone(db, plugin):
    plugin.db_path = db
    store_with_journal(db, 4)
    data = bytearray(journal_path(db).read_bytes())
    second = data.index(b"\n") + 1
    data[second + 20] ^= 0x01
    journal_path(db).write_bytes(bytes(data))
    before = {p.name: p.read_bytes() for p in db.parent.iterdir() if p.name != "ipam.db.lock"}

    for command, doc in (("ADD", config("new")), ("DEL", config("id-0")), ("CHECK", config("id-0"))):
        outcome = plugin.run(command, config=doc)
        assert outcome.code == 1, outcome
        assert outcome.json["code"] == 5, outcome
        assert str(journal_path(db)) in outcome.json["msg"] and "record 2" in outcome.json["msg"]
    with pytest.raises(CNIError) as raised:
        with open_store(str(db), 5, writable=False):
            pass
    assert raised.value.code == 5
    assert {p.name: p.read_bytes() for p in db.parent.iterdir() if p.name != "ipam.db.lock"} == before


def test_leftover_new_snapshot_from_a_killed_compaction_is_ignored_then_removed(db, small_compaction):
    held = store_with_journal(db, 2)
    # What a compaction killed before its rename leaves: a whole or partial copy at PATH.new.
    new_path = db.parent / (db.name + ".new")
    shutil.copyfile(db, new_path)
    import dbm.gnu
    with dbm.gnu.open(str(new_path), "w") as bogus:
        bogus[b"a/169.254.175.200"] = json.dumps({"id": "ghost", "container": None, "ifname": None,
                                                   "subnet": V4, "allocated_at": 0}).encode()
    assert [a[0] for a in state(db)[0]] == held  # readers never look at PATH.new

    held.append(add(db, "next")[0])
    assert [a[0] for a in state(db)[0]] == held
    while journal_path(db).exists():  # commit until a compaction writes a new snapshot
        held.append(add(db, f"more-{len(held)}")[0])
    assert not new_path.exists()
    assert [a[0] for a in state(db)[0]] == sorted(held, key=_address_key)
    assert "169.254.175.200" not in held


def test_garbage_leftover_new_file_does_not_stop_the_first_snapshot(db):
    db.parent.mkdir(parents=True)
    (db.parent / (db.name + ".new")).write_bytes(b"half a gdbm file")
    assert add(db, "first") == ["169.254.172.2"]
    assert not (db.parent / (db.name + ".new")).exists()
    assert [a[0] for a in state(db)[0]] == ["169.254.172.2"]


class Crash(BaseException):
    """Stands for SIGKILL in this process: nothing after it runs, no cleanup pretends otherwise."""


def test_crash_between_snapshot_rename_and_journal_removal_replays_idempotently(db, small_compaction,
                                                                                monkeypatch):
    held = [add(db, f"id-{n}")[0] for n in range(small_compaction)]  # 1 snapshot + 4 records
    real_unlink = os.unlink

    def crash_before_journal_removal(path, *args, **kwargs):
        if str(path) == str(journal_path(db)):
            raise Crash()
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", crash_before_journal_removal)
    with pytest.raises(Crash):
        respond(db, "ADD", config("compacting"))
    monkeypatch.setattr(os, "unlink", real_unlink)

    # Both the new snapshot (with all 5 records in it) and the whole journal are on disk.
    assert len(journal_lines(db)) == small_compaction + 1
    with open_store(str(db), 5, writable=False) as store:
        assert store.problems() == []
    import dbm.gnu
    with dbm.gnu.open(str(db), "r") as snapshot:
        assert b"i/compacting" in snapshot
    after_crash = state(db)
    assert len(after_crash[0]) == small_compaction + 1
    # Replayed over a snapshot that already holds it, the journal changes nothing...
    assert state(db) == after_crash
    # ...and the store carries on: DEL and ADD work, the next commits compact again.
    delete(db, "id-0")
    assert not journal_path(db).exists()  # 6 records >= 5: compacted again, journal gone
    assert held[0] not in [a[0] for a in state(db)[0]]
    assert add(db, "later")[0] not in held
    assert len(journal_lines(db)) == 2
    assert len(state(db)[0]) == small_compaction + 1


def _address_key(text):
    address = ipaddress.ip_address(text)
    return address.version, address


# --- fault injection: kill a session before and after each of its file operations -------------

def run_child(db, kill_at, command, doc, container=None):
    return kill_points.run_child(environ(db, command, container), doc, kill_at)


def kill_everywhere(tmp_path, prepare, command, doc, container=None):
    """Kill `command` at each of its kill points on copies of a prepared store.

    After each kill the store must hold exactly what it held before the call or exactly
    what it holds after an unkilled call, be sound, and take the next ADD.
    """
    origin = tmp_path / "origin" / "ipam.db"
    prepare(origin)
    if not origin.parent.exists():
        origin.parent.mkdir(parents=True)
    before = state(origin)

    def fresh_copy(name):
        place = tmp_path / name
        shutil.copytree(origin.parent, place)
        return place / "ipam.db"

    finished = fresh_copy("finished")
    done = run_child(finished, -1, command, doc, container)
    assert done.returncode == 0, done
    report = json.loads(done.stdout)
    assert report["code"] == 0, report
    after = state(finished)
    assert after != before
    files_after = sorted(p.name for p in finished.parent.iterdir())

    for kill_at in range(report["points"]):
        db = fresh_copy(f"killed-{kill_at}")
        proc = run_child(db, kill_at, command, doc, container)
        assert proc.returncode == -signal.SIGKILL, (kill_at, proc)
        now = state(db)
        assert now in (before, after), f"killed at point {kill_at}: the store is neither as before nor as after"
        if kill_at == report["points"] - 1:  # after the last operation the commit is whole
            assert now == after
        held = {a[0] for a in now[0]}
        assert add(db, "next-after-kill")[0] not in held
        state(db)
        shutil.rmtree(db.parent)
    return report["points"], files_after


def test_kill_at_every_step_of_the_first_snapshot(tmp_path):
    points, files = kill_everywhere(tmp_path, lambda db: None, "ADD", config("first", v6=True))
    assert points >= 10 and "ipam.db" in files


@pytest.mark.parametrize("command, doc, container", [
    ("ADD", config("appended", v6=True), "ctr-new"),
    ("DEL", config(), "ctr-0"),  # by container (ctr-0 has no id): both families
    ("DEL", config("id-1"), None),
])
def test_kill_at_every_step_of_a_journal_append(tmp_path, command, doc, container):
    def prepare(db):
        for n in range(3):
            add(db, f"id-{n}" if n else None, container=f"ctr-{n}", v6=n % 2 == 0)

    kill_everywhere(tmp_path, prepare, command, doc, container)


def test_kill_at_every_step_of_an_append_over_a_torn_tail(tmp_path):
    def prepare(db):
        for n in range(3):
            add(db, f"id-{n}")
        with open(journal_path(db), "ab") as journal:
            journal.write(b"0badf00d [[\"a/169.2")

    kill_everywhere(tmp_path, prepare, "ADD", config("appended"))


@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_kill_at_every_step_of_a_compaction(tmp_path, command):
    def prepare(db):
        for n in range(COMPACT_AFTER):  # the snapshot, then COMPACT_AFTER - 1 journal records
            add(db, f"id-{n}", container=f"ctr-{n}", v6=n % 3 == 0)
        assert len(journal_lines(db)) == COMPACT_AFTER

    doc = config("compacting", v6=True) if command == "ADD" else config("id-7")
    points, files = kill_everywhere(tmp_path, prepare, command, doc)
    assert "ipam.db.journal" not in files  # the unkilled call did compact
    assert points >= 20


# --- soak: SIGKILL real plugin processes at random moments ----------------------------------

class Soak:
    """Drives ADD/DEL processes for a set of ids, killing some, and keeps a model of what must hold.

    Each id is driven by one thread, one process at a time, so its model is exact: 'free'
    after a DEL that exited 0, the printed addresses after an ADD that exited 0, 'unknown'
    after a kill. Ids in an unknown state are DELed next (DEL is idempotent); only a free
    id is ADDed.
    """

    def __init__(self, plugin, seed):
        self.plugin = plugin
        self.random = random.Random(seed)
        self.guard = threading.Lock()
        self.model = {}  # id -> None (free), tuple of addresses, or "unknown"
        self.kills = self.finished = self.commits = 0
        self.durations = []
        self.failures = []

    def delay(self):
        """A kill moment: 0-30 ms after start, stretched to the processes' current run time."""
        with self.guard:
            recent = self.durations[-50:]
            span = max(0.030, statistics.median(recent)) if recent else 0.030
            return self.random.uniform(0, span), self.random.random() < 0.3

    def run(self, command, doc, container):
        env = self.plugin.env(command, {"CNI_CONTAINERID": container, "IPAM_DB_CONNECTION_TIMEOUT": "60s"})
        delay, kill = self.delay()
        began = time.monotonic()
        proc = start([self.plugin.artifact], env, json.dumps(doc).encode(), start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=delay if kill else 120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group, whatever the artifact starts
            stdout, stderr = proc.communicate()
        outcome = Outcome(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
        with self.guard:
            if outcome.code == -signal.SIGKILL:
                self.kills += 1
            else:
                self.finished += 1
                self.durations.append(time.monotonic() - began)
        return outcome

    def drive(self, ids, deadline, goal):
        try:
            while time.monotonic() < deadline and not goal():
                holder = self.random.choice(ids)
                with self.guard:
                    known = self.model.get(holder)
                container = f"ctr-{holder}"
                # Two holders in three have an id; the others are known by their container alone.
                holder_id = holder if int(holder[1:]) % 3 else None
                if known is None:
                    outcome = self.run("ADD", config(holder_id, v6=self.random.random() < 0.5), container)
                    if outcome.code == -signal.SIGKILL:
                        self.settle(holder, "unknown")
                        continue
                    assert outcome.code == 0, (holder, outcome)
                    addresses = tuple(ip["address"].split("/")[0] for ip in outcome.json["ips"])
                    with self.guard:
                        for other, held in self.model.items():
                            if isinstance(held, tuple):
                                twice = set(held) & set(addresses)
                                assert not twice, f"{twice} handed to {holder} while {other} holds it"
                    self.settle(holder, addresses)
                else:
                    # By id, or by container for a holder without one (from both subnets: the
                    # ADD's config may have had either). From the moment the DEL starts, the
                    # holder's addresses may be free: another thread's ADD may get one before
                    # this thread sees the DEL's exit.
                    with self.guard:
                        self.model[holder] = "unknown"
                    outcome = self.run("DEL", config(holder_id, v6=True), container)
                    if outcome.code == -signal.SIGKILL:
                        self.settle(holder, "unknown")
                        continue
                    assert (outcome.code, outcome.stdout) == (0, ""), (holder, outcome)
                    self.settle(holder, None, commit=known != "unknown")
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            with self.guard:
                self.failures.append(err)

    def settle(self, holder, value, commit=None):
        with self.guard:
            self.model[holder] = value
            if commit if commit is not None else isinstance(value, tuple):
                self.commits += 1


def test_random_sigkills_during_concurrent_add_and_del(plugin):
    # Warm start first: the kills are aimed at the store, not at a first unpacking of the artifact.
    assert plugin.run("VERSION").code == 0
    seed = int(os.environ.get("ECS_IPAM_SOAK_SEED", "1"))
    print(f"soak: ECS_IPAM_SOAK_SEED={seed}")  # the choices replay; kill timing still varies with the machine
    soak = Soak(plugin, seed)
    workers = 4
    ids = [f"c{n:03d}" for n in range(48)]
    deadline = time.monotonic() + 600  # a safety net only: the soak runs until its goal

    def goal():
        return soak.kills >= 300 and soak.commits >= 3 * COMPACT_AFTER + 32

    threads = [threading.Thread(target=soak.drive, args=(ids[n::workers], deadline, goal)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not soak.failures, soak.failures[0]
    print(f"soak: {soak.kills} kills, {soak.finished} finished, >= {soak.commits} commits, "
          f"median run {statistics.median(soak.durations) * 1000:.1f} ms")
    assert goal(), (soak.kills, soak.commits)  # 300 kills, and at least three compactions ran

    with open_store(str(plugin.db_path), 5, writable=False) as store:
        assert store.problems() == []
        held = {}
        for allocation in store.allocations():
            holder = allocation.id or allocation.container[len("ctr-"):]
            held.setdefault(holder, []).append(allocation.address)
        for holder, known in soak.model.items():
            mine = sorted(map(str, held.get(holder, [])))
            if known is None:
                assert not mine, f"{holder}'s DEL exited 0, yet it holds {mine}"
            elif known == "unknown":
                # Killed mid-call: either nothing, or a whole ADD (one address per family).
                versions = [address.version for address in held.get(holder, [])]
                assert versions in ([], [4], [4, 6]), (holder, mine)
            else:
                assert mine == sorted(known), f"{holder}'s ADD printed {known}, the store has {mine}"
        assert set(held) <= set(soak.model)
        count = len(store.allocations())
    # The operator's check agrees...
    checked = run_db(plugin, ["check"])
    assert checked.code == 0 and f"sound, {count} allocation(s)" in checked.stdout, checked
    # ...and the plugin itself carries on over the store.
    outcome = plugin.run("ADD", config("final", v6=True), env={"CNI_CONTAINERID": "final"})
    assert outcome.code == 0, outcome


# --- a compaction that fails ----------------------------------------------------------------

@pytest.mark.parametrize("errno_name", ["ENOSPC", "EIO"])
def test_failed_compaction_does_not_fail_the_commit_the_journal_already_holds(db, small_compaction, monkeypatch,
                                                                              errno_name):
    """The commit is durable once its record is fsynced; folding the journal is housekeeping.

    Reporting the ADD as failed would leak its address (the store holds it, the runtime
    thinks it has none); a DEL reported as failed would be retried for nothing.
    """
    for n in range(small_compaction):  # the snapshot, then small_compaction - 1 records
        add(db, f"id-{n}")

    def full_disk(*args, **kwargs):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    monkeypatch.setattr(os, "sendfile", full_disk)  # the snapshot copy of a compaction
    output, code = respond(db, "ADD", config("compacting"))
    assert code == 0, output
    address = output["ips"][0]["address"].split("/")[0]
    assert not (db.parent / (db.name + ".new")).exists()  # nothing half-written left behind
    assert address in [a[0] for a in state(db)[0]]
    # The journal still holds everything, and a note of why the compaction failed.
    *records, tail = journal_lines(db)
    assert len(records) == small_compaction + 1 and tail == b""
    assert b'"compaction-failure"' in records[-1] and os.strerror(getattr(errno, errno_name)).encode() in records[-1]

    # DEL too; and once the disk has room again the next commit compacts.
    delete(db, "id-0")
    monkeypatch.undo()
    monkeypatch.setattr(disk_module, "COMPACT_AFTER", small_compaction)
    add(db, "after")
    assert not journal_path(db).exists()
    held = [a[0] for a in state(db)[0]]
    assert address in held and "169.254.172.2" not in held and len(held) == small_compaction + 1


# --- durability: what an ADD reports is on disk, directory entries included -------------------

def test_first_add_in_new_directories_fsyncs_every_new_entry_before_reporting(tmp_path, monkeypatch):
    """A power loss after the ADD returned must not lose it: not the store, not its directory.

    Each new name (the directories made for IPAM_DB_PATH, then the snapshot) is durable
    only once the directory holding it has been fsynced after it appeared.
    """
    db = tmp_path / "data" / "ecs" / "ipam.db"
    real_fsync = os.fsync
    synced = []  # paths fsynced, in order

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    add(db, "first")
    monkeypatch.undo()

    for name, holder in ((db.parent.parent, tmp_path), (db.parent, db.parent.parent), (db, db.parent)):
        assert name.exists()
        assert str(holder) in synced, f"{holder} was never fsynced after {name.name} appeared in it"
    assert synced.index(str(db) + ".new") < synced.index(str(db.parent))  # the snapshot's data, then its name


class FileOperations:
    """Records the store's file operations in order, as (operation, path), to check fsync ordering."""

    def __init__(self, monkeypatch):
        self.log = []
        self.paths = {}
        for name in ("open", "write", "fsync", "ftruncate", "rename", "unlink", "close"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))

    def _wrap(self, name, real):
        def operation(*args, **kwargs):
            value = real(*args, **kwargs)
            if name == "open":
                self.paths[value] = str(args[0])
            elif name in ("rename",):
                self.log.append((name, f"{args[0]} -> {args[1]}"))
            elif name == "unlink":
                self.log.append((name, str(args[0])))
            elif name != "close":
                self.log.append((name, self.paths.get(args[0], f"fd {args[0]}")))
            return value
        return operation

    def index(self, operation, path, after=-1):
        """The position of the first (operation, path) after position `after`."""
        for position in range(after + 1, len(self.log)):
            if self.log[position] == (operation, str(path)):
                return position
        raise AssertionError(f"no {operation} of {path} after step {after} in {self.log}")


def test_journal_appends_and_compactions_fsync_in_the_right_order(db, small_compaction, monkeypatch):
    """What a power loss leaves is what was fsynced: each step is synced before the next depends on it."""
    add(db, "first")  # the snapshot
    journal = journal_path(db)

    ops = FileOperations(monkeypatch)
    add(db, "creates-the-journal")
    write = ops.index("write", journal)
    synced = ops.index("fsync", journal, write)
    ops.index("fsync", db.parent, synced)  # the journal's name is durable too
    monkeypatch.undo()
    monkeypatch.setattr(disk_module, "COMPACT_AFTER", small_compaction)

    for n in range(small_compaction - 2):
        add(db, f"id-{n}")
    ops = FileOperations(monkeypatch)
    add(db, "compacting")  # the journal's 5th record: append, then compact
    new = f"{db}.new"
    write = ops.index("write", journal)
    committed = ops.index("fsync", journal, write)
    snapshot_synced = ops.index("fsync", new, committed)
    renamed = ops.index("rename", f"{new} -> {db}", snapshot_synced)
    # Only once the new snapshot's name is durable may the journal go: else a power loss could
    # keep the removal and lose the rename, and with them the journal's records.
    name_synced = ops.index("fsync", db.parent, renamed)
    ops.index("unlink", journal, name_synced)
    assert not journal.exists()
