"""Each script in benchmarks/ runs on a tiny size and prints its table (the figures are not judged)."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = {
    "startup.py": (["--rounds", "1"], ["| what runs | median | vs bare interpreter |",
                                       "| the shipped file's ADD, by part | ms |", "The call log: "]),
    "journal_length.py": (["--runs", "1", "--lengths", "0,3"], ["| journal records | ADD median | vs 0 |", "| 3 |"]),
    "store_scaling.py": (["--runs", "1", "--compactions", "1", "--sizes", "0,10", "--host-local-sizes", "0"],
                         ["ecs-ipam store scaling: median wall ms of 1 processes per cell", "ADD+compact"]),
}


def test_every_script_is_smoke_run():
    assert sorted(SCRIPTS) == sorted(p.name for p in (ROOT / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_a_benchmark_runs_on_a_tiny_size_and_prints_its_table(artifact, tmp_path, script):
    args, lines = SCRIPTS[script]
    env = {**os.environ, "ECS_IPAM_ARTIFACT": str(artifact), "TMPDIR": str(tmp_path)}  # its scratch stays here
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    for line in lines:
        assert line in proc.stdout, (line, proc.stdout)
    rows = [row for row in proc.stdout.splitlines() if row.startswith("|") or " | " in row]
    assert len(rows) >= 3, proc.stdout  # a header, and rows of figures under it
