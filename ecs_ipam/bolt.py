"""Reads a BoltDB file, such as the Go ecs-ipam plugin's store: the key/value pairs of one bucket, never writing.

Written from bolt's format facts (tests/fixtures/go-plugin-boltdb/README.md), not from its code:

- The file is a sequence of pages of one size. Pages 0 and 1 are meta pages; the current one
  is the one whose checksum is valid and whose transaction id is higher (a writer that died
  while writing one meta page leaves the other intact).
- A page starts with a header: id u64, flags u16, count u16, overflow u32. A page with
  overflow N spans N + 1 page sizes.
- A bucket is a B+tree: branch pages list (key, child page id); leaf pages list (flags, key,
  value), and an element flagged as a bucket holds a bucket header (root page id u64,
  sequence u64). A bucket whose root page id is 0 is inline: its one leaf page follows the header.
- The meta page names the root bucket, whose keys are the top-level buckets.

A Go writer holds an exclusive flock on the file while it has it open, and may be in the middle
of a transaction; so this reader takes a shared flock (which changes nothing in the file) and
refuses, rather than waits, when it is held.
"""

import errno
import fcntl
import os
import struct
from collections import namedtuple

from ecs_ipam import filekind
from ecs_ipam.errors import IO_FAILURE, TRY_AGAIN_LATER, CNIError

MAGIC = filekind.BOLT_MAGIC
FORMAT_VERSION = 2

Meta = namedtuple("Meta", "magic version page_size flags root sequence freelist high_water txid checksum")

_PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
_META = struct.Struct("<IIIIQQQQQQ")  # the fields of Meta; the checksum covers all but itself
_LEAF_ELEMENT = struct.Struct("<IIII")  # flags, pos, ksize, vsize; pos counts from the element
_BRANCH_ELEMENT = struct.Struct("<IIQ")  # pos, ksize, child page id
_BUCKET_HEADER = struct.Struct("<QQ")  # root page id (0: inline), sequence

_BRANCH_PAGE = 0x01
_LEAF_PAGE = 0x02
_BUCKET_ELEMENT = 0x01

# When the first meta page is bad it gives no page size, and the second is looked for at each of these.
_PAGE_SIZES = tuple(1024 << shift for shift in range(7))  # 1 KiB .. 64 KiB
# A B+tree of millions of keys is a few pages deep; a deeper one is a damaged file, not a bigger one.
_MAX_DEPTH = 64


def read_bucket(path, name):
    """The (key, value) byte pairs of the top-level bucket name in the BoltDB file at path, in key order."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _share_lock(fd, path)
            return _Reader(path, fd).bucket(name)
        finally:
            os.close(fd)  # releases the flock
    except OSError as err:
        raise CNIError(IO_FAILURE, f"cannot read {path}: {err.strerror}",
                       f"errno {errno.errorcode.get(err.errno, err.errno)}")


def read_locked(path, fd, name):
    """(the pairs of bucket name, the page size) of the BoltDB file open at fd, which the caller
    has locked (an exclusive flock, as for an upgrade in place)."""
    reader = _Reader(path, fd)
    return reader.bucket(name), reader.meta.page_size


def invalidate(fd, page_size):
    """Overwrite the magic of both meta pages of the BoltDB file open (writable) at fd, so that
    bolt refuses to open it ("invalid database") instead of reading or writing it."""
    for page in (0, 1):
        os.pwrite(fd, bytes(4), page * page_size + _PAGE_HEADER.size)
    os.fsync(fd)


def fnv1a64(data):
    """The 64-bit FNV-1a hash, bolt's meta page checksum."""
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def _share_lock(fd, path):
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CNIError(TRY_AGAIN_LATER, f"{path} is locked by another process (the Go plugin?)",
                       "make sure nothing uses it (stop the ECS agent) and try again")


class _Reader:
    """One open BoltDB file: its current meta page and the pages it reaches."""

    def __init__(self, path, fd):
        self.path = path
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self.meta = self._current_meta()
        self._visited = set()

    def bucket(self, name):
        for flags, key, value in self._elements(self.meta.root, "the root bucket"):
            if key == name:
                if not flags & _BUCKET_ELEMENT:
                    raise _damaged(self.path, f"its top-level key {_show(name)} is not a bucket")
                return list(self._bucket_pairs(name, value))
        raise _damaged(self.path, f"it has no {_show(name)} bucket",
                       "is it the Go ecs-ipam plugin's store? That plugin keeps everything in that bucket")

    def _bucket_pairs(self, name, header_and_page):
        where = f"bucket {_show(name)}"
        if len(header_and_page) < _BUCKET_HEADER.size:
            raise _damaged(self.path, f"the header of {where} is only {len(header_and_page)} bytes")
        root, _sequence = _BUCKET_HEADER.unpack_from(header_and_page)
        if root == 0:
            elements = _leaf_elements(header_and_page[_BUCKET_HEADER.size:], f"{where} (inline)", self.path)
        else:
            elements = self._elements(root, where)
        for flags, key, value in elements:
            if flags & _BUCKET_ELEMENT:
                raise _damaged(self.path, f"{where} holds a nested bucket {_show(key)}",
                               "the Go ecs-ipam plugin never writes one")
            yield key, value

    def _elements(self, page_id, where, depth=0):
        """The leaf elements (flags, key, value) of the tree rooted at page_id, in key order."""
        if depth > _MAX_DEPTH:
            raise _damaged(self.path, f"{where} is a tree deeper than {_MAX_DEPTH} pages, at page {page_id}")
        flags, page = self._page(page_id, where)
        if flags & _LEAF_PAGE:
            yield from _leaf_elements(page, f"page {page_id}", self.path)
        elif flags & _BRANCH_PAGE:
            for child in _branch_children(page, f"page {page_id}", self.path):
                yield from self._elements(child, where, depth + 1)
        else:
            raise _damaged(self.path, f"page {page_id} of {where} has flags {flags:#x}, not a branch or leaf page")

    def _page(self, page_id, where):
        """(flags, the page's bytes with its overflow pages) of page page_id."""
        if not 2 <= page_id < self.meta.high_water:
            raise _damaged(self.path, f"{where} points at page {page_id}, outside pages 2..{self.meta.high_water - 1}")
        if page_id in self._visited:
            raise _damaged(self.path, f"page {page_id} is reached twice (a loop in {where})")
        self._visited.add(page_id)
        offset = page_id * self.meta.page_size
        stored_id, flags, _count, overflow = _PAGE_HEADER.unpack(self._read(offset, _PAGE_HEADER.size, page_id))
        if stored_id != page_id:
            raise _damaged(self.path, f"page {page_id} of {where} says it is page {stored_id}")
        return flags, self._read(offset, (overflow + 1) * self.meta.page_size, page_id)

    def _read(self, offset, length, page_id):
        if offset + length > self._size:
            raise _damaged(self.path, f"it is truncated: page {page_id} needs bytes {offset}..{offset + length}, "
                                      f"but the file has {self._size}", "copy the whole file again")
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise _damaged(self.path, f"it is truncated: page {page_id} could not be read whole")
        return data

    def _current_meta(self):
        """The valid meta page with the higher txid."""
        head = os.pread(self._fd, _PAGE_HEADER.size + _META.size, 0)
        if not head:
            raise CNIError(IO_FAILURE, f"{self.path} is not a BoltDB file: it is empty")
        first, first_problem = _check_meta(head)
        second, second_problem = self._second_meta(first)
        valid = [meta for meta in (first, second) if meta is not None]
        if valid:
            return max(valid, key=lambda meta: meta.txid)
        if not _has_magic(head) and second_problem is None:
            raise CNIError(IO_FAILURE, f"{self.path} is not a BoltDB file: {_describe(head)}")
        raise _damaged(self.path, f"neither meta page is valid: page 0 has {first_problem}, "
                                  f"page 1 has {second_problem or 'no BoltDB magic'}")

    def _second_meta(self, first):
        """(the valid meta page 1, None), else (None, what is wrong with it, or None when nothing looks like it).

        It lies one page in, so without a valid page 0 each usual page size is tried.
        """
        problem = None
        for page_size in (first.page_size,) if first is not None else _PAGE_SIZES:
            data = os.pread(self._fd, _PAGE_HEADER.size + _META.size, page_size)
            meta, why = _check_meta(data)
            if meta is not None and meta.page_size == page_size:
                return meta, None
            if problem is None and _has_magic(data):
                problem = why or f"page size {meta.page_size} at offset {page_size}"
        return None, problem


def _check_meta(data):
    """(the Meta, None) when data starts with a valid meta page, else (None, what is wrong)."""
    if len(data) < _PAGE_HEADER.size + _META.size:
        return None, f"only {len(data)} bytes" if data else "no bytes (the file ends before it)"
    meta = Meta(*_META.unpack_from(data, _PAGE_HEADER.size))
    if meta.magic != MAGIC:
        return None, "no BoltDB magic"
    if meta.version != FORMAT_VERSION:
        return None, f"version {meta.version} (this reader knows {FORMAT_VERSION})"
    if fnv1a64(data[_PAGE_HEADER.size:_PAGE_HEADER.size + _META.size - 8]) != meta.checksum:
        return None, "a bad checksum"
    if meta.page_size not in _PAGE_SIZES:
        return None, f"page size {meta.page_size}"
    return meta, None


def _has_magic(data):
    return len(data) >= _PAGE_HEADER.size + 4 and struct.unpack_from("<I", data, _PAGE_HEADER.size)[0] == MAGIC


def _leaf_elements(page, where, path):
    """(flags, key, value) of each element of a leaf page's bytes."""
    count = _PAGE_HEADER.unpack(_inside(page, 0, _PAGE_HEADER.size, where, path))[2]
    for index in range(count):
        offset = _PAGE_HEADER.size + index * _LEAF_ELEMENT.size
        flags, pos, ksize, vsize = _LEAF_ELEMENT.unpack(_inside(page, offset, _LEAF_ELEMENT.size, where, path))
        key = _inside(page, offset + pos, ksize, where, path)
        yield flags, key, _inside(page, offset + pos + ksize, vsize, where, path)


def _branch_children(page, where, path):
    """The child page ids of a branch page's bytes, in key order."""
    count = _PAGE_HEADER.unpack_from(page)[2]
    for index in range(count):
        offset = _PAGE_HEADER.size + index * _BRANCH_ELEMENT.size
        yield _BRANCH_ELEMENT.unpack(_inside(page, offset, _BRANCH_ELEMENT.size, where, path))[2]


def _inside(page, offset, length, where, path):
    """page[offset:offset + length], which must lie inside the page."""
    if offset + length > len(page):
        raise _damaged(path, f"an element of {where} reaches byte {offset + length} of a {len(page)}-byte page")
    return page[offset:offset + length]


def _damaged(path, what, details="the file is damaged, or not a BoltDB store"):
    return CNIError(IO_FAILURE, f"cannot read BoltDB file {path}: {what}", details)


def _describe(head):
    """What a file without BoltDB magic looks like."""
    if filekind.kind_of(head) == filekind.GDBM:
        return "it is a dbm.gnu file (an ecs-ipam store?)"
    return "it has no BoltDB meta page (no magic where one belongs)"


def _show(key):
    """A key for a message: its text when it is printable ASCII, else its bytes."""
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        return repr(bytes(key))
    return repr(text) if text.isprintable() else repr(bytes(key))
