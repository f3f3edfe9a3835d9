"""`ecs-ipam db ...`: the operator's view of the store (list, gc, release, check, import-bolt), under the plugin's lock."""

import argparse
import ipaddress
import json
import os
import sys
import time

from ecs_ipam import allocator
from ecs_ipam.config import parse_subnet
from ecs_ipam.errors import ADDRESS_IN_USE, INVALID_CONFIG, IO_FAILURE, CNIError
from ecs_ipam.disk import COMPACT_AFTER, JOURNAL_LIMIT, GoPluginStore, open_store
from ecs_ipam.settings import DEFAULT_PATH, parse_duration, store_settings


def main(argv, environ):
    """Run one db subcommand; return the exit code."""
    args = _parser().parse_args(argv)
    try:
        path, timeout = store_settings(environ, path=args.db)
        return args.run(args, path, timeout)
    except CNIError as err:
        print(f"ecs-ipam db: {err.msg}" + (f" ({err.details})" if err.details else ""), file=sys.stderr)
        return 1
    except Exception as err:  # a bug: still a message and exit 1, never a traceback
        print(f"ecs-ipam db: internal error: {type(err).__name__}: {err} (please report it)", file=sys.stderr)
        return 1


def list_allocations(args, path, timeout):
    try:
        with open_store(path, timeout, writable=False, must_exist=True) as store:
            everything = store.allocations()
            pools = _pools(everything, store.cursors(), args.subnet)
    except GoPluginStore:
        return _list_go_plugin_store(args, path)
    shown = [a for a in everything if (args.id is None or a.id == args.id)
             and (args.container is None or a.container == args.container)
             and (args.subnet is None or a.subnet == args.subnet)]
    now = int(time.time())
    if args.json:
        print(json.dumps({
            "allocations": [{"address": str(a.address), "id": a.id, "container": a.container,
                             "ifname": a.ifname, "subnet": str(a.subnet), "allocated_at": a.allocated_at}
                            for a in shown],
            "cursors": {str(subnet): cursor for subnet, _, cursor in pools if cursor is not None},
            "subnets": {str(subnet): {"held": held, "usable": allocator.usable(subnet), "cursor": cursor}
                        for subnet, held, cursor in pools},
        }, indent=2))
        return 0
    rows = [("ADDRESS", "ID", "CONTAINER", "IFNAME", "SUBNET", "AGE")]
    rows += [(str(a.address), a.id or "-", a.container or "-", a.ifname or "-", str(a.subnet),
              _age(now - a.allocated_at)) for a in shown]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    filters = " ".join(f"--{name} {value}" for name, value in
                       (("id", args.id), ("container", args.container), ("subnet", args.subnet)) if value is not None)
    if filters:
        print(f"\n{len(shown)} of {len(everything)} allocation(s) in {path} match {filters}")
    else:
        print(f"\n{len(everything)} allocation(s) in {path}")
    width = max((len(str(subnet)) for subnet, _, _ in pools), default=0) + 1
    for subnet, held, cursor in pools:
        usable = allocator.usable(subnet)
        print(f"{str(subnet) + ':':<{width}} {held} held of {usable} usable ({_percent(held, usable)}), cursor {cursor or '-'}")
    return 0


def _subnets(allocations, cursors, only=None):
    """The subnets the store knows (of allocations or cursors), IPv4 first; [only] when given, which
    must be one of them (else code 7, naming them)."""
    subnets = {a.subnet for a in allocations}
    for text in cursors:
        try:
            subnets.add(ipaddress.ip_network(text))
        except ValueError:
            pass  # a damaged key: `ecs-ipam db check` names it
    if only is not None and only not in subnets:
        known = ", ".join(str(s) for s in sorted(subnets, key=_subnet_order)) or "none"
        raise CNIError(INVALID_CONFIG, f"--subnet {only}: the store has no allocation and no cursor from it",
                       f"its subnets: {known}")
    return [only] if only is not None else sorted(subnets, key=_subnet_order)


def _pools(allocations, cursors, only=None):
    """[(subnet, addresses held from it, its cursor text or None)] for each of _subnets()."""
    held = {}
    for allocation in allocations:
        held[allocation.subnet] = held.get(allocation.subnet, 0) + 1
    return [(subnet, held.get(subnet, 0), cursors.get(str(subnet)))
            for subnet in _subnets(allocations, cursors, only)]


def _percent(held, usable):
    share = 100 * held / usable
    return "0%" if not held else "<0.1%" if share < 0.1 else f"{share:.1f}%"


def _go_plugin_plan(path):
    """What an upgrade in place would carry over from the Go plugin's file at path, read only
    (under a shared flock). The subnets come from the config of the call that upgrades, so
    here every address is placed under its family's /0."""
    from ecs_ipam import bolt, go_import

    everything = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    return go_import.plan_import(bolt.read_bucket(path, go_import.BUCKET), everything, int(time.time()))


def _list_go_plugin_store(args, path):
    plan = _go_plugin_plan(path)
    cursors = {("lastKnownIP" if subnet.version == 4 else "lastKnownIPv6"): str(address)
               for subnet, address in plan.cursors.items()}
    if args.json:
        print(json.dumps({"go_plugin_store": True,
                          "allocations": [{"address": str(a.address), "id": a.id} for a in plan.allocations],
                          "cursors": cursors}, indent=2))
        return 0
    print(f"{path} is the Go plugin's BoltDB store; the first plugin call upgrades it in place, "
          "recording each address under the subnet of its config that contains it. It holds:")
    rows = [("ADDRESS", "ID")] + [(str(a.address), a.id or "-") for a in plan.allocations]
    width = max(len(row[0]) for row in rows)
    for address, holder in rows:
        print(f"{address.ljust(width)}  {holder}")
    print(f"\n{len(plan.allocations)} allocation(s)"
          + "".join(f"; {key} {address}" for key, address in cursors.items()))
    return 0


def release(args, path, timeout):
    if (args.address is None) == (args.id is None):
        print("ecs-ipam db release: give either ADDRESS or --id ID", file=sys.stderr)
        return 2
    with open_store(path, timeout, must_exist=True) as store:
        if args.address is not None:
            try:
                address = ipaddress.ip_address(args.address)
            except ValueError:
                print(f"ecs-ipam db release: {args.address!r} is not an IP address", file=sys.stderr)
                return 2
            released = [a for a in [allocator.release(store, address)] if a is not None]
        else:
            released = [allocator.release(store, a.address) for a in store.held_by_id(args.id)]
    if not released:
        what = args.address if args.address is not None else f"id {args.id!r}"
        print(f"ecs-ipam db release: nothing held by {what}", file=sys.stderr)
        return 1
    for allocation in released:
        print(f"released {allocation.address} (id {allocation.id or '-'}, container {allocation.container or '-'})")
    return 0


def gc(args, path, timeout):
    """Release every allocation whose id the keep list does not name, in one commit (README: the recipes)."""
    keep = _keep_ids(args.keep_ids)
    now = int(time.time())
    with open_store(path, timeout, writable=not args.dry_run, must_exist=True) as store:
        allocations = store.allocations()
        _subnets(allocations, store.cursors(), args.subnet)
        considered = [a for a in allocations if a.id is not None and args.subnet in (None, a.subnet)]
        unlisted = [a for a in considered if a.id not in keep]
        doomed = [a for a in unlisted if now - a.allocated_at >= args.older_than]
        holders = {a.id for a in considered}
        if doomed and not holders & keep and not args.allow_all:
            where = f" from {args.subnet}" if args.subnet is not None else ""
            share = (f"all {len(doomed)}" if len(doomed) == len(considered) else
                     f"{len(doomed)} (those --older-than does not spare)")
            raise CNIError(INVALID_CONFIG,
                           f"the keep list names none of the {len(holders)} id(s) holding addresses{where}, so gc "
                           f"would release {share} of their {len(considered)} allocation(s): refused, nothing was "
                           "released",
                           f"{len(keep)} id(s) read from {_file_name(args.keep_ids)}; an empty list, another host's "
                           "ids, or ids with a trailing '/'? Add --allow-all if every one of them is really gone")
        for allocation in doomed if not args.dry_run else ():
            allocator.release(store, allocation.address)
    verb = "would release" if args.dry_run else "released"
    for allocation in doomed:
        print(f"{verb} {allocation.address} (id {allocation.id}, age {_age(now - allocation.allocated_at)})")
    kept = [f"{len(considered) - len(unlisted)} whose id is listed"]
    if len(unlisted) > len(doomed):
        kept.append(f"{len(unlisted) - len(doomed)} younger than {_age(int(args.older_than))}")
    anonymous = sum(1 for a in allocations if a.id is None and args.subnet in (None, a.subnet))
    if anonymous:
        kept.append(f"{anonymous} without an id (gc never touches those)")
    print(f"{verb} {len(doomed)} allocation(s) in {path}; kept {', '.join(kept)}"
          + ("; dry run: nothing was changed" if args.dry_run else ""))
    return 0


def _keep_ids(name):
    """The ids listed in file name ("-": standard input): one a line, surrounding whitespace and blank lines ignored."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(name, "rb") as listed:
                data = listed.read()
    except OSError as err:
        raise CNIError(IO_FAILURE, f"--keep-ids {name}: cannot read it: {err.strerror}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise CNIError(INVALID_CONFIG, f"--keep-ids {_file_name(name)}: line {line} is not UTF-8 text")
    return {line.strip() for line in text.split("\n") if line.strip()}


def _file_name(name):
    return "standard input" if name == "-" else name


def check(args, path, timeout):
    session = open_store(path, timeout, writable=False, must_exist=True)
    try:
        with session as store:
            problems = store.problems()
            count = len(store.allocations()) if not problems else None
    except GoPluginStore:
        plan = _go_plugin_plan(path)
        print(f"{path}: the Go plugin's BoltDB store, readable, {len(plan.allocations)} allocation(s); "
              "the first plugin call upgrades it in place")
        return 0
    if session.journal_records > JOURNAL_LIMIT:
        problems.append(f"the journal holds {session.journal_records} records (over {JOURNAL_LIMIT}): compacting "
                        f"it keeps failing ({session.compaction_failure or 'reason unknown'}); every call re-reads "
                        "it, so calls slow down until the cause (a full disk? a directory at PATH.new?) is fixed")
    if problems:
        for problem in problems:
            print(f"ecs-ipam db check: {problem}", file=sys.stderr)
        return 1
    print(f"{path}: sound, {count} allocation(s); journal: {session.journal_records} record(s) since the last "
          f"compaction (one every {COMPACT_AFTER})"
          + (f"; the last compaction failed: {session.compaction_failure}" if session.compaction_failure else ""))
    return 0


def import_bolt(args, path, timeout):
    """Carry the Go plugin's allocations over from its BoltDB file, in one store session."""
    from ecs_ipam import bolt, go_import

    _refuse_the_store_itself(args.bolt_file, path)
    subnets = (args.ipv4_subnet or []) + (args.ipv6_subnet or [])
    try:
        plan = go_import.plan_import(bolt.read_bucket(args.bolt_file, go_import.BUCKET), subnets, int(time.time()))
    except go_import.Unplaced as err:
        raise _flag_error(err, [subnet for subnet in subnets if subnet.version == err.version])
    touched = sorted({a.subnet for a in plan.allocations} | set(plan.cursors), key=_subnet_order)
    with open_store(path, timeout) as store:
        held = [a.address for a in plan.allocations if store.is_held(a.address)]
        if held:
            raise CNIError(ADDRESS_IN_USE, f"{path} already holds {len(held)} of the addresses to import: "
                                           f"{go_import.names(held)}",
                           "nothing was imported; free stale ones with `ecs-ipam db release ADDRESS` first")
        for allocation in plan.allocations:
            store.reserve(allocation)
        sources = {subnet: _carry_cursor(store, subnet, plan.cursors.get(subnet)) for subnet in touched}
        cursors = {subnet: store.cursor(subnet) for subnet in touched}
    _print_import(args.bolt_file, path, plan, cursors, sources)
    return 0


def _flag_error(unplaced, given):
    """The import's refusal of addresses that no --ipvN-subnet given contains, naming the flag."""
    from ecs_ipam.go_import import names

    version, addresses = unplaced.version, unplaced.addresses
    if not given:
        return CNIError(INVALID_CONFIG, f"the Go plugin's store holds {len(addresses)} IPv{version} address(es) "
                                        f"({names(addresses)}): give --ipv{version}-subnet",
                        "the subnet the ECS config allocates them from"
                        + (", e.g. 169.254.172.0/22 for the ECS link-local network" if version == 4 else ""))
    return CNIError(INVALID_CONFIG, f"{len(addresses)} IPv{version} address(es) lie outside --ipv{version}-subnet "
                                    f"{', '.join(map(str, given))}: {names(addresses)}",
                    "give the subnet(s) they were allocated from (the flag may be repeated); nothing was imported")


def _refuse_the_store_itself(bolt_file, path):
    if os.path.exists(bolt_file) and os.path.exists(path) and os.path.samefile(bolt_file, path):
        raise CNIError(INVALID_CONFIG, f"{bolt_file} is the store ecs-ipam would write ({path})",
                       f"move the Go plugin's file away first, e.g. `mv {path} {path}.bolt`, and import from there")


def _carry_cursor(store, subnet, go):
    """Give subnet the Go plugin's cursor unless the store has one; say where the cursor comes from."""
    if store.cursor(subnet) is not None:
        return "the store's own, kept"
    if go is not None:
        store.set_cursor(subnet, go)
        return "the Go plugin's lastKnownIP" + ("v6" if subnet.version == 6 else "")
    return "the Go plugin's file had none for it: ADD starts at the subnet's first free address"


def _print_import(bolt_file, path, plan, cursors, sources):
    from ecs_ipam.go_import import names, per_subnet

    counts = per_subnet(plan)
    print(f"imported {len(plan.allocations)} address(es) from {bolt_file} into {path}"
          + (f": {counts}" if counts else ""))
    for subnet, cursor in cursors.items():
        print(f"cursor of {subnet}: {cursor or 'none'} ({sources[subnet]})")
    if plan.gateways:
        print(f"skipped gateway(s) {names(plan.gateways)}: ecs-ipam never stores gateways")
    for note in plan.notes:
        print(f"note: {note}")


def _subnet_flag(version):
    """An argparse type: a subnet of the IP version, checked as the config's ipvN-subnet is."""
    def parse(text):
        try:
            return parse_subnet(f"--ipv{version}-subnet", text, version)
        except CNIError as err:
            raise argparse.ArgumentTypeError(err.msg)

    return parse


def _pool_flag(text):
    """An argparse type: a CIDR block of either family (host bits dropped, as in the config)."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a CIDR block")


def _duration_flag(text):
    """An argparse type: seconds from a Go duration ("10m", "1h30m") or a number of seconds."""
    try:
        if text.strip():
            return parse_duration("--older-than", text)
    except CNIError as err:
        raise argparse.ArgumentTypeError(err.msg)
    raise argparse.ArgumentTypeError(f"{text!r} is not a duration")


def _subnet_order(subnet):
    return subnet.version, subnet


_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def _age(seconds):
    """A duration in its two largest units: 3d4h, 2h5m, 4m12s, 9s."""
    seconds = max(seconds, 0)
    for index, (unit, size) in enumerate(_UNITS):
        if seconds >= size or size == 1:
            text = f"{seconds // size}{unit}"
            if size > 1:
                smaller_unit, smaller = _UNITS[index + 1]
                rest = seconds % size // smaller
                text += f"{rest}{smaller_unit}" if rest else ""
            return text


def _parser():
    parser = argparse.ArgumentParser(prog="ecs-ipam db", description="Inspect and repair the ecs-ipam store.",
                                     epilog="Each COMMAND has --help.")
    parser.add_argument("--db", metavar="PATH", help=f"the store (default: $IPAM_DB_PATH, else {DEFAULT_PATH})")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser(
        "list", help="every allocation, and each subnet's usage and cursor",
        formatter_class=argparse.RawDescriptionHelpFormatter, description="""\
Every allocation (address, id, container, ifname, subnet, age) in address order,
IPv4 first; then one line per subnet: the addresses held, how many are usable
(the gateway aside), the percentage held, and the cursor (the last address
allocated or released there). The filters select allocations; the subnet lines
count whole subnets.""")
    listing.add_argument("--json", action="store_true",
                         help='print JSON: {"allocations": [...], "cursors": {...}, "subnets": '
                              '{CIDR: {"held", "usable", "cursor"}}}')
    listing.add_argument("--id", metavar="ID", help="only the allocations held under this id")
    listing.add_argument("--container", metavar="ID", help="only the allocations recorded with this container id")
    listing.add_argument("--subnet", metavar="CIDR", type=_pool_flag,
                         help="only the allocations made from this subnet (as configured), and only its line")
    listing.set_defaults(run=list_allocations)
    releasing = commands.add_parser("release", help="release an address, or everything an id holds")
    releasing.add_argument("address", nargs="?", metavar="ADDRESS")
    releasing.add_argument("--id", metavar="ID")
    releasing.set_defaults(run=release)
    collecting = commands.add_parser(
        "gc", help="release every allocation whose id is not in a list of the live ones",
        formatter_class=argparse.RawDescriptionHelpFormatter, description="""\
Release every allocation whose id the keep list does not name, in one commit
under the plugin's lock, and print each (address, id, age). Allocations without
an id are never touched. A keep list that names none of the ids holding
addresses (an empty list, another host's ids) is refused unless --allow-all.

The live ids: ENI MAC addresses on the classic ECS agent (the instance metadata
service lists them under network/interfaces/macs/), the /var/run/netns/* paths
with the agent's netlib. The README gives both recipes.""")
    collecting.add_argument("--keep-ids", metavar="FILE", required=True,
                            help="the live ids, one a line; - reads standard input")
    collecting.add_argument("--dry-run", action="store_true", help="print what would be released; change nothing")
    collecting.add_argument("--older-than", metavar="DURATION", type=_duration_flag, default=0.0,
                            help="spare allocations younger than this (a Go duration: 10m, 1h30m); default 0")
    collecting.add_argument("--subnet", metavar="CIDR", type=_pool_flag,
                            help="only the allocations made from this subnet (as configured)")
    collecting.add_argument("--allow-all", action="store_true",
                            help="release even when the keep list names none of the ids holding addresses")
    collecting.set_defaults(run=gc)
    checking = commands.add_parser("check", help="verify the store's integrity")
    checking.set_defaults(run=check)
    importing = commands.add_parser("import-bolt", help="carry the Go plugin's allocations over from its BoltDB file")
    importing.add_argument("bolt_file", metavar="BOLT_FILE", help="the Go plugin's store (read, never written)")
    importing.add_argument("--ipv4-subnet", metavar="CIDR", type=_subnet_flag(4), action="append",
                           help="a subnet its IPv4 addresses were allocated from (repeat for several)")
    importing.add_argument("--ipv6-subnet", metavar="CIDR", type=_subnet_flag(6), action="append",
                           help="a subnet its IPv6 addresses were allocated from (repeat for several)")
    importing.set_defaults(run=import_bolt)
    for sub in (listing, releasing, collecting, checking, importing):
        sub.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="the store")
    return parser
