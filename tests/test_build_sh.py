"""build.sh and tools/pack.py tell the user what to install, and refuse a shebang that cannot work."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT



def test_build_sh_says_what_to_install_when_python_lacks_dbm_gnu(tmp_path):
    shutil.copy2(ROOT / "build.sh", tmp_path / "build.sh")  # a checkout without .venv yet
    fake = tmp_path / "python-without-gdbm"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    proc = subprocess.run([str(tmp_path / "build.sh")], env={"PATH": "/usr/bin:/bin", "PYTHON": str(fake)},
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{fake} has no dbm.gnu" in proc.stderr
    assert "apt-get install python3 python3-venv python3-gdbm" in proc.stderr
    assert "apk add python3 py3-gdbm" in proc.stderr
    assert not (tmp_path / ".venv").exists()


def pack(tmp_path, python):
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "pack.py"), "--python", python, "--output", str(tmp_path / "out")],
        capture_output=True, text=True,
    )


def test_pack_refuses_a_shebang_through_env(tmp_path):
    proc = pack(tmp_path, "/usr/bin/env python3")
    assert proc.returncode == 1
    assert "absolute path" in proc.stderr and "/usr/bin/env" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_pack_refuses_an_interpreter_without_dbm_gnu(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    proc = pack(tmp_path, str(fake))
    assert proc.returncode == 1
    assert f"{fake} has no dbm.gnu" in proc.stderr and "apt-get install python3-gdbm" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_readme_demo_command_works_as_written():
    """The README's first command, `./build.sh demo`: ADD, list, DEL, list on a scratch store."""
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("needs the .venv that ./build.sh makes (absent in the Nix check's sandbox)")
    proc = subprocess.run(["./build.sh", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    added = next(line for line in proc.stdout.splitlines() if line.startswith('{"cniVersion"'))
    assert json.loads(added)["ips"] == [{"address": "169.254.172.2/22", "gateway": "169.254.172.1"},
                                        {"address": "fd00:ec2::2/64", "gateway": "fd00:ec2::1"}]
    assert "2 allocation(s)" in proc.stdout and "0 allocation(s)" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
