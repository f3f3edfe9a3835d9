"""ecs_ipam.disk in process: the session over the snapshot and journal, its refusals, commit_problem."""

import dbm.gnu
import ipaddress
import os
import stat

import pytest

from ecs_ipam import disk
from ecs_ipam.disk import GoPluginStore, open_store
from ecs_ipam.errors import CNIError
from ecs_ipam.store import Allocation
from go_fixtures import SUBNETS, fixture, go_holders

SUBNET = ipaddress.ip_network("10.0.0.0/24")


def allocation(last_octet, holder="task", container="c1", ifname="eth0"):
    return Allocation(ipaddress.ip_address(f"10.0.0.{last_octet}"), holder, container, ifname, SUBNET, 1700000000)


def test_disk_round_trip_modes_and_first_snapshot(tmp_path):
    path = str(tmp_path / "a" / "b" / "ipam.db")
    with open_store(path, 5) as store:
        store.reserve(allocation(2))
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not os.path.exists(path + ".journal")  # the first commit writes the snapshot itself
    with dbm.gnu.open(path, "r") as raw:
        assert raw[b"layout"] == b"1" and b"a/10.0.0.2" in raw
    with open_store(path, 5) as store:
        store.reserve(allocation(3, holder="other"))
    assert stat.S_IMODE(os.stat(path + ".journal").st_mode) == 0o600
    with open_store(path, 5, writable=False) as store:
        assert [str(a.address) for a in store.allocations()] == ["10.0.0.2", "10.0.0.3"]


def test_an_exception_discards_the_session(tmp_path):
    path = str(tmp_path / "ipam.db")
    with open_store(path, 5) as store:
        store.reserve(allocation(2))
    with pytest.raises(RuntimeError):
        with open_store(path, 5) as store:
            store.reserve(allocation(3))
            raise RuntimeError("half-way")
    with open_store(path, 5, writable=False) as store:
        assert store.allocation_at(ipaddress.ip_address("10.0.0.3")) is None


def test_compaction_folds_the_journal_into_the_snapshot(tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "COMPACT_AFTER", 3)
    path = str(tmp_path / "ipam.db")
    for octet in range(2, 9):
        with open_store(path, 5) as store:
            store.reserve(allocation(octet, holder=f"t{octet}"))
    # 1 snapshot commit, then journal commits 1..3 -> compaction, then 1..3 -> compaction.
    assert not os.path.exists(path + ".journal")
    with dbm.gnu.open(path, "r") as raw:
        assert sum(key.startswith(b"a/") for key in raw.keys()) == 7
    with open_store(path, 5, writable=False) as store:
        assert len(store.allocations()) == 7 and store.problems() == []


def test_read_only_session_creates_nothing(tmp_path):
    path = str(tmp_path / "none" / "ipam.db")
    with open_store(path, 5, writable=False) as store:
        assert store.allocations() == []
    assert not os.path.exists(tmp_path / "none")


def test_foreign_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "ipam.db"
    bolt = fixture("ipv4-basic")[0].read_bytes()
    path.write_bytes(bolt)
    with pytest.raises(CNIError) as caught:
        with open_store(str(path), 5) as store:
            store.reserve(allocation(2))
    assert caught.value.code == 5 and "BoltDB" in caught.value.msg and str(path) in caught.value.msg
    assert path.read_bytes() == bolt
    path.write_bytes(b"")
    with pytest.raises(CNIError) as caught:
        with open_store(str(path), 5):
            pass
    assert "empty" in caught.value.msg


def test_newer_layout_is_refused(tmp_path):
    path = str(tmp_path / "ipam.db")
    with dbm.gnu.open(path, "c") as raw:
        raw[b"layout"] = b"2"
    with pytest.raises(CNIError) as caught:
        with open_store(path, 5):
            pass
    assert caught.value.code == 5 and "'2'" in caught.value.msg


def test_unwritable_directory_is_code_5_naming_the_path(tmp_path):
    if os.geteuid() == 0:
        # root ignores modes; a file where the directory should be fails the same way for anyone
        blocker = tmp_path / "file"
        blocker.write_text("")
        path = str(blocker / "ipam.db")
    else:
        os.chmod(tmp_path, 0o500)
        path = str(tmp_path / "sub" / "ipam.db")
    with pytest.raises(CNIError) as caught:
        with open_store(path, 5) as store:
            store.reserve(allocation(2))
    assert caught.value.code == 5 and str(tmp_path) in caught.value.msg


def test_a_symlinked_store_path_keeps_writing_through_the_link(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    link = tmp_path / "ipam.db"
    link.symlink_to(volume / "ipam.db")
    for octet in (2, 3):
        with open_store(str(link), 5) as store:
            store.reserve(allocation(octet, holder=f"t{octet}"))
    assert link.is_symlink()
    with dbm.gnu.open(str(volume / "ipam.db"), "r") as raw:
        assert raw[b"layout"] == b"1"
    with open_store(str(volume / "ipam.db"), 5, writable=False) as store:
        assert [str(a.address) for a in store.allocations()] == ["10.0.0.2", "10.0.0.3"]


# -- what is at the path, before any lock file is made beside it -----------------------------

def test_a_directory_at_the_path_is_code_5_and_nothing_is_made_in_it(tmp_path):
    path = tmp_path / "ipam.db"
    path.mkdir()
    with pytest.raises(CNIError) as caught:
        with open_store(str(path), 5):
            pass
    assert caught.value.code == 5 and "is a directory" in caught.value.msg and str(path) in caught.value.msg
    assert "names the store's file" in caught.value.details
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ipam.db"] and not list(path.iterdir())


def test_a_symlinked_journal_is_refused_and_its_target_untouched(tmp_path):
    path = tmp_path / "ipam.db"
    with open_store(str(path), 5) as store:
        store.reserve(allocation(2))
    target = tmp_path / "elsewhere"
    (tmp_path / "ipam.db.journal").symlink_to(target)
    for writable in (True, False):
        with pytest.raises(CNIError) as caught:
            with open_store(str(path), 5, writable=writable) as store:
                store.reserve(allocation(3))
        assert caught.value.code == 5 and "ipam.db.journal is a symbolic link" in caught.value.msg
    assert not target.exists()


def test_the_go_plugins_file_is_go_plugin_store_without_subnets_and_no_lock_is_made(go_store):
    path = go_store("ipv4-basic")
    for writable in (True, False):
        with pytest.raises(GoPluginStore) as caught:
            with open_store(str(path), 5, writable=writable):
                pass
        assert caught.value.code == 5 and "BoltDB" in caught.value.msg and "import-bolt" in caught.value.details
    assert path.read_bytes() == fixture("ipv4-basic")[0].read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_with_the_configs_subnets_the_go_plugins_file_is_upgraded_and_said_so(go_store):
    path = go_store("dual-stack")
    subnets = [ipaddress.ip_network(cidr) for cidr in SUBNETS["dual-stack"].values()]
    warnings = []
    with open_store(str(path), 5, upgrade_subnets=subnets, warn=warnings.append) as store:
        held = {str(a.address): a.id for a in store.allocations()}
    assert held == go_holders(fixture("dual-stack")[1]["dump"])
    assert len(warnings) == 1 and "upgraded the Go plugin's store" in warnings[0]
    assert (path.parent / f"{path.name}.go-plugin").read_bytes() == fixture("dual-stack")[0].read_bytes()
    assert disk.filekind.kind_of_file(path) == disk.filekind.GDBM


# -- sessions that must not make a store ------------------------------------------------------

def test_must_exist_is_no_store_at_path_and_makes_nothing(tmp_path):
    path = tmp_path / "none" / "ipam.db"
    with pytest.raises(CNIError) as caught:
        with open_store(str(path), 5, writable=False, must_exist=True):
            pass
    assert caught.value.code == 5 and caught.value.msg == f"no store at {path}"
    assert not path.parent.exists()


def test_a_session_that_only_releases_makes_no_store_where_none_is(tmp_path):
    path = tmp_path / "none" / "ipam.db"
    with open_store(str(path), 5, create=False) as store:
        assert store.allocations() == [] and store.release(ipaddress.ip_address("10.0.0.2")) is None
    assert not path.parent.exists()


def test_committed_lists_what_the_session_allocated_and_released(tmp_path):
    path = str(tmp_path / "ipam.db")
    with open_store(path, 5) as store:
        store.reserve(allocation(2))
        store.reserve(allocation(3, holder="other"))
    session = open_store(path, 5)
    with session as store:
        store.release(ipaddress.ip_address("10.0.0.2"))
        store.reserve(allocation(4, holder="third"))
        assert session.committed == []  # not before the commit
    assert session.committed == [("released", allocation(2)), ("allocated", allocation(4, holder="third"))]
    reader = open_store(path, 5, writable=False)
    with reader as store:
        store.reserve(allocation(5, holder="never"))
    assert reader.committed == []
    with open_store(path, 5, writable=False) as store:
        assert [str(a.address) for a in store.allocations()] == ["10.0.0.3", "10.0.0.4"]


# -- commit_problem: whether an ADD could commit now --------------------------------------------

def test_commit_problem_is_none_where_an_add_could_commit(tmp_path):
    session = open_store(str(tmp_path / "not" / "yet" / "ipam.db"), 5, writable=False)
    with session:
        pass
    assert session.commit_problem() is None  # an ADD would make the directories in tmp_path


def test_commit_problem_names_a_file_where_the_directory_would_be(tmp_path):
    (tmp_path / "a-file").write_text("")
    session = open_store(str(tmp_path / "a-file" / "sub" / "ipam.db"), 5, writable=False)
    assert session.commit_problem() == (f"{tmp_path / 'a-file'} is not a directory, so "
                                        f"{tmp_path / 'a-file' / 'sub' / 'ipam.db'} cannot be made")


def test_commit_problem_names_a_journal_compaction_keeps_failing_to_fold(tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "JOURNAL_LIMIT", 2)
    path = tmp_path / "ipam.db"
    with open_store(str(path), 5) as store:
        store.reserve(allocation(2))  # the first snapshot
    for octet in (3, 4, 5):
        with open_store(str(path), 5) as store:
            store.reserve(allocation(octet, holder=f"t{octet}"))  # three journal records
    session = open_store(str(path), 5, writable=False)
    with session:
        pass
    problem = session.commit_problem()
    assert problem.startswith(f"the journal {path}.journal holds 3 records (over 2)"), problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the modes say")
def test_commit_problem_names_a_directory_this_user_cannot_write(tmp_path):
    os.chmod(tmp_path, 0o500)
    try:
        assert open_store(str(tmp_path / "ipam.db"), 5).commit_problem() == f"{tmp_path} is not writable by this user"
    finally:
        os.chmod(tmp_path, 0o700)
