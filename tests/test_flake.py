"""flake.nix parses and evaluates offline, against tests/nix-stand-in in place of nixpkgs.

This machine cannot reach nixpkgs, so the stand-in supplies the few attributes the flake
uses as real but unbuildable derivations; `nix flake check --no-build` then evaluates
packages, checks and devShells for every system. Nix sees only files git tracks.
"""

import json
import shutil
import subprocess

import pytest

from conftest import ROOT

STAND_IN = ROOT / "tests" / "nix-stand-in"
NIX = ["nix", "--extra-experimental-features", "nix-command flakes"]
OFFLINE = ["--no-write-lock-file", "--override-input", "nixpkgs", f"path:{STAND_IN}"]

pytestmark = pytest.mark.skipif(
    not shutil.which("nix") or not (ROOT / ".git").exists(),
    reason="needs nix (Debian: apt-get install nix-bin) and a git checkout",
)


def nix(*args):
    proc = subprocess.run([*NIX, *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def derivation(attribute):
    """The derivation of flake output `attribute`, as `nix show-derivation` gives it."""
    shown = json.loads(nix("show-derivation", *OFFLINE, f"{ROOT}#{attribute}"))
    (drv,) = shown.values()
    return drv


def stand_in_path(name):
    """The output path of the stand-in's python3 or one of its python3Packages."""
    expression = f"(builtins.getFlake \"path:{STAND_IN}\").legacyPackages.x86_64-linux.{name}.outPath"
    return json.loads(nix("eval", "--impure", "--json", "--expr", expression))


def test_flake_files_parse():
    for flake in (ROOT / "flake.nix", STAND_IN / "flake.nix"):
        proc = subprocess.run(["nix-instantiate", "--parse", str(flake)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_flake_check_evaluates_every_output():
    nix("flake", "check", "--no-build", *OFFLINE, str(ROOT))


def test_package_runs_pack_with_the_store_python_and_shiv_offline():
    drv = derivation("packages.x86_64-linux.default")
    python3, shiv = stand_in_path("python3"), stand_in_path("python3Packages.shiv")
    build = drv["env"]["buildPhase"]
    assert f"tools/pack.py --python {python3}/bin/python3 --output dist/ecs-ipam" in build
    assert "SOURCE_DATE_EPOCH=" in build
    assert set(drv["env"]["nativeBuildInputs"].split()) == {python3, shiv}
    assert "outputHash" not in drv["env"]  # not fixed-output: the sandbox gives it no network
    assert "install -D -m 0755 dist/ecs-ipam $out/bin/ecs-ipam" in drv["env"]["installPhase"]


def test_check_runs_pytest_against_the_package():
    package = derivation("packages.x86_64-linux.default")["outputs"]["out"]["path"]
    check = derivation("checks.x86_64-linux.default")
    assert f"ECS_IPAM_ARTIFACT={package}/bin/ecs-ipam" in check["env"]["checkPhase"]
    assert "python3 -m pytest" in check["env"]["checkPhase"]


def test_dev_shell_has_python_shiv_and_pytest():
    shell = derivation("devShells.x86_64-linux.default")
    expected = {stand_in_path(n) for n in ("python3", "python3Packages.shiv", "python3Packages.pytest")}
    assert set(shell["env"]["nativeBuildInputs"].split()) == expected
