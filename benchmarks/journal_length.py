#!/usr/bin/python3
"""What a journal that is never compacted costs: ADD latency at 0, 256, 1,000 and 10,000 journal records.

    .venv/bin/python benchmarks/journal_length.py [--runs N] [--lengths 0,256,1000,10000]

A compaction that keeps failing (a full disk, a directory at PATH.new) leaves every commit in
the journal, which each call reads whole. Each store here is a snapshot of 100 allocations plus
N journal records of one allocation each, written in this process with compaction off; then N
separate ADD processes of the built file are timed, in a shuffled order across lengths, and the
medians printed. (The plugin warns on each failed compaction, STATUS fails past JOURNAL_LIMIT,
and `db check` reports the journal's length.)
"""

import argparse
import ipaddress
import json
import os
import random
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
from ecs_ipam.store import Allocation, DictTables, Store  # noqa: E402

SUBNET = ipaddress.ip_network("10.0.0.0/16")


class RecordingTables(DictTables):
    """A table that also keeps the writes since `changes` was last emptied: one journal record."""

    def __init__(self, items):
        super().__init__(items)
        self.changes = {}

    def put(self, key, value):
        super().put(key, value)
        self.changes[key] = value

    def delete(self, key):
        super().delete(key)
        self.changes[key] = None


def make_store(path, records):
    """A snapshot of 100 allocations, then `records` journal records of one ADD each."""
    with open_store(path, 5) as store:
        for n in range(100):
            store.reserve(Allocation(SUBNET.network_address + 2 + n, f"base-{n}", None, None, SUBNET, 0))
    with open_store(path, 5, writable=False) as store:
        tables = RecordingTables({key: store._tables.get(key) for key in store._tables.keys()})
    store = Store(tables)
    lines = []
    for n in range(records):
        tables.changes = {}
        store.reserve(Allocation(SUBNET.network_address + 200 + n, f"j-{n}", None, None, SUBNET, 0))
        lines.append(disk._encode_record(tables.changes))
    with open(f"{path}.journal", "ab") as journal:
        journal.write(b"".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--lengths", default="0,256,1000,10000")
    parser.add_argument("--artifact", default=os.environ.get("ECS_IPAM_ARTIFACT", str(ROOT / "dist" / "ecs-ipam")))
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ecs-ipam-journal-bench-"))
    stores = {}
    for length in lengths:
        path = work / f"j{length}" / "ipam.db"
        make_store(str(path), length)
        # Keep it from compacting during the runs: PATH.new as a directory makes each try fail.
        Path(f"{path}.new").mkdir()
        stores[length] = path
    times = {length: [] for length in lengths}
    order = [length for length in lengths for _ in range(args.runs)]
    random.Random(1).shuffle(order)
    for number, length in enumerate(order):
        doc = {"cniVersion": "1.1.0", "name": "bench", "ipam": {"ipv4-subnet": str(SUBNET), "id": f"run-{number}"}}
        env = {"PATH": "/usr/bin:/bin", "CNI_COMMAND": "ADD", "IPAM_DB_PATH": str(stores[length])}
        began = time.perf_counter()
        proc = subprocess.run([args.artifact], input=json.dumps(doc).encode(), env=env, capture_output=True, cwd="/")
        times[length].append(time.perf_counter() - began)
        if proc.returncode != 0:
            raise SystemExit(f"ADD at {length} records failed: {proc.stdout!r} {proc.stderr!r}")
    print(f"ADD with N journal records (median of {args.runs} processes each, {args.artifact})")
    print("| journal records | ADD median | vs 0 |")
    print("|---:|---:|---:|")
    base = statistics.median(times[lengths[0]])
    for length in lengths:
        median = statistics.median(times[length])
        print(f"| {length:,} | {median * 1000:.1f} ms | {median / base:.2f}x |")
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
