"""The ownership rule against a reference model (tests/ownership_model.py): thousands of random
calls in-process, a few hundred through the built file as separate processes. Seeded; the seed
is in every failure (set ECS_IPAM_MODEL_SEED to replay one)."""

import json
import os

import pytest

from conftest import spawn
from ecs_ipam import cli
from ecs_ipam.disk import open_store
from ownership_model import Driver, Record

SEEDS = [int(os.environ["ECS_IPAM_MODEL_SEED"])] if "ECS_IPAM_MODEL_SEED" in os.environ else [1, 2, 3]


class InProcess:
    """The plugin's own process edge (cli.respond), called in this process, on a real store."""

    def __init__(self, db):
        self.db = str(db)

    def call(self, env, conf):
        call = cli.respond({"IPAM_DB_PATH": self.db, **env}, lambda: json.dumps(conf).encode(), lambda line: None)
        return call.code, call.output

    def records(self):
        with open_store(self.db, 5, writable=False) as store:
            return {Record(a.address, a.id, a.container, a.ifname, a.subnet) for a in store.allocations()}


class BuiltFile:
    """The built file as a runtime runs it: a fresh process per call, a bare environment."""

    def __init__(self, artifact, db):
        self.artifact = str(artifact)
        self.db = str(db)

    def _run(self, env, stdin, args=()):
        proc = spawn([self.artifact, *args], {"IPAM_DB_PATH": self.db, **env}, stdin)
        assert b"Traceback" not in proc.stdout + proc.stderr, proc
        return proc

    def call(self, env, conf):
        proc = self._run(env, json.dumps(conf).encode())
        return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None

    def records(self):
        import ipaddress

        proc = self._run({}, b"", ["db", "list", "--json"])
        if proc.returncode == 1 and b"no store at" in proc.stderr:
            return set()  # nothing committed yet
        assert proc.returncode == 0, proc
        return {Record(ipaddress.ip_address(a["address"]), a["id"], a["container"], a["ifname"],
                       ipaddress.ip_network(a["subnet"])) for a in json.loads(proc.stdout)["allocations"]}


@pytest.mark.parametrize("seed", SEEDS)
def test_the_rule_holds_over_random_calls_in_process(tmp_path, seed):
    driver = Driver(InProcess(tmp_path / "ipam.db"), seed)
    counts = driver.run(2000)
    assert all(counts.get(kind, 0) > 100 for kind in ("ADD", "DEL", "GC", "CHECK")), counts
    # The walk reaches every outcome the rule decides between, not only the happy path.
    outcomes = [("ADD", 0), ("ADD", 100), ("ADD", 101), ("ADD", 102), ("DEL", 0), ("DEL", 7), ("CHECK", 0),
                ("CHECK", 103), ("CHECK", 7)]
    assert all(driver.codes.get(outcome, 0) >= 1 for outcome in outcomes), driver.codes


def test_the_rule_holds_over_random_calls_to_the_built_file(artifact, tmp_path):
    seed = SEEDS[0] + 1000
    counts = Driver(BuiltFile(artifact, tmp_path / "ipam.db"), seed).run(250)
    assert all(counts.get(kind, 0) > 10 for kind in ("ADD", "DEL", "GC", "CHECK")), counts
