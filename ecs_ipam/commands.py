"""The CNI commands: each takes the request and a store session, and returns the JSON to print (or None)."""

import time
from collections import namedtuple

from ecs_ipam import allocator
from ecs_ipam.config import (parse_attachments, parse_ipam, parse_prev_result,
                             parse_release_hints)
from ecs_ipam.errors import CHECK_MISMATCH, IO_FAILURE, NOT_AVAILABLE, TRY_AGAIN_LATER, CNIError, config_error
from ecs_ipam.result import Result, encode
from ecs_ipam.store import same_interface
from ecs_ipam.versions import NEWEST, SUPPORTED

# doc is the decoded config; session(writable=True) opens the store as a context manager.
Request = namedtuple("Request", "command cni_version container_id ifname doc session")


def add(request):
    ipam = parse_ipam(request.doc)
    now = int(time.time())
    with request.session() as store:
        ips = [allocator.allocate(store, family, ipam.id, request.container_id, request.ifname, now)
               for family in ipam.families]
    routes = [route for family in ipam.families for route in family.routes]
    return encode(Result(ips, routes), request.cni_version)


def delete(request):
    """Release by the config's addresses, else its id, else the container; idempotent."""
    try:
        ipam = parse_ipam(request.doc)
        holder = ipam.id
        addresses = [family.address.ip for family in ipam.families if family.address is not None]
        gateways = {family.gateway for family in ipam.families}
        # Families without a static address are released by id (when there is one).
        by_id_versions = {family.version for family in ipam.families if family.address is None}
    except CNIError as invalid:
        holder, addresses = parse_release_hints(request.doc)
        gateways, by_id_versions = set(), {4, 6} - {address.version for address in addresses}
        if holder is None and not addresses and request.container_id is None:
            raise invalid
    if holder is None and not addresses and request.container_id is None:
        raise config_error("DEL cannot tell what to release",
                           "give ipv4-address/ipv6-address or id in ipam, or set CNI_CONTAINERID")
    with request.session() as store:
        if addresses:
            for address in addresses:
                held = store.holder(address)
                # Given an id too, an address that has since gone to another id is left alone.
                gone_to_another = holder is not None and held is not None and held.id not in (None, holder)
                if held is not None and address not in gateways and not gone_to_another:
                    store.release(address)
            if holder is not None:
                for held in store.held_by_id(holder):
                    if held.address.version in by_id_versions:
                        store.release(held.address)
        elif holder is not None:
            for held in store.held_by_id(holder):
                store.release(held.address)
        else:
            for held in store.held_by_container(request.container_id, request.ifname):
                store.release(held.address)
    return None


def check(request):
    """Succeed when the store holds this config's addresses (and they match prevResult)."""
    ipam = parse_ipam(request.doc)
    expected = parse_prev_result(request.doc)
    if ipam.id is not None:
        owner = f"id {ipam.id!r}"
    elif request.container_id is not None:
        owner = f"container {request.container_id!r}"
    else:
        raise config_error("CHECK cannot tell whose addresses to check", "give id in ipam or set CNI_CONTAINERID")
    with request.session(writable=False) as store:
        if ipam.id is not None:
            held = store.held_by_id(ipam.id)
        else:
            held = store.held_by_container(request.container_id, request.ifname)
    for family in ipam.families:
        mine = sorted(a.address for a in held if a.address.version == family.version)
        if not mine:
            raise CNIError(CHECK_MISMATCH, f"{owner} holds no IPv{family.version} address in the store")
        if family.address is not None and family.address.ip not in mine:
            raise CNIError(CHECK_MISMATCH, f"{owner} does not hold its configured {family.address.ip}",
                           f"it holds {', '.join(map(str, mine))}")
        if expected is not None:
            wanted = sorted(ip for ip in expected if ip.version == family.version)
            if wanted != mine:
                raise CNIError(CHECK_MISMATCH,
                               f"prevResult's IPv{family.version} addresses differ from what {owner} holds",
                               f"prevResult has {_names(wanted)}, the store has {_names(mine)}")
    return None


def gc(request):
    """Release what containers outside the live attachment list hold in this config's subnets."""
    ipam = parse_ipam(request.doc)
    live = {}
    for container, ifname in parse_attachments(request.doc):
        live.setdefault(container, set()).add(ifname or None)
    subnets = [family.subnet for family in ipam.families]
    errors = []  # GC keeps going past what it cannot read or release, and reports it at the end
    with request.session() as store:
        for held in store.allocations(damaged=errors):
            if held.container is None or _attached(held, live):
                continue
            if any(held.address in subnet for subnet in subnets):
                try:
                    store.release(held.address)
                except CNIError as err:
                    errors.append(err)
    if errors:
        raise CNIError(IO_FAILURE, f"GC released what it could, but {len(errors)} allocation(s) are damaged",
                       "; ".join(err.msg for err in errors[:5]) + "; `ecs-ipam db check` lists them all")
    return None


def status(request):
    """Succeed when an ADD could: the store is usable and every subnet has a free address."""
    ipam = parse_ipam(request.doc)
    try:
        with request.session(writable=False) as store:
            for family in ipam.families:
                if allocator.next_free_address(store, family) is None:
                    raise CNIError(NOT_AVAILABLE, f"subnet {family.subnet} is exhausted",
                                   "every address but the gateway is held")
    except CNIError as err:
        if err.code not in (NOT_AVAILABLE, TRY_AGAIN_LATER):  # a busy lock is not an unusable store
            raise CNIError(NOT_AVAILABLE, f"the store is unusable: {err.msg}", err.details)
        raise
    return None


def version(request):
    return {"cniVersion": NEWEST, "supportedVersions": list(SUPPORTED)}


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status, "VERSION": version}


def _attached(allocation, live):
    """Whether GC's live attachments, {container: {ifname or None}}, include the allocation."""
    return any(same_interface(allocation.ifname, ifname) for ifname in live.get(allocation.container, ()))


def _names(addresses):
    return ", ".join(map(str, addresses)) or "none"
