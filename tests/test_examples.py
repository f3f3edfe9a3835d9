"""End to end: every config in examples/ through ADD, CHECK and DEL with the built file, and the
README's "run it by hand" block exactly as written."""

import json
import subprocess

import pytest

from conftest import ROOT, runtime_env
from e2e_support import held_addresses, readme_block, silent_success, succeeded

EXAMPLES = ROOT / "examples"
CLASSIC_PAUSE = "5f1c0e6b" * 8  # the classic agent's CNI_CONTAINERID: the pause container's docker id
# file: (the addresses its ADD must give, the environment of its ADD, of its DEL). The ECS ones
# carry what the agent sends (ecs-agent-callers: the classic release DEL has no CNI_CONTAINERID).
EXPECTED = {
    "ipv4-only.conf": (["10.0.0.2/24"], {}, {}),
    "ipv6-only.conf": (["2001:db8::2/64"], {}, {}),
    "dual-stack.conf": (["10.0.0.2/24", "2001:db8::2/64"], {}, {}),
    "ecs-awsvpc-task.conf": (["169.254.172.2/22"], {"CNI_CONTAINERID": CLASSIC_PAUSE, "CNI_IFNAME": "ecs-eth0"},
                             {"CNI_IFNAME": "ecs-eth0"}),
    "ecs-netlib-daemon.conf": (["169.254.172.2/32", "fd00:ec2::172:2/128"],
                               {"CNI_CONTAINERID": "container-id"}, {"CNI_CONTAINERID": "container-id"}),
}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_through_add_check_and_del(plugin, name):
    text = (EXAMPLES / name).read_text()
    conf = json.loads(text)
    addresses, add_env, del_env = EXPECTED[name]
    added = succeeded(plugin.run("ADD", stdin=text, env=add_env)).json
    assert added["cniVersion"] == conf["cniVersion"]
    assert [ip["address"] for ip in added["ips"]] == addresses
    held = held_addresses(plugin)
    assert {address: holder[0] for address, holder in held.items()} == \
        {address.split("/")[0]: conf["ipam"]["id"] for address in addresses}
    # CHECK as the runtime sends it: the config with the ADD's result as prevResult.
    check = dict(conf, prevResult=added)
    if conf["cniVersion"] < "0.4.0":  # the ECS agent's 0.3.0 has no CHECK; the same config at 0.4.0 has
        refused = plugin.run("CHECK", config=check, env=add_env)
        assert refused.code == 1 and refused.json["code"] == 1 and "CHECK" in refused.json["details"], refused
        check["cniVersion"] = "0.4.0"
    silent_success(plugin.run("CHECK", config=check, env=add_env))
    silent_success(plugin.run("DEL", stdin=text, env=del_env))
    assert held_addresses(plugin) == {}
    silent_success(plugin.run("DEL", stdin=text, env=del_env))  # DEL is idempotent


def test_readme_ipv4_example_is_examples_ipv4_only():
    block = readme_block("IPv4-only (`examples/ipv4-only.conf`", "json")
    assert json.loads(block) == json.loads((EXAMPLES / "ipv4-only.conf").read_text())


def test_readme_run_it_by_hand_works_as_written(artifact, tmp_path):
    """The block runs in a checkout's top directory after ./build.sh: dist/ecs-ipam and examples/."""
    block = readme_block("To run the plugin by hand")
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "ecs-ipam").symlink_to(artifact)
    (tmp_path / "examples").symlink_to(EXAMPLES)
    env = runtime_env({"HOME": str(tmp_path), "TMPDIR": str(tmp_path)})
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, (block, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [ip["address"] for ip in results[0]["ips"]] == ["10.0.0.2/24", "2001:db8::2/64"]
    assert "2 allocation(s)" in proc.stdout and "0 allocation(s)" in proc.stdout
