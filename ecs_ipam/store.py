"""Allocations, their indexes by id and by container, and per-subnet cursors, over a key-value table.

The table protocol. A Store reads and writes text values under text keys through four methods,
and nothing else:

- ``get(key)``: the value, or None when the key is absent;
- ``put(key, value)`` and ``delete(key)`` (deleting an absent key is no error);
- ``keys()``: every key present, in any order.

Changes are seen by later gets at once; whether and when they reach a disk is the table's
business. ecs_ipam.disk's session table is the store on disk (changes commit when the session
ends); DictTables below keeps them in a dict: the empty store a reader sees where none exists
yet, the one an upgrade fills before writing it, and the tests'.
"""

import ipaddress
from collections import namedtuple

from ecs_ipam import jsontext
from ecs_ipam.errors import IO_FAILURE, CNIError

LAYOUT = "1"  # the version of the key layout below
LAYOUT_KEY = "layout"

# address is an ip_address, subnet the ip_network it was allocated from, allocated_at Unix seconds.
Allocation = namedtuple("Allocation", "address id container ifname subnet allocated_at")

_ADDRESS = "a/"  # a/<address> -> the allocation record
_BY_ID = "i/"  # i/<id> -> JSON list of the addresses the id holds
_BY_CONTAINER = "c/"  # c/<container id> -> JSON list of the addresses the container holds
_CURSOR = "s/"  # s/<subnet> -> the last address allocated or released in it
_HELD = "h/"  # h/<4|6>/<block> -> hex bitmap of the held addresses among CHUNK_BITS aligned ones
# The bitmaps let the allocator pass a run of held addresses CHUNK_BITS at a time, so that an
# ADD after a DEL (the cursor then sits on the released address, often far behind the others)
# costs the blocks held after it, not every allocation: flat as the store fills.
CHUNK_BITS = 1024


class Store:
    """Allocations, their id and container indexes, and per-subnet cursors over a key-value table."""

    def __init__(self, tables):
        self._tables = tables
        self.changes = []  # [("allocated" or "released", Allocation)] made through this Store, in order

    def allocation_at(self, address):
        """The allocation holding address, or None."""
        key = _ADDRESS + str(address)
        record = self._tables.get(key)
        return None if record is None else _decoded(key, record, lambda value: _decode_allocation(address, value))

    def reserve(self, allocation):
        key = str(allocation.address)
        record = {"id": allocation.id, "container": allocation.container, "ifname": allocation.ifname,
                  "subnet": str(allocation.subnet), "allocated_at": allocation.allocated_at}
        self._apply([(_ADDRESS + key, jsontext.dumps(record))]
                    + self._index_writes(allocation, add=True)
                    + [self._bitmap_write(allocation.address, True)])
        self.changes.append(("allocated", allocation))

    def release(self, address):
        """Free address; return the allocation it had, or None when it was not held."""
        allocation = self.allocation_at(address)
        if allocation is None:
            return None
        self._apply([(_ADDRESS + str(address), None)]
                    + self._index_writes(allocation, add=False)
                    + [self._bitmap_write(address, False)])
        self.changes.append(("released", allocation))
        return allocation

    def held_by_id(self, holder_id):
        return self._indexed(_BY_ID + holder_id)

    def held_by_container(self, container, ifname=None):
        """What the container holds on ifname (see same_interface)."""
        held = self._indexed(_BY_CONTAINER + container)
        return [a for a in held if same_interface(a.ifname, ifname)]

    def cursor(self, subnet):
        key = _CURSOR + str(subnet)
        value = self._tables.get(key)
        return None if value is None else _decoded(key, value, ipaddress.ip_address)

    def set_cursor(self, subnet, address):
        self._tables.put(_CURSOR + str(subnet), str(address))

    def allocations(self, damaged=None):
        """Every allocation, in address order (IPv4 first).

        A record that cannot be read raises code 5; given a list as damaged, it is skipped and
        its error appended there instead.
        """
        found = []
        for key in self._tables.keys():
            if key.startswith(_ADDRESS):
                try:
                    found.append(_decoded(key, self._tables.get(key), lambda value, key=key: _decode_allocation(
                        ipaddress.ip_address(key[len(_ADDRESS):]), value)))
                except CNIError as err:
                    if damaged is None:
                        raise
                    damaged.append(err)
        return sorted(found, key=lambda a: (a.address.version, a.address))

    def cursors(self):
        """{subnet text: cursor address text} for every subnet with a cursor."""
        return {key[len(_CURSOR):]: self._tables.get(key)
                for key in sorted(self._tables.keys()) if key.startswith(_CURSOR)}

    def is_held(self, address):
        return self._tables.get(_ADDRESS + str(address)) is not None

    def held_bits(self, version, block):
        """Bit i is set when IPv<version> address block * CHUNK_BITS + i is held."""
        key = _bitmap_key(version, block)
        value = self._tables.get(key)
        return 0 if value is None else _decoded(key, value, _bitmap)

    def problems(self):
        """What is inconsistent in the store, as sentences; empty when it is sound."""
        problems = []
        expected = {}  # index key -> the addresses the records put in it
        listed = {}  # index key -> the addresses it lists
        bitmaps = {}  # bitmap key -> (the bits the records give, the bits it holds)
        for key in self._tables.keys():
            value = self._tables.get(key)
            if key.startswith(_ADDRESS):
                try:
                    allocation = _decode_allocation(ipaddress.ip_address(key[len(_ADDRESS):]), value)
                except (ValueError, KeyError, TypeError) as err:
                    problems.append(f"record {key!r} is unreadable: {err!r}")
                    continue
                for prefix, owner in ((_BY_ID, allocation.id), (_BY_CONTAINER, allocation.container)):
                    if owner is not None:
                        expected.setdefault(prefix + owner, set()).add(str(allocation.address))
                key, bit = _bitmap_place(allocation.address)
                bitmaps.setdefault(key, [0, 0])[0] |= 1 << bit
            elif key.startswith(_HELD):
                try:
                    bitmaps.setdefault(key, [0, 0])[1] = _bitmap(value)
                except ValueError as err:
                    problems.append(f"bitmap {key!r} is unreadable: {err!r}")
            elif key.startswith((_BY_ID, _BY_CONTAINER)):
                try:
                    listed[key] = set(jsontext.loads(value))
                except (ValueError, TypeError) as err:
                    problems.append(f"index {key!r} is unreadable: {err!r}")
            elif key.startswith(_CURSOR):
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    problems.append(f"cursor {key!r} holds {value!r}, not an address")
            elif key != LAYOUT_KEY:
                problems.append(f"unexpected key {key!r}")
        for key, (given, held) in sorted(bitmaps.items()):
            if given != held:
                problems.append(f"bitmap {key!r} marks {format(held, 'x')!r}, "
                                f"but the records give {format(given, 'x')!r}")
        for key in sorted(set(expected) | set(listed)):
            if expected.get(key, set()) != listed.get(key, set()):
                problems.append(f"index {key!r} lists {sorted(listed.get(key, ()))}, "
                                f"but the records give {sorted(expected.get(key, ()))}")
        return problems

    def _indexed(self, key):
        held = [self.allocation_at(address) for address in _decoded(key, self._tables.get(key), _address_list)]
        return [a for a in held if a is not None]

    def _index_writes(self, allocation, add):
        """(key, new value or None) for the id and container indexes, with or without the allocation."""
        address_text = str(allocation.address)
        writes = []
        for prefix, owner in ((_BY_ID, allocation.id), (_BY_CONTAINER, allocation.container)):
            if owner is not None:
                key = prefix + owner
                listed = [str(a) for a in _decoded(key, self._tables.get(key), _address_list) if str(a) != address_text]
                listed += [address_text] if add else []
                writes.append((key, jsontext.dumps(listed) if listed else None))
        return writes

    def _bitmap_write(self, address, held):
        """(key, new value or None) for the bitmap of address's block, with address marked held or free."""
        key, bit = _bitmap_place(address)
        bits = self.held_bits(address.version, int(address) // CHUNK_BITS)
        bits = bits | (1 << bit) if held else bits & ~(1 << bit)
        return key, format(bits, "x") if bits else None

    def _apply(self, writes):
        """Write (key, value) pairs, None deleting. Callers read everything first, so that a damaged
        value stops a change before any of it is written."""
        for key, value in writes:
            if value is None:
                self._tables.delete(key)
            else:
                self._tables.put(key, value)


def same_interface(recorded, asked):
    """Whether an allocation recorded on ifname `recorded` is on ifname `asked`.

    The runtime may leave CNI_IFNAME out at ADD or at DEL; an ifname missing on either side
    then matches any, so that DEL, CHECK and GC find what a container holds alike.
    """
    return recorded is None or asked is None or recorded == asked


def _decoded(key, value, decode):
    """decode(value), the value of key; code 5 naming the key when the store holds something unreadable there."""
    try:
        return decode(value)
    except (ValueError, KeyError, TypeError) as err:
        raise CNIError(IO_FAILURE, f"the store is damaged: {key!r} holds {value!r:.120}",
                       f"{type(err).__name__}: {err}; `ecs-ipam db check` lists what is wrong")


def _bitmap_key(version, block):
    return f"{_HELD}{version}/{block}"


def _bitmap_place(address):
    """(the key of address's bitmap, its bit there)."""
    block, bit = divmod(int(address), CHUNK_BITS)
    return _bitmap_key(address.version, block), bit


def _bitmap(value):
    bits = int(value, 16)
    if bits < 0 or bits >> CHUNK_BITS:
        raise ValueError(f"{value!r} is not a {CHUNK_BITS}-bit map")
    return bits


def _address_list(value):
    """The addresses an index value lists (None: no index entry)."""
    return [ipaddress.ip_address(text) for text in jsontext.loads(value)] if value else []


def _decode_allocation(address, value):
    record = jsontext.loads(value)
    for field in ("id", "container", "ifname"):
        if not (record[field] is None or isinstance(record[field], str)):
            raise TypeError(f"{field} is {record[field]!r}, not text")
    allocated_at = record["allocated_at"]
    if not isinstance(allocated_at, int) or isinstance(allocated_at, bool):
        raise TypeError(f"allocated_at is {allocated_at!r}, not a number of seconds")
    return Allocation(address, record["id"], record["container"], record["ifname"],
                      ipaddress.ip_network(record["subnet"]), allocated_at)


class DictTables:
    """A table (the protocol in the module docstring) in a dict, nothing written anywhere."""

    def __init__(self, items=None):
        self._items = dict(items or {})

    def get(self, key):
        return self._items.get(key)

    def put(self, key, value):
        self._items[key] = value

    def delete(self, key):
        self._items.pop(key, None)

    def keys(self):
        return list(self._items)
