"""Who holds an allocation, and so what a DEL, GC, CHECK or repeated ADD may touch (pure: no store).

The rule. A caller is the config's ``id`` and the runtime's CNI_CONTAINERID and
CNI_IFNAME. It holds an allocation when:

- it gives an id: the allocation was recorded under that id, and, where both the caller and
  the record name a container, under the same container and ifname (so a second container
  that reuses a network config's id and fails its ADD cannot release the first one's address
  with the DEL the bridge plugin sends after a failed ADD);
- it gives no id: the allocation was recorded under no id, and under the caller's container
  and ifname (no container on both sides: an anonymous caller holds what was allocated
  anonymously). An allocation made under an id is never held by a caller without one: a
  runtime that reuses one container id for every attachment (the ECS agent's netlib) thus
  cannot release anything with a DEL that names no id.

An ifname missing on either side matches any (see store.same_interface). Then, of what the
caller holds:

- DEL with an id releases everything the id holds, from whatever subnet: an id names one
  holder for the whole store (it holds at most one address per family), as in the Go plugin,
  and a network whose subnet was edited must still be able to release its addresses.
- DEL without an id releases the addresses the config names, and what the container holds
  from the config's own subnets (the subnet recorded at ADD, not containment: overlapping
  networks share a store and each releases only its own).
- GC releases allocations recorded with a container that its live attachment list does not
  name, from the config's own subnets only; allocations without a container are never GC's.
- CHECK and a repeated ADD look at what the caller holds from the config's subnet of each
  family.
"""

import ipaddress
from collections import namedtuple

from ecs_ipam.errors import CHECK_MISMATCH, CNIError
from ecs_ipam.store import same_interface

# id, container and ifname are None when the config or the runtime does not give them.
Caller = namedtuple("Caller", "id container ifname")
# What a DEL does: release these allocations; spared are the ones the caller's container holds
# under ids, which a DEL without an id leaves alone (the command says so on stderr).
Release = namedtuple("Release", "allocations spared")


def holds(caller, allocation):
    """Whether caller holds allocation (the rule in this module's docstring)."""
    if caller.id is not None:
        return allocation.id == caller.id and _same_attachment(caller, allocation)
    if allocation.id is not None or allocation.container != caller.container:
        return False
    return caller.container is None or same_interface(allocation.ifname, caller.ifname)


def identifies(caller, subnets, addresses):
    """Whether a DEL of caller naming these subnets and addresses can identify anything at all."""
    return caller.id is not None or bool(addresses) or (caller.container is not None and bool(subnets))


def release_by_del(caller, subnets, addresses, candidates):
    """The Release of a DEL: of candidates, what the caller holds and the DEL names."""
    def named(allocation):
        if caller.id is not None:
            return True
        if allocation.address in addresses:
            return True
        return caller.container is not None and allocation.subnet in subnets

    candidates = _unique(candidates)
    released = [a for a in candidates if holds(caller, a) and named(a)]
    spared = []
    if caller.id is None and caller.container is not None:
        spared = [a for a in candidates if a.id is not None and a.container == caller.container
                  and same_interface(a.ifname, caller.ifname) and a.subnet in subnets]
    return Release(released, spared)


def release_by_gc(subnets, live, candidates):
    """What GC releases: allocations from subnets recorded with a container that live does not name.

    live is {container: {ifname or None}}, the config's valid attachments.
    """
    def attached(allocation):
        return any(same_interface(allocation.ifname, ifname) for ifname in live.get(allocation.container, ()))

    return [a for a in candidates if a.container is not None and a.subnet in subnets and not attached(a)]


def held_in(caller, family, candidates):
    """What caller holds, of candidates, from family's subnet."""
    return [a for a in _unique(candidates) if a.subnet == family.subnet and holds(caller, a)]


def interface_of(allocation, family):
    """The address with its prefix as the ADD reported it: the static address's own, else the subnet's."""
    if family.static is not None and family.static.ip == allocation.address:
        return family.static
    return ipaddress.ip_interface((allocation.address, family.subnet.prefixlen))


def check(caller, families, expected, candidates):
    """CHECK's verdict: None when caller holds an address from each family's subnet, the static
    ones among them, and (expected, prevResult's interfaces, given) exactly those; else code 103."""
    owner = f"id {caller.id!r}" if caller.id is not None else f"container {caller.container!r}"
    for family in families:
        mine = sorted(interface_of(a, family) for a in held_in(caller, family, candidates))
        if not mine:
            raise CNIError(CHECK_MISMATCH, f"{owner} holds no IPv{family.version} address from {family.subnet}")
        if family.static is not None and family.static not in mine:
            raise CNIError(CHECK_MISMATCH, f"{owner} does not hold its configured {family.static}",
                           f"it holds {names(mine)} from {family.subnet}")
        if expected is not None:
            wanted = sorted(i for i in expected if i.version == family.version)
            if wanted != mine:
                raise CNIError(CHECK_MISMATCH,
                               f"prevResult's IPv{family.version} addresses differ from what {owner} holds",
                               f"prevResult has {names(wanted)}, the store has {names(mine)}")
    return None


def _same_attachment(caller, allocation):
    """Whether the record's container and ifname can be the caller's: an unknown container matches any."""
    if caller.container is None or allocation.container is None:
        return True
    return allocation.container == caller.container and same_interface(allocation.ifname, caller.ifname)


def _unique(allocations):
    seen, unique = set(), []
    for allocation in allocations:
        if allocation.address not in seen:
            seen.add(allocation.address)
            unique.append(allocation)
    return unique


def names(addresses):
    """The addresses, comma-separated; "none" when there are none."""
    return ", ".join(map(str, addresses)) or "none"
