"""Unit tests of the store: allocations and indexes, and the snapshot + journal on disk."""

import dbm.gnu
import ipaddress
import os
import stat
from pathlib import Path

import pytest

from ecs_ipam import disk
from ecs_ipam.errors import CNIError
from ecs_ipam.disk import open_store
from ecs_ipam.store import Allocation, DictTables, Store

SUBNET = ipaddress.ip_network("10.0.0.0/24")


def allocation(last_octet, holder="task", container="c1", ifname="eth0"):
    return Allocation(ipaddress.ip_address(f"10.0.0.{last_octet}"), holder, container, ifname, SUBNET, 1700000000)


def test_reserve_release_and_indexes():
    store = Store(DictTables())
    store.reserve(allocation(2))
    store.reserve(allocation(3, holder=None, container="c2"))
    assert store.allocation_at(ipaddress.ip_address("10.0.0.2")) == allocation(2)
    assert [a.address.packed[-1] for a in store.held_by_id("task")] == [2]
    assert [a.address.packed[-1] for a in store.held_by_container("c2")] == [3]
    assert store.held_by_container("c2", "eth1") == []
    assert store.cursor(SUBNET) is None  # the cursor is the allocator's to move, not the record's
    assert store.release(ipaddress.ip_address("10.0.0.2")) == allocation(2)
    assert store.release(ipaddress.ip_address("10.0.0.2")) is None
    assert store.held_by_id("task") == []
    assert store.cursor(SUBNET) is None
    store.set_cursor(SUBNET, ipaddress.ip_address("10.0.0.3"))
    assert store.cursor(SUBNET) == ipaddress.ip_address("10.0.0.3")
    assert store.problems() == []


def test_problems_finds_broken_indexes():
    tables = DictTables()
    store = Store(tables)
    store.reserve(allocation(2))
    tables.put("i/task", '["10.0.0.9"]')
    tables.put("junk", "x")
    tables.put("h/4/9", "ff")
    found = " ".join(store.problems())
    assert "i/task" in found and "10.0.0.9" in found and "junk" in found and "h/4/9" in found


def test_held_bitmaps_follow_reserve_and_release():
    tables = DictTables()
    store = Store(tables)
    block = int(ipaddress.ip_address("10.0.0.2")) // 1024
    store.reserve(allocation(2))
    store.reserve(allocation(3, holder="other"))
    assert store.held_bits(4, block) >> (int(ipaddress.ip_address("10.0.0.0")) % 1024) == 0b1100
    store.release(ipaddress.ip_address("10.0.0.2"))
    store.release(ipaddress.ip_address("10.0.0.3"))
    assert store.held_bits(4, block) == 0 and not [k for k in tables.keys() if k.startswith("h/")]
    assert store.problems() == []


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
    bolt = (Path(__file__).resolve().parent / "fixtures" / "go-plugin-boltdb" / "ipv4-basic.db").read_bytes()
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
