"""End to end: the call log (ECS_CNI_LOG_FILE) written by the built file, its rotation, and its failures."""

import calendar
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import FlockHolder, spawn
from e2e_support import V4, add, add_address, delete, failed, listing, netconf, silent_success, succeeded

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \[(INFO|ERROR)\] (\S+) id=(\S+) container=(\S+) "
                  r"ifname=(\S+): (.*)$")
MAX_BYTES = 4 * 1024 * 1024  # the documented size at which the log rotates


@pytest.fixture
def log(tmp_path):
    return tmp_path / "logs" / "ecs-cni-ipam-plugin.log"


@pytest.fixture
def logged(plugin, log):
    """The plugin with ECS_CNI_LOG_FILE set to log (its directory made, as /var/log/ecs is on a host)."""
    log.parent.mkdir()
    plugin.log_env = {"ECS_CNI_LOG_FILE": str(log)}
    return plugin


def lines(log):
    return log.read_text().splitlines() if log.exists() else []


def parsed(log):
    found = []
    for line in lines(log):
        match = LINE.match(line)
        assert match, line
        found.append(match.groups())
    return found


def test_add_del_and_gc_that_change_the_store_each_append_one_line(logged, log):
    env = {**logged.log_env, "CNI_CONTAINERID": "pause-1", "CNI_IFNAME": "ecs-eth0"}
    before = int(time.time())
    add(logged, {"ipv4-subnet": "169.254.172.0/22", "ipv6-subnet": "fd00:ec2::/64", "id": "0a:1b:2c:3d:4e:5f"},
        env=env)
    add(logged, V4, env={**logged.log_env, "CNI_CONTAINERID": "c2"})
    add(logged, V4, env={**logged.log_env, "CNI_CONTAINERID": "c2"})  # a retried ADD: its address back, no change
    since = {a["address"]: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(a["allocated_at"]))
             for a in listing(logged)["allocations"]}
    delete(logged, {"ipv4-subnet": "169.254.172.0/22", "id": "0a:1b:2c:3d:4e:5f"},
           env={**logged.log_env, "CNI_IFNAME": "ecs-eth0"})  # the classic agent's release: no container id
    delete(logged, {"ipv4-subnet": "169.254.172.0/22", "id": "0a:1b:2c:3d:4e:5f"}, env=logged.log_env)  # nothing
    silent_success(logged.run("GC", netconf(V4, **{"cni.dev/valid-attachments": []}), env=logged.log_env))
    silent_success(logged.run("GC", netconf(V4, **{"cni.dev/valid-attachments": []}), env=logged.log_env))
    succeeded(logged.run("VERSION", env=logged.log_env))
    after = int(time.time())
    entries = parsed(log)
    stamps = [calendar.timegm(time.strptime(entry[0], "%Y-%m-%dT%H:%M:%SZ")) for entry in entries]
    assert all(before <= stamp <= after for stamp in stamps), (before, stamps, after)
    assert [entry[1:] for entry in entries] == [
        ("INFO", "ADD", '"0a:1b:2c:3d:4e:5f"', '"pause-1"', '"ecs-eth0"', "allocated 169.254.172.2, fd00:ec2::2"),
        ("INFO", "ADD", "-", '"c2"', '"eth0"', "allocated 10.0.0.2"),
        ("INFO", "DEL", '"0a:1b:2c:3d:4e:5f"', "-", '"ecs-eth0"',
         f'released 169.254.172.2, fd00:ec2::2 (id="0a:1b:2c:3d:4e:5f" container="pause-1" ifname="ecs-eth0" '
         f'since {since["169.254.172.2"]})'),
        ("INFO", "GC", "-", "-", '"eth0"',
         f'released 10.0.0.2 (id=- container="c2" ifname="eth0" since {since["10.0.0.2"]})'),
    ]


def test_every_error_is_logged(logged, log):
    add(logged, {**V4, "id": "a"}, env=logged.log_env)
    failed(logged.run("ADD", netconf({**V4, "id": "a"}), env=logged.log_env), 102)
    failed(logged.run("ADD", netconf({"ipv4-subnet": "10.0.0.0/33"}), env=logged.log_env), 7)
    failed(logged.run("CHECK", netconf({**V4, "id": "b"}), env=logged.log_env), 103)
    failed(logged.run("FOO", netconf(V4), env=logged.log_env), 4)
    failed(logged.run("ADD", stdin="{", env=logged.log_env), 6)
    entries = [entry[1:4] + entry[5:] for entry in parsed(log)]
    assert [entry[:3] for entry in entries[1:]] == [("ERROR", "ADD", '"a"'), ("ERROR", "ADD", "-"),
                                                    ("ERROR", "CHECK", '"b"'), ("ERROR", "FOO", "-"),
                                                    ("ERROR", "ADD", "-")]
    assert entries[1][4].startswith("code 102: id 'a' already holds 10.0.0.2")
    assert entries[2][4].startswith("code 7: ipv4-subnet '10.0.0.0/33' is not a CIDR block")
    assert entries[3][4] == "code 103: id 'b' holds no IPv4 address from 10.0.0.0/24"
    assert entries[4][4].startswith("code 4: CNI_COMMAND 'FOO' is not a CNI command")
    assert entries[5][4].startswith("code 6: failed to decode network config")


@pytest.mark.parametrize("level, kinds", [("debug", ["INFO", "ERROR"]), ("WARN", ["ERROR"]), ("error", ["ERROR"]),
                                          ("critical", []), ("off", []), ("chatty", ["INFO", "ERROR"])])
def test_ecs_cni_loglevel(logged, log, level, kinds):
    env = {**logged.log_env, "ECS_CNI_LOGLEVEL": level}
    add(logged, {**V4, "id": "a"}, env=env)
    failed(logged.run("ADD", netconf({**V4, "id": "a"}), env=env), 102)
    assert [entry[1] for entry in parsed(log)] == kinds
    assert log.exists() == bool(kinds)


@pytest.mark.parametrize("where", ["missing directory", "a directory", "a fifo without a reader"])
def test_a_log_that_cannot_be_written_never_fails_the_call(plugin, tmp_path, where):
    target = {"missing directory": tmp_path / "no" / "such" / "dir" / "x.log", "a directory": tmp_path,
              "a fifo without a reader": tmp_path / "fifo"}[where]
    if where == "a fifo without a reader":
        os.mkfifo(target)
    env = {"ECS_CNI_LOG_FILE": str(target)}
    outcome = succeeded(plugin.run("ADD", netconf({**V4, "id": "a"}), env=env, timeout=10))
    assert outcome.json["ips"][0]["address"] == "10.0.0.2/24"
    assert f"cannot write the call log {target}" in outcome.stderr, outcome
    failed(plugin.run("ADD", netconf({**V4, "id": "a"}), env=env, timeout=10), 102)  # the ADD was kept
    assert not (tmp_path / "no").exists()


def test_without_ecs_cni_log_file_nothing_is_written_and_log_is_never_created(plugin):
    if os.path.exists("/log"):
        pytest.skip("/log exists here: the plugin would log to /log/ecs-cni-ipam-plugin.log")
    add(plugin, {**V4, "id": "a"})
    failed(plugin.run("ADD", netconf({**V4, "id": "a"})), 102)
    assert not os.path.exists("/log")


def test_rotation_keeps_four_generations(logged, log):
    with open(log, "wb") as full:
        full.truncate(MAX_BYTES - 10)  # sparse: as if full of older lines
    for n in (1, 2, 3, 4):
        Path(f"{log}.{n}").write_text(f"generation {n}\n")
    add(logged, V4, env=logged.log_env)
    [entry] = parsed(log)
    assert entry[2] == "ADD" and entry[-1] == "allocated 10.0.0.2"
    assert os.path.getsize(f"{log}.1") == MAX_BYTES - 10
    assert [Path(f"{log}.{n}").read_text() for n in (2, 3, 4)] == ["generation 1\n", "generation 2\n",
                                                                   "generation 3\n"]
    assert sorted(p.name for p in log.parent.iterdir()) == [log.name] + [f"{log.name}.{n}" for n in (1, 2, 3, 4)]


def test_calls_that_all_find_the_log_full_rotate_it_once_and_lose_no_line(logged, log):
    """Forty calls, each with a store of its own (nothing else serialises them), find the log full
    and queue for the rotation lock, which the test holds as a rotating call would: the first
    rotates, the others see it done and append to the fresh log."""
    with open(log, "wb") as full:
        full.truncate(MAX_BYTES - 10)  # every line passes the limit
    results = {}

    def one(n):
        results[n] = logged.run("ADD", netconf({"ipv4-subnet": f"10.0.{n}.0/24"}),
                                env={**logged.log_env, "IPAM_DB_PATH": str(log.parent / f"store-{n}" / "ipam.db")},
                                timeout=120)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(40)]
    with FlockHolder(log) as holder:  # as a call rotating the log holds it
        for thread in threads:
            thread.start()
        holder.wait_for_waiters(len(threads))
        assert holder.waiters() == len(threads)
    for thread in threads:
        thread.join()
    assert all(outcome.code == 0 for outcome in results.values()), results
    assert os.path.getsize(f"{log}.1") == MAX_BYTES - 10  # the full log, moved whole, once
    assert not Path(f"{log}.2").exists()
    allocated = sorted(f"10.0.{n}.2" for n in range(40))
    assert sorted(LINE.match(line).group(7).split()[-1] for line in lines(log)) == allocated


def test_the_netlib_log_variable_and_an_id_with_a_newline(plugin, tmp_path):
    log = tmp_path / "ecs-cni-warmpool.log"
    odd = "/var/run/netns/task\nADD id=forged"
    add(plugin, {**V4, "id": odd}, env={"ECS_CNI_LOG_FILE": str(log), "CNI_CONTAINERID": "container-id"})
    [line] = lines(log)
    assert '[INFO] ADD id="/var/run/netns/task\\nADD id=forged" container="container-id"' in line


def test_a_logged_add_is_still_the_add_when_the_log_directory_is_read_only(plugin, tmp_path):
    """Root ignores file modes, so a read-only mount: skip where one cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    directory = tmp_path / "ro"
    directory.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,mode=0755", "tmpfs", str(directory)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        outcome = succeeded(plugin.run("ADD", netconf(V4), env={"ECS_CNI_LOG_FILE": str(directory / "x.log")}))
        assert "cannot write the call log" in outcome.stderr and "Read-only file system" in outcome.stderr
        assert add_address(plugin, V4) == "10.0.0.3"
    finally:
        subprocess.run(["umount", str(directory)], check=False)


def test_a_logged_add_imports_neither_logging_nor_json_nor_re(plugin, log):
    """Start-up is the hot path: the log line costs an open and a write, not the logging package."""
    interpreter = plugin.artifact.read_bytes().split(b"\n", 1)[0][2:].decode().split()[0]
    environ = plugin.env("ADD", {"ECS_CNI_LOG_FILE": str(log.parent / "x.log")})
    log.parent.mkdir()
    for _ in range(2):  # the first start may unpack
        proc = spawn([interpreter, "-IS", "-X", "importtime", plugin.artifact], environ,
                     json.dumps(netconf(V4)).encode(), timeout=30)
        assert proc.returncode == 0, proc.stderr.decode()
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.decode().splitlines() if "|" in line}
    assert "ecs_ipam.calllog" in imported
    assert not imported & {"logging", "json", "re", "enum", "string", "threading"}, imported
    assert len(lines(log.parent / "x.log")) == 2


def test_an_upgrade_in_place_is_in_the_call_log(logged, log):
    """The audit trail says where the Go plugin's allocations came from, even on a STATUS."""
    import shutil

    from go_fixtures import SUBNETS, fixture, go_holders

    logged.db_path.parent.mkdir(parents=True)
    shutil.copyfile(fixture("ipv4-basic")[0], logged.db_path)
    silent_success(logged.run("STATUS", netconf(SUBNETS["ipv4-basic"]), env=logged.log_env))
    [(_, level, command, _, _, _, message)] = parsed(log)
    holders = go_holders(fixture("ipv4-basic")[1]["dump"])
    assert (level, command) == ("INFO", "STATUS")
    assert message.startswith(f"upgraded the Go plugin's store {logged.db_path} in place: "
                              f"{len(holders)} allocation(s) carried over"), message
    assert f"kept as {logged.db_path}.go-plugin" in message
