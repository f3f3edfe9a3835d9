"""Helpers for the end-to-end tests: network configs as a runtime sends them, and short assertions."""

import os
from pathlib import Path

from conftest import ROOT, spawn

ALL_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LEGACY_VERSIONS = ("0.1.0", "0.2.0")
VERSIONED_IPS = ("0.3.0", "0.3.1", "0.4.0")

V4 = {"ipv4-subnet": "10.0.0.0/24"}
V6 = {"ipv6-subnet": "2001:db8::/64"}
DUAL = {**V4, **V6}


def netconf(ipam, cni_version="1.1.0", **extra):
    """The whole network config a runtime pipes to a delegated IPAM plugin; cni_version None omits it."""
    conf = {"name": "ecs-net", "type": "ecs-bridge", "ipam": {"type": "ecs-ipam", **ipam}}
    if cni_version is not None:
        conf = {"cniVersion": cni_version, **conf}
    conf.update(extra)
    return conf


def succeeded(outcome):
    assert outcome.code == 0, outcome
    return outcome


def silent_success(outcome):
    """DEL, CHECK, GC and STATUS succeed with exit 0 and nothing on stdout."""
    assert outcome.code == 0, outcome
    assert outcome.stdout == "", outcome
    return outcome


def failed(outcome, code, *fragments):
    """A CNI error object on stdout, exit 1, with code; msg + details contain every fragment."""
    assert outcome.code == 1, outcome
    error = outcome.json
    assert isinstance(error, dict) and error.get("code") == code, outcome
    assert isinstance(error.get("msg"), str) and error["msg"], outcome
    text = error["msg"] + " " + error.get("details", "")
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return error


def add(plugin, ipam, cni_version="1.1.0", env=None, **extra):
    """ADD that must succeed: the result JSON."""
    outcome = succeeded(plugin.run("ADD", netconf(ipam, cni_version, **extra), env=env))
    assert outcome.json["cniVersion"] == cni_version, outcome
    return outcome.json


def add_addresses(plugin, ipam, env=None):
    """ADD (1.1.0) that must succeed: its ips[].address values, IPv4 first."""
    return [ip["address"] for ip in add(plugin, ipam, env=env)["ips"]]


def add_address(plugin, ipam, env=None):
    """ADD (1.1.0) of a single family that must succeed: the address without its prefix."""
    [address] = add_addresses(plugin, ipam, env)
    return address.split("/")[0]


def delete(plugin, ipam, env=None, cni_version="1.1.0", **extra):
    """DEL that must succeed silently."""
    return silent_success(plugin.run("DEL", netconf(ipam, cni_version, **extra), env=env))


def assert_held(plugin, subnet_fields, address, holder=None):
    """address is held (a static ADD of it is refused with code 100), by id holder when given."""
    family = 6 if ":" in address else 4
    prefix = subnet_fields[f"ipv{family}-subnet"].split("/")[1]
    outcome = plugin.run("ADD", netconf({f"ipv{family}-subnet": subnet_fields[f"ipv{family}-subnet"],
                                         f"ipv{family}-address": f"{address}/{prefix}",
                                         "id": "probe-held"}))
    fragments = [address] + ([repr(holder)] if holder is not None else [])
    failed(outcome, 100, *fragments)


def assert_free(plugin, subnet_fields, address):
    """address is free: a static ADD of it succeeds (and is undone by id at once)."""
    family = 6 if ":" in address else 4
    subnet = subnet_fields[f"ipv{family}-subnet"]
    ipam = {f"ipv{family}-subnet": subnet, f"ipv{family}-address": f"{address}/{subnet.split('/')[1]}",
            "id": "probe-free"}
    add(plugin, ipam)
    delete(plugin, {f"ipv{family}-subnet": subnet, "id": "probe-free"})


def listing(plugin):
    """`ecs-ipam db list --json` of the plugin's store: {"allocations": [...], "cursors": {...}}."""
    outcome = plugin.run(None, args=["db", "list", "--json"])
    assert outcome.code == 0, outcome
    return outcome.json


def held_addresses(plugin):
    """{address: (id, container, ifname, subnet)} from the operator listing."""
    return {a["address"]: (a["id"], a["container"], a["ifname"], a["subnet"])
            for a in listing(plugin)["allocations"]}


class Run:
    """One finished operator command: exit code, stdout and stderr as text (not JSON)."""

    def __init__(self, proc):
        self.code, self.stdout, self.stderr = proc.returncode, proc.stdout.decode(), proc.stderr.decode()
        assert "Traceback" not in self.stdout + self.stderr, self.stdout + self.stderr

    def __repr__(self):
        return f"<exit {self.code} stdout={self.stdout!r} stderr={self.stderr!r}>"


def run_args(plugin, args, env=None, stdin=b""):
    """The artifact with ARGS (no CNI_COMMAND) in the minimal environment the plugin fixture uses, on its store."""
    return Run(spawn([plugin.artifact, *args], plugin.env(None, env), stdin))


def run_db(plugin, args, env=None, stdin=b""):
    """`ecs-ipam db ARGS`, as run_args."""
    return run_args(plugin, ["db", *args], env, stdin)


def readme_block(after, language="sh"):
    """The first ```LANGUAGE block of the README after the first line that contains `after`."""
    readme = (ROOT / "README.md").read_text()
    rest = readme[readme.index(after):]
    start = rest.index(f"```{language}\n") + len(f"```{language}\n")
    return rest[start:rest.index("```\n", start)]


def store_files(plugin):
    """{name: bytes} of the store's files (the lock file aside: taking a lock may create it)."""
    directory = Path(plugin.db_path).parent
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
            if p.is_file() and not p.name.endswith(".lock")}


def mode_of(path):
    return os.stat(path).st_mode & 0o777

