"""What a file at the store's path is, from its first bytes: a dbm.gnu file, the Go plugin's BoltDB file, or neither."""

import struct

GDBM = "gdbm"
BOLT = "bolt"
EMPTY = "empty"
OTHER = "other"

HEAD_BYTES = 32  # enough for both magics below
BOLT_MAGIC = 0xED0CDAED
# bolt's meta page 0 starts with a 16-byte page header; the magic follows it.
BOLT_MAGIC_OFFSET = 16
# GNU dbm's magic numbers (gdbm 1.x, by byte order and offset width) at the start of the file.
GDBM_MAGICS = frozenset({0x13579ACD, 0x13579ACE, 0x13579ACF, 0x13579AD0, 0x13579AD1})

DESCRIPTIONS = {
    GDBM: "it is a dbm.gnu file",
    BOLT: "it is a BoltDB file, as written by the Go ecs-ipam plugin",
    EMPTY: "the file is empty",
    OTHER: "it is neither a dbm.gnu nor a BoltDB file",
}


def kind_of(head):
    """GDBM, BOLT, EMPTY or OTHER for the first HEAD_BYTES of a file."""
    if not head:
        return EMPTY
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] in GDBM_MAGICS:
        return GDBM
    if len(head) >= BOLT_MAGIC_OFFSET + 4 and struct.unpack_from("<I", head, BOLT_MAGIC_OFFSET)[0] == BOLT_MAGIC:
        return BOLT
    return OTHER


def kind_of_file(path):
    """kind_of the file at path (OSError when it cannot be read)."""
    with open(path, "rb") as f:
        return kind_of(f.read(HEAD_BYTES))
