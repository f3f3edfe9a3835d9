"""The CNI commands: each takes a parsed Request and returns the JSON to print (or None)."""

import time
from collections import namedtuple

from ecs_ipam import allocator, ownership
from ecs_ipam.cni_versions import NEWEST, SUPPORTED
from ecs_ipam.errors import DUPLICATE_ID, IO_FAILURE, NOT_AVAILABLE, TRY_AGAIN_LATER, CNIError, config_error
from ecs_ipam.result import IPConfig, Result, encode

# config: the parsed network config (ecs_ipam.config.Config); caller: the ownership.Caller (the
# config's id, the runtime's container and ifname); session(subnets, writable=True, create=True)
# opens the store as a context manager (ecs_ipam.disk.open_store; subnets: the config's, under
# which a Go plugin store found there is upgraded); warn(line) writes a line to stderr.
Request = namedtuple("Request", "command config caller session warn")
# VERSION reads no config (its stdin may be empty or absent), nor the store.
CONFIGLESS = frozenset({"VERSION"})


def add(request):
    """Allocate one address per family; a caller without an id that already holds one gets it back."""
    ipam, caller = request.config.ipam, request.caller
    now = int(time.time())
    with request.session(request.config.named.subnets) as store:
        ips = [_held_already(store, family, caller)
               or allocator.allocate(store, family, caller.id, caller.container, caller.ifname, now)
               for family in ipam.families]
    routes = [route for family in ipam.families for route in family.routes]
    return encode(Result(ips, routes), request.config.cni_version)


def delete(request):
    """Release what the caller holds and the config names (ecs_ipam.ownership); idempotent."""
    caller, (_, addresses, subnets) = request.caller, request.config.named
    if not ownership.identifies(caller, subnets, addresses):
        raise request.config.invalid or config_error(
            "DEL cannot tell what to release", "give ipv4-address/ipv6-address or id in ipam, or set CNI_CONTAINERID")
    with request.session(subnets, create=False) as store:  # no store holds nothing: make none
        if caller.id is not None:
            candidates = store.held_by_id(caller.id)
        else:
            candidates = [store.allocation_at(address) for address in addresses]
            candidates = [a for a in candidates if a is not None]
            if caller.container is not None:
                candidates += store.held_by_container(caller.container)
        plan = ownership.release_by_del(caller, subnets, addresses, candidates)
        for allocation in plan.allocations:
            allocator.release(store, allocation.address)
    if plan.spared:
        request.warn(f"ecs-ipam: warning: DEL without an id released none of the {len(plan.spared)} "
                     f"address(es) container {caller.container!r} holds under ids "
                     f"({ownership.names([a.address for a in plan.spared])}): a DEL must name the id that holds them")
    return None


def check(request):
    """Succeed when the caller holds an address from each configured subnet (matching prevResult)."""
    ipam, caller = request.config.ipam, request.caller
    if caller.id is None and caller.container is None:
        raise config_error("CHECK cannot tell whose addresses to check", "give id in ipam or set CNI_CONTAINERID")
    with request.session(request.config.named.subnets, writable=False) as store:
        candidates = store.held_by_id(caller.id) if caller.id is not None else store.held_by_container(caller.container)
    return ownership.check(caller, ipam.families, request.config.expected, candidates)


def gc(request):
    """Release what containers outside the live attachment list hold from this config's subnets."""
    subnets = request.config.named.subnets
    errors = []  # GC keeps going past what it cannot read or release, and reports it at the end
    with request.session(subnets, create=False) as store:
        for held in ownership.release_by_gc(subnets, request.config.live, store.allocations(damaged=errors)):
            try:
                allocator.release(store, held.address)
            except CNIError as err:
                errors.append(err)
    if errors:
        raise CNIError(IO_FAILURE, f"GC released what it could, but {len(errors)} allocation(s) are damaged",
                       "; ".join(err.msg for err in errors[:5]) + "; `ecs-ipam db check` lists them all")
    return None


def status(request):
    """Succeed when an ADD could: the store can take a commit now and every subnet has a free address."""
    ipam = request.config.ipam
    try:
        session = request.session(request.config.named.subnets, writable=False)
        with session as store:
            for family in ipam.families:
                if allocator.next_free_address(store, family) is None:
                    raise CNIError(NOT_AVAILABLE, f"subnet {family.subnet} is exhausted",
                                   "every address but the gateway is held")
        problem = session.commit_problem()
        if problem is not None:
            raise CNIError(NOT_AVAILABLE, f"the store cannot take an ADD now: {problem}")
    except CNIError as err:
        if err.code not in (NOT_AVAILABLE, TRY_AGAIN_LATER):  # a busy lock is not an unusable store
            raise CNIError(NOT_AVAILABLE, f"the store is unusable: {err.msg}", err.details)
        raise
    return None


def versions(request):
    """VERSION: the versions this plugin speaks (request is None: see CONFIGLESS)."""
    return {"cniVersion": NEWEST, "supportedVersions": list(SUPPORTED)}


HANDLERS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status, "VERSION": versions}


def _held_already(store, family, caller):
    """The IPConfig of what a caller without an id already holds from family's subnet, or None.

    A runtime that retries an ADD (same container and ifname, no id) gets its address back
    instead of a second one that would leak. With an id, a second ADD stays code 102.
    """
    if caller.id is not None or caller.container is None:
        return None
    held = ownership.held_in(caller, family, store.held_by_container(caller.container))
    if not held:
        return None
    if family.static is not None and family.static.ip not in [a.address for a in held]:
        raise CNIError(DUPLICATE_ID, f"container {caller.container!r} already holds {held[0].address} "
                       f"from {family.subnet}, not the configured {family.static.ip}",
                       "DEL it first, or give the container its address in the config")
    chosen = next((a for a in held if family.static is not None and a.address == family.static.ip), held[0])
    return IPConfig(ownership.interface_of(chosen, family), family.gateway)
