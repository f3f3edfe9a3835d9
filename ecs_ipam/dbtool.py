"""`ecs-ipam db ...`: the operator's view of the store (list, release, check), under the plugin's lock."""

import argparse
import ipaddress
import json
import sys
import time

from ecs_ipam.errors import CNIError
from ecs_ipam.store import DEFAULT_PATH, open_store


def main(argv, environ):
    """Run one db subcommand; return the exit code."""
    from ecs_ipam.cli import parse_duration

    args = _parser().parse_args(argv)
    path = args.db or environ.get("IPAM_DB_PATH") or DEFAULT_PATH
    try:
        timeout = parse_duration("IPAM_DB_CONNECTION_TIMEOUT", environ.get("IPAM_DB_CONNECTION_TIMEOUT"))
        return args.run(args, path, timeout)
    except CNIError as err:
        print(f"ecs-ipam db: {err.msg}" + (f" ({err.details})" if err.details else ""), file=sys.stderr)
        return 1


def list_allocations(args, path, timeout):
    with open_store(path, timeout, writable=False) as store:
        allocations = store.allocations()
        cursors = store.cursors()
    now = int(time.time())
    if args.json:
        print(json.dumps({
            "allocations": [{"address": str(a.address), "id": a.id, "container": a.container,
                             "ifname": a.ifname, "subnet": str(a.subnet), "allocated_at": a.allocated_at}
                            for a in allocations],
            "cursors": cursors,
        }, indent=2))
        return 0
    rows = [("ADDRESS", "ID", "CONTAINER", "IFNAME", "SUBNET", "AGE")]
    rows += [(str(a.address), a.id or "-", a.container or "-", a.ifname or "-", str(a.subnet),
              _age(now - a.allocated_at)) for a in allocations]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\n{len(allocations)} allocation(s) in {path}")
    for subnet, cursor in cursors.items():
        print(f"cursor of {subnet}: {cursor}")
    return 0


def release(args, path, timeout):
    if (args.address is None) == (args.id is None):
        print("ecs-ipam db release: give either ADDRESS or --id ID", file=sys.stderr)
        return 2
    with open_store(path, timeout) as store:
        if args.address is not None:
            try:
                address = ipaddress.ip_address(args.address)
            except ValueError:
                print(f"ecs-ipam db release: {args.address!r} is not an IP address", file=sys.stderr)
                return 2
            released = [a for a in [store.release(address)] if a is not None]
        else:
            released = [store.release(a.address) for a in store.held_by_id(args.id)]
    if not released:
        what = args.address if args.address is not None else f"id {args.id!r}"
        print(f"ecs-ipam db release: nothing held by {what}", file=sys.stderr)
        return 1
    for allocation in released:
        print(f"released {allocation.address} (id {allocation.id or '-'}, container {allocation.container or '-'})")
    return 0


def check(args, path, timeout):
    with open_store(path, timeout, writable=False) as store:
        problems = store.problems()
        count = len(store.allocations()) if not problems else None
    if problems:
        for problem in problems:
            print(f"ecs-ipam db check: {problem}", file=sys.stderr)
        return 1
    print(f"{path}: sound, {count} allocation(s)")
    return 0


def _age(seconds):
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _parser():
    parser = argparse.ArgumentParser(prog="ecs-ipam db", description="Inspect and repair the ecs-ipam store.")
    parser.add_argument("--db", metavar="PATH", help=f"the store (default: $IPAM_DB_PATH, else {DEFAULT_PATH})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="every allocation and the cursors")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(run=list_allocations)
    releasing = commands.add_parser("release", help="release an address, or everything an id holds")
    releasing.add_argument("address", nargs="?", metavar="ADDRESS")
    releasing.add_argument("--id", metavar="ID")
    releasing.set_defaults(run=release)
    checking = commands.add_parser("check", help="verify the store's integrity")
    checking.set_defaults(run=check)
    for sub in (listing, releasing, checking):
        sub.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="the store")
    return parser
