#!/usr/bin/python3
"""How ADD and DEL latency grow with the allocations held: ecs-ipam's store beside Debian's host-local.

    .venv/bin/python benchmarks/store_scaling.py [--runs N] [--sizes 0,1000,10000,60000]

Each cell is the median wall time of N separate plugin processes, as a runtime starts
them. ecs-ipam's store is pre-filled in this process through ecs_ipam.disk (one
transaction, so it starts as a bare snapshot) in 10.0.0.0/8; host-local's dataDir is
pre-filled with one file per address, as it writes them. "ADD+compact" is an ADD whose
commit is the COMPACT_AFTER-th journal record, so it also folds the journal into a new
snapshot; it is measured on a journal of COMPACT_AFTER - 1 small records.

Needs a Python with dbm.gnu (Debian: /usr/bin/python3 with python3-gdbm) and, for the
host-local columns, containernetworking-plugins (/usr/lib/cni/host-local).
"""

import argparse
import ipaddress
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ecs_ipam import disk  # noqa: E402
from ecs_ipam.disk import open_store  # noqa: E402
from ecs_ipam.store import Allocation  # noqa: E402

SUBNET = ipaddress.ip_network("10.0.0.0/8")
GATEWAY = SUBNET.network_address + 1
_moves = itertools.count()
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_IFNAME": "eth0", "CNI_NETNS": "/var/run/netns/bench",
            "CNI_PATH": "/usr/lib/cni"}


def default_artifact():
    built = ROOT / "dist" / "ecs-ipam"
    return os.environ.get("ECS_IPAM_ARTIFACT") or str(built if built.exists() else ROOT / ".venv" / "bin" / "ecs-ipam")


def timed(argv, doc, env):
    """Wall seconds of one plugin process; it must succeed."""
    began = time.perf_counter()
    proc = subprocess.run(argv, input=json.dumps(doc).encode(), env={**BASE_ENV, **env}, capture_output=True,
                          cwd="/")
    elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} {env.get('CNI_COMMAND')} failed: {proc.stdout!r} {proc.stderr!r}")
    return elapsed


def held_addresses(count):
    """The first count host addresses after the gateway."""
    first = int(GATEWAY) + 1
    return [ipaddress.ip_address(first + n) for n in range(count)]


# --- ecs-ipam --------------------------------------------------------------------------------

def fill_ecs(db_path, count):
    """count allocations and the subnet's cursor, committed as one snapshot."""
    with open_store(str(db_path), 0) as store:
        now = int(time.time())
        for n, address in enumerate(held_addresses(count)):
            store.reserve(Allocation(address, f"fill-{n}", f"fill-ctr-{n}", "eth0", SUBNET, now))
        store.set_cursor(SUBNET, held_addresses(count)[-1] if count else GATEWAY)


def grow_journal(db_path, records):
    """Append `records` small commits (a cursor of an unrelated subnet moving along).

    Returns the seconds each took: a whole store session in this process (lock, open,
    read the journal, change, append and fsync), without a process start.
    """
    other = ipaddress.ip_network("192.168.0.0/16")
    taken = []
    for _ in range(records):
        began = time.perf_counter()
        with open_store(str(db_path), 0) as store:
            store.set_cursor(other, other[2 + next(_moves) % 60000])  # a new value each time: a real commit
        taken.append(time.perf_counter() - began)
    return taken


def journal_records(db_path):
    try:
        return Path(str(db_path) + ".journal").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


class EcsStore:
    """One pre-filled ecs-ipam store and the calls timed against it."""

    def __init__(self, artifact, work, count):
        self.artifact = artifact
        self.db_path = work / f"ecs-{count}" / "ipam.db"
        self.db_path.parent.mkdir()
        fill_ecs(self.db_path, count)
        self.snapshot_size = self.db_path.stat().st_size
        self.samples = {"add": [], "del": [], "add-after-del": [], "compact": [], "commit": [], "commit+compact": []}
        self.count = count

    def call(self, command, holder):
        doc = {"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
               "ipam": {"type": "ecs-ipam", "ipv4-subnet": str(SUBNET), "id": holder}}
        return timed([self.artifact], doc, {"IPAM_DB_PATH": str(self.db_path), "CNI_COMMAND": command,
                                            "CNI_CONTAINERID": holder})

    def add(self, n):
        self.samples["add"].append(self.call("ADD", f"bench-{n}"))

    def delete(self, n):
        self.samples["del"].append(self.call("DEL", f"bench-{n}"))

    def add_after_early_del(self, n):
        """DEL one of the first allocations (the cursor goes back there), then time the next ADD,
        which must find the first free address after it."""
        if self.count > n:
            self.call("DEL", f"fill-{n}")
        self.samples["add-after-del"].append(self.call("ADD", f"after-del-{n}"))

    def compacting_add(self, n):
        self.samples["commit"] += grow_journal(self.db_path, self.to_compaction())
        # The COMPACT_AFTER-th commit, in this process: the append plus the compaction.
        self.samples["commit+compact"] += grow_journal(self.db_path, 1)
        assert journal_records(self.db_path) == 0, "the commit did not compact"
        grow_journal(self.db_path, self.to_compaction())
        self.samples["compact"].append(self.call("ADD", f"compact-{n}"))
        assert journal_records(self.db_path) == 0, "the ADD did not compact"

    def to_compaction(self):
        """How many commits bring the journal to one short of a compaction."""
        return disk.COMPACT_AFTER - 1 - journal_records(self.db_path)


# --- host-local ------------------------------------------------------------------------------

def fill_host_local(data_dir, count):
    """count reservations as host-local writes them: a file per address, `<container>\\r\\n<ifname>`."""
    data_dir.mkdir(parents=True)
    addresses = held_addresses(count)
    for n, address in enumerate(addresses):
        (data_dir / str(address)).write_bytes(f"fill-ctr-{n}\r\neth0".encode())
    if addresses:
        (data_dir / "last_reserved_ip.0").write_text(str(addresses[-1]))


class HostLocalStore:
    """One pre-filled host-local dataDir and the calls timed against it."""

    def __init__(self, host_local, work, count):
        self.host_local = host_local
        self.data_root = work / f"host-local-{count}"
        fill_host_local(self.data_root / "bench", count)
        self.samples = {"add": [], "del": []}

    def call(self, command, container):
        doc = {"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
               "ipam": {"type": "host-local", "ranges": [[{"subnet": str(SUBNET)}]],
                        "dataDir": str(self.data_root)}}
        return timed([self.host_local], doc, {"CNI_COMMAND": command, "CNI_CONTAINERID": container})

    def add(self, n):
        self.samples["add"].append(self.call("ADD", f"bench-{n}"))

    def delete(self, n):
        self.samples["del"].append(self.call("DEL", f"bench-{n}"))


# --- report ----------------------------------------------------------------------------------

def ms(samples):
    return f"{statistics.median(samples) * 1000:7.1f}" if samples else "      -"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25, help="processes per cell (default 25)")
    parser.add_argument("--compactions", type=int, default=5, help="compacting ADDs per size (default 5)")
    parser.add_argument("--sizes", default="0,1000,10000,60000", help="allocations held, for ecs-ipam")
    parser.add_argument("--host-local-sizes", default="0,1000,10000", help="allocations held, for host-local")
    parser.add_argument("--artifact", default=default_artifact(), help="the ecs-ipam to run")
    parser.add_argument("--host-local", default="/usr/lib/cni/host-local")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    host_local_sizes = [int(s) for s in args.host_local_sizes.split(",") if s]
    if not os.access(args.host_local, os.X_OK):
        print(f"store_scaling: no host-local at {args.host_local}: its columns stay empty", file=sys.stderr)
        host_local_sizes = []

    work = Path(tempfile.mkdtemp(prefix="ecs-ipam-bench-"))
    try:
        subprocess.run([args.artifact, "--version"], capture_output=True, check=True)  # unpack once: warm starts
        print("store_scaling: filling the stores...", file=sys.stderr)
        ecs = {count: EcsStore(args.artifact, work, count) for count in sizes}
        peers = {count: HostLocalStore(args.host_local, work, count) for count in host_local_sizes}
        stores = list(ecs.values()) + list(peers.values())
        # Round-robin over the stores, so that a noisy moment on the machine hits every cell alike.
        print("store_scaling: timing...", file=sys.stderr)
        for n in range(args.runs):
            for store in stores:
                store.add(n)
        for n in range(args.runs):
            for store in stores:
                store.delete(n)
        for n in range(args.runs):
            for store in ecs.values():
                store.add_after_early_del(n)
        for n in range(args.compactions):
            for store in ecs.values():
                store.compacting_add(n)
        # The floor: a process that starts and answers without touching a store.
        startup = [timed([args.artifact], {}, {"CNI_COMMAND": "VERSION"}) for _ in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"ecs-ipam store scaling: median wall ms of {args.runs} processes per cell "
          f"({args.compactions} for ADD+compact); COMPACT_AFTER={disk.COMPACT_AFTER}")
    print("in-process: one store session that commits, without a process start "
          "(+compact: the commit that also compacts)")
    print(f"ecs-ipam: {args.artifact}; host-local: {args.host_local}")
    print(f"{platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"ecs-ipam VERSION (start-up only, no store): {ms(startup).strip()} ms")
    print()
    print("ADD<DEL: an ADD right after a DEL of one of the first allocations (the cursor moved back)")
    print()
    print(f"{'':>7} | {'ecs-ipam process':^35} {'':>9} | {'in-process':^17} | {'host-local':^15}")
    print(f"{'held':>7} | {'ADD':>7} {'DEL':>7} {'ADD<DEL':>7} {'ADD+compact':>11} {'snapshot':>9} | "
          f"{'commit':>7} {'+compact':>9} | {'ADD':>7} {'DEL':>7}")
    for count in sorted(set(ecs) | set(peers)):
        mine, peer = ecs.get(count), peers.get(count)
        ecs_cells = (f"{ms(mine.samples['add'])} {ms(mine.samples['del'])} {ms(mine.samples['add-after-del'])} "
                     f"{ms(mine.samples['compact']):>11} "
                     f"{mine.snapshot_size / 1e6:7.2f}MB | {ms(mine.samples['commit'])} "
                     f"{ms(mine.samples['commit+compact']):>9}"
                     if mine else f"{'-':>7} {'-':>7} {'-':>7} {'-':>11} {'-':>9} | {'-':>7} {'-':>9}")
        peer_cells = f"{ms(peer.samples['add'])} {ms(peer.samples['del'])}" if peer else f"{'-':>7} {'-':>7}"
        print(f"{count:>7,} | {ecs_cells} | {peer_cells}")

if __name__ == "__main__":
    main()
