"""Allocations, their indexes by id and by container, and per-subnet cursors, over a key-value table.

The table is the disk store of ecs_ipam.disk in the plugin, or MemoryTables in tests.
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


class Store:
    """Allocations, their id and container indexes, and per-subnet cursors over a key-value table."""

    def __init__(self, tables):
        self._tables = tables

    def holder(self, address):
        """The allocation holding address, or None."""
        key = _ADDRESS + str(address)
        record = self._tables.get(key)
        return None if record is None else _decoded(key, record, lambda value: _decode_allocation(address, value))

    def reserve(self, allocation):
        key = str(allocation.address)
        record = {"id": allocation.id, "container": allocation.container, "ifname": allocation.ifname,
                  "subnet": str(allocation.subnet), "allocated_at": allocation.allocated_at}
        self._tables.put(_ADDRESS + key, jsontext.dumps(record))
        if allocation.id is not None:
            self._add_to_index(_BY_ID + allocation.id, key)
        if allocation.container is not None:
            self._add_to_index(_BY_CONTAINER + allocation.container, key)
        self.set_cursor(allocation.subnet, allocation.address)

    def release(self, address):
        """Free address; return the allocation it had, or None when it was not held."""
        allocation = self.holder(address)
        if allocation is None:
            return None
        key = str(address)
        self._tables.delete(_ADDRESS + key)
        if allocation.id is not None:
            self._remove_from_index(_BY_ID + allocation.id, key)
        if allocation.container is not None:
            self._remove_from_index(_BY_CONTAINER + allocation.container, key)
        self.set_cursor(allocation.subnet, address)
        return allocation

    def held_by_id(self, holder_id):
        return self._indexed(_BY_ID + holder_id)

    def held_by_container(self, container, ifname=None):
        """What the container holds: on ifname only when it is given."""
        held = self._indexed(_BY_CONTAINER + container)
        return [a for a in held if ifname is None or a.ifname == ifname]

    def cursor(self, subnet):
        key = _CURSOR + str(subnet)
        value = self._tables.get(key)
        return None if value is None else _decoded(key, value, ipaddress.ip_address)

    def set_cursor(self, subnet, address):
        self._tables.put(_CURSOR + str(subnet), str(address))

    def allocations(self):
        """Every allocation, in address order (IPv4 first)."""
        found = [_decoded(key, self._tables.get(key),
                          lambda value, key=key: _decode_allocation(ipaddress.ip_address(key[len(_ADDRESS):]), value))
                 for key in self._tables.keys() if key.startswith(_ADDRESS)]
        return sorted(found, key=lambda a: (a.address.version, a.address))

    def cursors(self):
        """{subnet text: cursor address text} for every subnet with a cursor."""
        return {key[len(_CURSOR):]: self._tables.get(key)
                for key in sorted(self._tables.keys()) if key.startswith(_CURSOR)}

    def is_held(self, address):
        return self._tables.get(_ADDRESS + str(address)) is not None

    def problems(self):
        """What is inconsistent in the store, as sentences; empty when it is sound."""
        problems = []
        expected = {}  # index key -> the addresses the records put in it
        listed = {}  # index key -> the addresses it lists
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
        for key in sorted(set(expected) | set(listed)):
            if expected.get(key, set()) != listed.get(key, set()):
                problems.append(f"index {key!r} lists {sorted(listed.get(key, ()))}, "
                                f"but the records give {sorted(expected.get(key, ()))}")
        return problems

    def _indexed(self, key):
        held = [self.holder(address) for address in _decoded(key, self._tables.get(key), _address_list)]
        return [a for a in held if a is not None]

    def _add_to_index(self, key, address_text):
        listed = [str(address) for address in _decoded(key, self._tables.get(key), _address_list)]
        if address_text not in listed:
            self._tables.put(key, jsontext.dumps(listed + [address_text]))

    def _remove_from_index(self, key, address_text):
        listed = [str(address) for address in _decoded(key, self._tables.get(key), _address_list)
                  if str(address) != address_text]
        if listed:
            self._tables.put(key, jsontext.dumps(listed))
        else:
            self._tables.delete(key)


def _decoded(key, value, decode):
    """decode(value), the value of key; code 5 naming the key when the store holds something unreadable there."""
    try:
        return decode(value)
    except (ValueError, KeyError, TypeError) as err:
        raise CNIError(IO_FAILURE, f"the store is damaged: {key!r} holds {value!r:.120}",
                       f"{type(err).__name__}: {err}; `ecs-ipam db check` lists what is wrong")


def _address_list(value):
    """The addresses an index value lists (None: no index entry)."""
    return [ipaddress.ip_address(text) for text in jsontext.loads(value)] if value else []


def _decode_allocation(address, value):
    record = jsontext.loads(value)
    return Allocation(address, record["id"], record["container"], record["ifname"],
                      ipaddress.ip_network(record["subnet"]), record["allocated_at"])


class MemoryTables:
    """An in-memory table with the interface of the disk one, for tests and dry runs."""

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
