"""ecs_ipam.bolt: the Go plugin's stores read back as its own library reads them; damage gives a clear error."""

import dbm.gnu
import fcntl
import os
import shutil
import struct

import pytest

from ecs_ipam.bolt import MAGIC, fnv1a64, read_bucket
from ecs_ipam.errors import IO_FAILURE, TRY_AGAIN_LATER, CNIError
from go_fixtures import NAMES, dump_entries, fixture

META_CHECKSUM = 16 + 56  # offset of the checksum in a meta page


def entries(pairs):
    """read_bucket's pairs as the dump shows them: (key, libkv counter, payload)."""
    return [(key, struct.unpack("<Q", value[:8])[0], value[8:]) for key, value in pairs]


@pytest.mark.parametrize("name", NAMES)
def test_reads_what_the_go_library_reads(name):
    path, doc = fixture(name)
    assert entries(read_bucket(str(path), b"IPAM")) == dump_entries(doc["dump"])


@pytest.mark.parametrize("name", NAMES)
def test_reading_changes_nothing(tmp_path, name):
    path = tmp_path / "eni-ipam.db"
    shutil.copyfile(fixture(name)[0], path)
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    read_bucket(str(path), b"IPAM")
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert os.listdir(tmp_path) == ["eni-ipam.db"]


def damaged_copy(tmp_path, name, change):
    data = bytearray(fixture(name)[0].read_bytes())
    change(data)
    path = tmp_path / f"{name}.db"
    path.write_bytes(bytes(data))
    return str(path)


def refused(path, *fragments, code=IO_FAILURE):
    with pytest.raises(CNIError) as caught:
        read_bucket(path, b"IPAM")
    text = caught.value.msg + " " + caught.value.details
    assert caught.value.code == code, text
    for fragment in (path, *fragments):
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


def the_transaction_before_the_last(name):
    """(holders, lastKnownIP) that the meta page before the current one reaches, from the fixture.

    The fixture's last step is a DEL; the Go plugin commits a release in two transactions (the
    address's key removed, then lastKnownIP moved to it), so the transaction before the last
    already lacks the released address but still has the cursor the step before left: the
    address that step's ADD got.
    """
    steps, dump = fixture(name)[1]["steps"], fixture(name)[1]["dump"]
    assert steps[-1]["command"] == "DEL" and steps[-2]["command"] == "ADD"
    previous_cursor = steps[-2]["result"]["ips"][-1]["address"].split("/")[0]
    holders = {key: payload for key, _, payload in dump_entries(dump) if not key.startswith(b"lastKnownIP")}
    return holders, previous_cursor.encode()


def read_older(path):
    pairs = {key: value[8:] for key, value in read_bucket(path, b"IPAM")}
    cursor = pairs.pop(b"lastKnownIP")
    return pairs, cursor


def test_a_bad_checksum_falls_back_to_the_other_meta_page(tmp_path):
    def flip(data):
        data[META_CHECKSUM] ^= 0xFF
    assert read_older(damaged_copy(tmp_path, "ipv4-basic", flip)) == the_transaction_before_the_last("ipv4-basic")


def test_both_meta_checksums_bad(tmp_path):
    def flip_both(data):
        data[META_CHECKSUM] ^= 0x01
        data[4096 + META_CHECKSUM] ^= 0x01
    refused(damaged_copy(tmp_path, "ipv4-basic", flip_both), "neither meta page is valid",
            "page 0 has a bad checksum, page 1 has a bad checksum")


def test_a_flipped_meta_field_fails_its_checksum(tmp_path):
    def flip_root(data):
        data[16 + 16] ^= 0x04  # page 0's root page id
    # page 1 is still valid: the older transaction is read
    assert read_older(damaged_copy(tmp_path, "ipv4-basic", flip_root)) == the_transaction_before_the_last(
        "ipv4-basic")


def test_a_damaged_magic_falls_back_to_the_other_meta_page(tmp_path):
    def zero_magic(data):
        data[16:20] = bytes(4)
    assert read_older(damaged_copy(tmp_path, "ipv4-basic", zero_magic)) == the_transaction_before_the_last(
        "ipv4-basic")


def test_another_bolt_version(tmp_path):
    def version_3(data):
        for page in (0, 4096):
            data[page + 20] = 3
    refused(damaged_copy(tmp_path, "ipv4-basic", version_3), "version 3")


def test_truncated_file(tmp_path):
    def truncate(data):
        del data[20 * 4096:]
    refused(damaged_copy(tmp_path, "ecs-link-local-1000", truncate), "truncated")


def test_truncated_to_its_first_meta_page(tmp_path):
    def truncate(data):
        del data[4096:]
    refused(damaged_copy(tmp_path, "ipv4-basic", truncate), "truncated")


def test_a_gdbm_file(tmp_path):
    path = str(tmp_path / "ipam.db")
    with dbm.gnu.open(path, "n") as db:
        db[b"layout"] = b"1"
    refused(path, "not a BoltDB file", "dbm.gnu")


def test_an_empty_file(tmp_path):
    path = tmp_path / "eni-ipam.db"
    path.write_bytes(b"")
    refused(str(path), "not a BoltDB file", "empty")


def test_a_text_file(tmp_path):
    path = tmp_path / "eni-ipam.db"
    path.write_bytes(b"not a database\n" * 100)
    refused(str(path), "not a BoltDB file")


def test_a_missing_file(tmp_path):
    refused(str(tmp_path / "nothing.db"), "No such file")


def test_a_directory(tmp_path):
    refused(str(tmp_path), "cannot read")


def test_a_file_another_process_has_open_for_writing(tmp_path):
    path = tmp_path / "eni-ipam.db"
    shutil.copyfile(fixture("ipv4-basic")[0], path)
    with open(path, "rb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # as bolt does while the Go plugin has it open
        refused(str(path), "locked", code=TRY_AGAIN_LATER)
    assert read_bucket(str(path), b"IPAM")


# -- files made here, for what the fixtures do not have --------------------------------------

class Bolt:
    """A small bolt file writer for tests: pages are laid out by hand."""

    def __init__(self, page_size=4096):
        self.page_size = page_size
        self.pages = {}

    def leaf(self, page_id, elements):
        """elements: [(key, value)] or [(key, value, flags)]."""
        self.pages[page_id] = self.padded(page_id, self.leaf_bytes(page_id, elements))
        return page_id

    def branch(self, page_id, children):
        """children: [(first key, child page id)]."""
        heads, data = b"", b""
        for index, (key, child) in enumerate(children):
            pos = 16 + 16 * len(children) + len(data) - (16 + 16 * index)
            heads += struct.pack("<IIQ", pos, len(key), child)
            data += key
        self.pages[page_id] = self.padded(page_id, struct.pack("<QHHI", page_id, 0x01, len(children), 0) + heads + data)
        return page_id

    @staticmethod
    def leaf_bytes(page_id, elements):
        heads, data = b"", b""
        for index, element in enumerate(elements):
            key, value, flags = (element + (0,))[:3]
            pos = 16 + 16 * len(elements) + len(data) - (16 + 16 * index)
            heads += struct.pack("<IIII", flags, pos, len(key), len(value))
            data += key + value
        return struct.pack("<QHHI", page_id, 0x02, len(elements), 0) + heads + data

    def padded(self, page_id, page):
        pages = -(-len(page) // self.page_size)
        page = page[:12] + struct.pack("<I", pages - 1) + page[16:]  # the overflow count
        return page.ljust(pages * self.page_size, b"\0")

    def meta(self, page_id, root, txid, high_water):
        fields = struct.pack("<IIIIQQQQQ", MAGIC, 2, self.page_size, 0, root, 0, 0, high_water, txid)
        page = struct.pack("<QHHI", page_id, 0x04, 0, 0) + fields + struct.pack("<Q", fnv1a64(fields))
        return page.ljust(self.page_size, b"\0")

    def write(self, path, root):
        """Both meta pages name root (page 0 with the higher txid); unset pages are zeros."""
        high_water = max([2] + [page_id + len(page) // self.page_size for page_id, page in self.pages.items()])
        data = bytearray(self.meta(0, root, 2, high_water) + self.meta(1, root, 1, high_water))
        data.extend(b"\0" * (high_water * self.page_size - len(data)))
        for page_id, page in self.pages.items():
            data[page_id * self.page_size:page_id * self.page_size + len(page)] = page
        path.write_bytes(bytes(data))
        return str(path)


def bucket_value(root, inline=None):
    return struct.pack("<QQ", root, 0) + (inline or b"")


def test_a_value_on_overflow_pages(tmp_path):
    big = b"\x01" + bytes(7) + b"x" * 9000
    bolt = Bolt()
    bolt.leaf(2, [(b"IPAM", bucket_value(3), 1)])
    bolt.leaf(3, [(b"10.0.0.2", big), (b"10.0.0.3", b"\x01" + bytes(7) + b"c3")])
    assert bolt.pages[3][12:16] == struct.pack("<I", 2)  # spans pages 3, 4 and 5
    assert read_bucket(bolt.write(tmp_path / "big.db", 2), b"IPAM") == [
        (b"10.0.0.2", big), (b"10.0.0.3", b"\x01" + bytes(7) + b"c3")]


def test_branch_pages_are_walked_in_key_order(tmp_path):
    bolt = Bolt(page_size=1024)
    bolt.leaf(2, [(b"IPAM", bucket_value(3), 1)])
    bolt.branch(3, [(b"a", 5), (b"m", 4)])
    bolt.leaf(4, [(b"m", b"2"), (b"z", b"3")])
    bolt.leaf(5, [(b"a", b"0"), (b"b", b"1")])
    assert read_bucket(bolt.write(tmp_path / "tree.db", 2), b"IPAM") == [
        (b"a", b"0"), (b"b", b"1"), (b"m", b"2"), (b"z", b"3")]


def test_an_inline_bucket_beside_others(tmp_path):
    bolt = Bolt()
    inline = Bolt.leaf_bytes(0, [(b"k", b"v")])
    bolt.leaf(2, [(b"AAA", bucket_value(0, Bolt.leaf_bytes(0, [])), 1), (b"IPAM", bucket_value(0, inline), 1)])
    assert read_bucket(bolt.write(tmp_path / "inline.db", 2), b"IPAM") == [(b"k", b"v")]


def test_a_page_size_found_when_the_first_meta_page_is_bad(tmp_path):
    bolt = Bolt(page_size=8192)
    bolt.leaf(2, [(b"IPAM", bucket_value(0, Bolt.leaf_bytes(0, [(b"k", b"v")])), 1)])
    path = tmp_path / "8k.db"
    bolt.write(path, 2)
    data = bytearray(path.read_bytes())
    data[META_CHECKSUM] ^= 0xFF
    path.write_bytes(bytes(data))
    assert read_bucket(str(path), b"IPAM") == [(b"k", b"v")]


def test_no_ipam_bucket(tmp_path):
    bolt = Bolt()
    bolt.leaf(2, [(b"other", bucket_value(0, Bolt.leaf_bytes(0, [])), 1)])
    refused(bolt.write(tmp_path / "other.db", 2), "no 'IPAM' bucket")


def test_ipam_that_is_not_a_bucket(tmp_path):
    bolt = Bolt()
    bolt.leaf(2, [(b"IPAM", b"a plain value")])
    refused(bolt.write(tmp_path / "plain.db", 2), "'IPAM' is not a bucket")


def test_a_nested_bucket(tmp_path):
    bolt = Bolt()
    inline = Bolt.leaf_bytes(0, [(b"inner", bucket_value(0, Bolt.leaf_bytes(0, [])), 1)])
    bolt.leaf(2, [(b"IPAM", bucket_value(0, inline), 1)])
    refused(bolt.write(tmp_path / "nested.db", 2), "nested bucket 'inner'")


def test_a_loop_between_pages(tmp_path):
    bolt = Bolt()
    bolt.leaf(2, [(b"IPAM", bucket_value(3), 1)])
    bolt.branch(3, [(b"a", 3)])
    refused(bolt.write(tmp_path / "loop.db", 2), "page 3 is reached twice")


def test_a_page_beyond_the_high_water_mark(tmp_path):
    bolt = Bolt()
    bolt.leaf(2, [(b"IPAM", bucket_value(99), 1)])
    refused(bolt.write(tmp_path / "far.db", 2), "page 99")


def test_a_page_that_is_not_what_it_says(tmp_path):
    bolt = Bolt()
    bolt.leaf(2, [(b"IPAM", bucket_value(3), 1)])
    bolt.pages[3] = bolt.padded(7, Bolt.leaf_bytes(7, []))
    refused(bolt.write(tmp_path / "moved.db", 2), "page 3", "says it is page 7")


def test_an_element_outside_its_page(tmp_path):
    bolt = Bolt()
    bolt.leaf(2, [(b"IPAM", bucket_value(3), 1)])
    page = bytearray(bolt.padded(3, Bolt.leaf_bytes(3, [(b"k", b"v")])))
    page[16 + 12:16 + 16] = struct.pack("<I", 100000)  # vsize
    bolt.pages[3] = bytes(page)
    refused(bolt.write(tmp_path / "long.db", 2), "an element of page 3")


def test_a_chain_of_branch_pages_deeper_than_any_real_tree(tmp_path):
    bolt = Bolt(page_size=1024)
    bolt.leaf(2, [(b"IPAM", bucket_value(3), 1)])
    for page_id in range(3, 200):
        bolt.branch(page_id, [(b"a", page_id + 1)])
    bolt.leaf(200, [(b"a", b"0")])
    refused(bolt.write(tmp_path / "deep.db", 2), "deeper than 64 pages")
