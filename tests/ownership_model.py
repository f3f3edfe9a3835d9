"""A reference model of who holds what, and a seeded generator of random CNI calls checked against it.

The model knows the ownership rule (ecs_ipam/ownership.py) in its own terms: a list
of held addresses, each with the id, container, ifname and subnet it was allocated under.
A Driver sends random ADD, DEL, GC and CHECK calls from random callers to a plugin (in-process
or the built file), predicts each outcome from the model, and after every step compares the
store with the model. What that proves, step by step:

- no address is held twice, and an ADD never returns an address a live attachment holds;
- no live attachment loses an address except to a DEL or GC the rule allows;
- every DEL by the caller that made an ADD releases what that ADD got.
"""

import ipaddress
import random
from collections import namedtuple

Network = namedtuple("Network", "name subnets statics")  # statics: {version: "address/prefix"}
Caller = namedtuple("Caller", "id container ifname")
Record = namedtuple("Record", "address id container ifname subnet")

NETWORKS = (
    Network("a", ("10.0.0.0/28",), {4: "10.0.0.5/28"}),
    Network("b", ("10.0.0.8/29",), {4: "10.0.0.12/29"}),  # inside a: shares .10-.14 with it
    Network("c", ("fd00::/124",), {6: "fd00::5/124"}),
    Network("d", ("10.0.1.0/29", "fd00::8/125"), {4: "10.0.1.3/29"}),  # dual; its IPv6 inside c's
    Network("e", ("10.0.0.0/28", "fd00:1::/124"), {6: "fd00:1::7/124"}),  # a's IPv4 subnet, again
)

# Generic runtimes: no ipam id, a container and an ifname (sometimes none).
GENERIC = [Caller(None, c, i) for c in ("g1", "g2", "g3") for i in ("eth0", "eth1", None)]
# netlib: one constant container id and ifname, an id per task.
NETLIB = [Caller(f"/var/run/netns/task{n}-eni", "container-id", "eth0") for n in range(5)]
# The classic agent: an ENI MAC as id; the release DEL has an EMPTY CNI_CONTAINERID.
CLASSIC = [Caller(f"0a:00:00:00:00:0{n}", f"{n:064x}", "ecs-eth0") for n in range(3)]
# A generic runtime whose network config carries one id (as the seed README's example): the
# second container's ADD fails, and the bridge plugin's DEL for it names the same id.
SHARED_ID = [Caller("12345", c, "eth0") for c in ("g1", "g2")]
# Rare callers: netlib's DEL without an id, an id without a container, and so on.
STRAYS = [Caller(None, "container-id", "eth0"), Caller(None, "stray", "eth0"), Caller("ghost", None, None),
          Caller("ghost", "stray", "eth9")]
# No id, no container: a hand-made call.
ANONYMOUS = Caller(None, None, None)


def _same_interface(recorded, asked):
    return recorded is None or asked is None or recorded == asked


def caller_holds(caller, record):
    """The rule, as the model states it."""
    if caller.id is not None:
        if record.id != caller.id:
            return False
        if caller.container is None or record.container is None:
            return True
        return record.container == caller.container and _same_interface(record.ifname, caller.ifname)
    if record.id is not None:
        return False
    if caller.container is None:
        return record.container is None
    return record.container == caller.container and _same_interface(record.ifname, caller.ifname)


class Expect:
    """A predicted outcome: code 0 (with what to check) or a CNI error code."""

    def __init__(self, code, check=None):
        self.code = code
        self.check = check


class Model:
    def __init__(self):
        self.records = {}  # address -> Record

    def usable(self, subnet):
        network = ipaddress.ip_network(subnet)
        first = int(network.network_address) + 2  # the network address and the gateway (network+1)
        last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
        return [ipaddress.ip_address(n) for n in range(first, last + 1)]

    def families(self, network, static):
        """[(version, subnet, static ip_interface or None)] in result order (IPv4 first)."""
        found = []
        for subnet in network.subnets:
            version = ipaddress.ip_network(subnet).version
            address = network.statics.get(version) if static else None
            found.append((version, ipaddress.ip_network(subnet),
                          None if address is None else ipaddress.ip_interface(address)))
        return found

    def add(self, network, static, caller):
        """(Expect, the records the ADD would add when it succeeds, per family the acceptable addresses)."""
        plan = []
        for version, subnet, address in self.families(network, static):
            if caller.id is not None and any(r.id == caller.id and r.address.version == version
                                             for r in self.records.values()):
                return Expect(102), None
            if caller.id is None and caller.container is not None:
                existing = [r for r in self.records.values() if r.subnet == subnet and caller_holds(caller, r)]
                if existing:
                    if address is not None and address.ip not in [r.address for r in existing]:
                        return Expect(102), None
                    plan.append((version, subnet, address, existing, None))
                    continue
            if address is not None:
                if address.ip in self.records:
                    return Expect(100), None
                plan.append((version, subnet, address, None, [address.ip]))
                continue
            free = [a for a in self.usable(str(subnet)) if a not in self.records]
            if not free:
                return Expect(101), None
            plan.append((version, subnet, None, None, free))
        return Expect(0), plan

    def delete(self, network, static, caller):
        families = self.families(network, static)
        subnets = [subnet for _, subnet, _ in families]
        statics = [address.ip for _, _, address in families if address is not None]
        if caller.id is None and not statics and caller.container is None:
            return Expect(7), []

        def named(record):
            return caller.id is not None or record.address in statics or (
                caller.container is not None and record.subnet in subnets)

        return Expect(0), [r for r in self.records.values() if caller_holds(caller, r) and named(r)]

    def gc(self, network, live):
        subnets = [ipaddress.ip_network(s) for s in network.subnets]

        def attached(record):
            return any(container == record.container and _same_interface(record.ifname, ifname or None)
                       for container, ifname in live)

        return [r for r in self.records.values()
                if r.container is not None and r.subnet in subnets and not attached(r)]

    def check(self, network, static, caller, prev):
        """The expected code of a CHECK (prev: the prevResult's addresses, or None)."""
        if caller.id is None and caller.container is None:
            return 7
        for version, subnet, address in self.families(network, static):
            mine = sorted(ipaddress.ip_interface((r.address, address.network.prefixlen
                                                  if address is not None and address.ip == r.address
                                                  else subnet.prefixlen))
                          for r in self.records.values() if r.subnet == subnet and caller_holds(caller, r))
            if not mine or (address is not None and address not in mine):
                return 103
            if prev is not None and sorted(i for i in prev if i.version == version) != mine:
                return 103
        return 0


def netconf(network, static, caller, cni_version="1.1.0", **extra):
    ipam = {"type": "ecs-ipam"}
    for subnet in network.subnets:
        version = ipaddress.ip_network(subnet).version
        ipam[f"ipv{version}-subnet"] = subnet
        if static and version in network.statics:
            ipam[f"ipv{version}-address"] = network.statics[version]
    if caller.id is not None:
        ipam["id"] = caller.id
    return {"cniVersion": cni_version, "name": f"net-{network.name}", "type": "bridge", "ipam": ipam, **extra}


def environment(command, caller, classic_release=False):
    env = {"CNI_COMMAND": command}
    if caller.container is not None and not classic_release:
        env["CNI_CONTAINERID"] = caller.container
    if caller.ifname is not None:
        env["CNI_IFNAME"] = caller.ifname
    return env


class Driver:
    """Random calls against plugin, each predicted by the model; plugin is an object with
    call(env, conf) -> (exit code, JSON output or None) and records() -> {Record}."""

    def __init__(self, plugin, seed):
        self.plugin = plugin
        self.seed = seed
        self.random = random.Random(seed)
        self.model = Model()
        self.attachments = {}  # (network name, static, caller) -> the records its ADD got
        self.counts = {}  # command -> calls
        self.codes = {}  # (command, the code it answered) -> calls

    def fail(self, step, what):
        raise AssertionError(f"seed {self.seed}, step {step}: {what}")

    def run(self, steps):
        for step in range(steps):
            kind = self.random.choices(["ADD", "DEL", "GC", "CHECK"], weights=[6, 3, 1, 2])[0]
            getattr(self, "_" + kind.lower())(step)
            self.counts[kind] = self.counts.get(kind, 0) + 1
            held = self.plugin.records()
            if held != set(self.model.records.values()):
                self.fail(step, f"after {kind} the store holds {sorted(held - set(self.model.records.values()))} "
                                f"beyond the model and lacks {sorted(set(self.model.records.values()) - held)}")
        return self.counts

    def _answered(self, kind, code):
        self.codes[kind, code] = self.codes.get((kind, code), 0) + 1

    def _pick_caller(self):
        group = self.random.choices([GENERIC, NETLIB, CLASSIC, SHARED_ID, STRAYS, [ANONYMOUS]],
                                    weights=[5, 4, 2, 1, 2, 1])[0]
        return self.random.choice(group)

    def _add(self, step):
        network = self.random.choice(NETWORKS)
        caller = self._pick_caller()
        static = self.random.random() < 0.25
        if caller == ANONYMOUS:  # only its static addresses identify what it holds: all static, or leaked
            network, static = self.random.choice([n for n in NETWORKS if len(n.statics) == len(n.subnets)]), True
        expect, plan = self.model.add(network, static, caller)
        code, output = self.plugin.call(environment("ADD", caller), netconf(network, static, caller))
        got = output.get("code", 0) if isinstance(output, dict) and code else 0
        self._answered("ADD", got)
        if got != expect.code:
            self.fail(step, f"ADD {network.name} static={static} {caller}: expected code {expect.code}, got {output}")
        if expect.code:
            return
        ips = [ipaddress.ip_interface(ip["address"]) for ip in output["ips"]]
        if len(ips) != len(plan):
            self.fail(step, f"ADD {network.name} {caller}: {len(plan)} families, the result has {output}")
        added = []
        for ip, (version, subnet, address, existing, acceptable) in zip(ips, plan):
            if existing is not None:
                record = next((r for r in existing if r.address == ip.ip), None)
                if record is None:
                    self.fail(step, f"a repeated ADD by {caller} gave {ip}, not what it holds: {existing}")
            else:
                if ip.ip not in acceptable:
                    held = self.model.records.get(ip.ip)
                    self.fail(step, f"ADD by {caller} gave {ip}, "
                                    + (f"held by {held}" if held else f"not one of {len(acceptable)} free"))
                record = Record(ip.ip, caller.id, caller.container, caller.ifname, subnet)
                added.append(record)
            wanted_prefix = address.network.prefixlen if address is not None and address.ip == ip.ip \
                else subnet.prefixlen
            if ip.network.prefixlen != wanted_prefix:
                self.fail(step, f"ADD gave {ip}, expected the prefix /{wanted_prefix}")
        for record in added:
            self.model.records[record.address] = record
        key = (network.name, static, caller)
        self.attachments[key] = self.attachments.get(key, []) + added

    def _del(self, step):
        if self.attachments and self.random.random() < 0.7:  # most DELs come from an attachment's own caller
            name, static, caller = self.random.choice(sorted(self.attachments, key=repr))
            network = next(n for n in NETWORKS if n.name == name)
        else:
            network, static, caller = self.random.choice(NETWORKS), self.random.random() < 0.3, self._pick_caller()
        classic_release = caller in CLASSIC and self.random.random() < 0.8
        as_sent = caller._replace(container=None) if classic_release else caller
        expect, released = self.model.delete(network, static, as_sent)
        code, output = self.plugin.call(environment("DEL", caller, classic_release), netconf(network, static, caller))
        got = output.get("code", 0) if isinstance(output, dict) and code else 0
        self._answered("DEL", got)
        if got != expect.code or (code == 0 and output is not None):
            self.fail(step, f"DEL {network.name} static={static} {as_sent}: expected {expect.code}, got {code} {output}")
        for record in released:
            del self.model.records[record.address]
        own = self.attachments.pop((network.name, static, caller), None) if expect.code == 0 else None
        if own is not None:
            still = [r for r in own if self.model.records.get(r.address) == r]
            if still:
                self.fail(step, f"the DEL of {caller}'s own attachment on {network.name} left {still} held")
        self._forget_released()

    def _gc(self, step):
        network = self.random.choice(NETWORKS)
        callers = [c for c in GENERIC + NETLIB + CLASSIC + SHARED_ID + STRAYS if c.container is not None]
        live = {(c.container, c.ifname or "") for c in self.random.sample(callers, self.random.randint(0, 6))}
        released = self.model.gc(network, live)
        conf = netconf(network, False, ANONYMOUS, **{
            "cni.dev/valid-attachments": [{"containerID": c, "ifname": i} for c, i in sorted(live)]})
        code, output = self.plugin.call({"CNI_COMMAND": "GC"}, conf)
        if code != 0:
            self.fail(step, f"GC {network.name} {sorted(live)}: {output}")
        for record in released:
            del self.model.records[record.address]
        self._forget_released()

    def _check(self, step):
        if self.attachments and self.random.random() < 0.6:
            name, static, caller = self.random.choice(sorted(self.attachments, key=repr))
            network = next(n for n in NETWORKS if n.name == name)
        else:
            network, static, caller = self.random.choice(NETWORKS), self.random.random() < 0.3, self._pick_caller()
        prev = None
        extra = {}
        if self.random.random() < 0.6:
            held = sorted((ipaddress.ip_interface((r.address, r.subnet.prefixlen)) for r in self.model.records.values()
                           if caller_holds(caller, r) and str(r.subnet) in network.subnets),
                          key=lambda i: (i.version, i))
            if held and self.random.random() < 0.3:  # a prevResult that differs in the prefix
                first = held[0]
                held[0] = ipaddress.ip_interface((first.ip, first.network.prefixlen - 1))
            prev = held
            extra["prevResult"] = {"cniVersion": "1.1.0", "ips": [{"address": str(i)} for i in held]}
        expected = self.model.check(network, static, caller, prev)
        code, output = self.plugin.call(environment("CHECK", caller), netconf(network, static, caller, **extra))
        got = output.get("code", 0) if isinstance(output, dict) and code else 0
        self._answered("CHECK", got)
        if got != expected:
            self.fail(step, f"CHECK {network.name} static={static} {caller} prev={prev}: "
                            f"expected {expected}, got {output}")

    def _forget_released(self):
        """An attachment whose addresses all went (by a DEL of its id elsewhere, or GC) is no longer live."""
        for key, records in list(self.attachments.items()):
            kept = [r for r in records if self.model.records.get(r.address) == r]
            if kept:
                self.attachments[key] = kept
            else:
                del self.attachments[key]
