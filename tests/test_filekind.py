"""ecs_ipam.filekind: what a file at the store's path is, from its first bytes."""

import dbm.gnu

import pytest

from ecs_ipam import filekind
from go_fixtures import NAMES, fixture

# bolt's meta page: a 16-byte page header, then the magic 0xED0CDAED, little-endian on x86 and arm64.
BOLT_HEAD = bytes(16) + bytes.fromhex("edda0ced") + bytes(12)


def test_a_dbm_gnu_file_is_gdbm(tmp_path):
    path = tmp_path / "made-by-dbm.gnu"
    with dbm.gnu.open(str(path), "n") as made:
        made[b"key"] = b"value"
    assert filekind.kind_of_file(path) == filekind.GDBM


@pytest.mark.parametrize("name", NAMES)
def test_the_go_plugins_files_are_bolt(name):
    assert filekind.kind_of_file(fixture(name)[0]) == filekind.BOLT  # read, never written


@pytest.mark.parametrize("head, kind", [
    (b"", filekind.EMPTY),
    (BOLT_HEAD, filekind.BOLT),
    (BOLT_HEAD[:19], filekind.OTHER),  # cut inside the magic
    (bytes(4) + BOLT_HEAD[:-4], filekind.OTHER),  # the magic, but not where bolt puts it
    (b"SQLite format 3\x00" + bytes(16), filekind.OTHER),
    (b"hello, this is not a database\n", filekind.OTHER),
    (b"\xcd", filekind.OTHER),
])
def test_kind_of_a_head(head, kind):
    assert filekind.kind_of(head) == kind


def test_kind_of_file_reads_only_the_head_and_says_what_is_unreadable(tmp_path):
    path = tmp_path / "bolt-then-garbage"
    path.write_bytes(BOLT_HEAD + b"\xff" * 100000)
    assert filekind.kind_of_file(path) == filekind.BOLT
    with pytest.raises(FileNotFoundError):
        filekind.kind_of_file(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        filekind.kind_of_file(tmp_path)


def test_every_kind_has_a_description_saying_what_it_is():
    assert filekind.DESCRIPTIONS[filekind.GDBM] == "it is a dbm.gnu file"
    assert "BoltDB" in filekind.DESCRIPTIONS[filekind.BOLT] and "Go" in filekind.DESCRIPTIONS[filekind.BOLT]
    assert filekind.DESCRIPTIONS[filekind.EMPTY] == "the file is empty"
    assert set(filekind.DESCRIPTIONS) == {filekind.GDBM, filekind.BOLT, filekind.EMPTY, filekind.OTHER}
