"""`pip install .` gives a working ecs-ipam command, without the zipapp."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT



def test_pip_install_gives_a_working_command(tmp_path):
    pytest.importorskip("setuptools", minversion="61")
    pytest.importorskip("wheel")
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("no source tree")
    target = tmp_path / "target"
    # --no-build-isolation: use this environment's setuptools instead of fetching one.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    command = target / "bin" / "ecs-ipam"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(target)}
    version = subprocess.run([str(command), "--version"], env=env, capture_output=True, check=True)
    assert json.loads(version.stdout)["version"]
    config = {"cniVersion": "1.0.0", "name": "pip", "type": "ecs-bridge",
              "ipam": {"type": "ecs-ipam", "ipv4-subnet": "10.9.0.0/24"}}
    add = subprocess.run(
        [str(command)], input=json.dumps(config).encode(), capture_output=True,
        env={**env, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0",
             "CNI_PATH": "/opt/cni/bin", "IPAM_DB_PATH": str(tmp_path / "ipam.db")},
    )
    assert add.returncode == 0, add
    assert json.loads(add.stdout)["ips"][0]["address"] == "10.9.0.2/24"
