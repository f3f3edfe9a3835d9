"""End to end: the process edge, versions, config validation, the environment and a broken store."""

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, finish, hold_store_lock, spawn
from e2e_support import (ALL_VERSIONS, DUAL, V4, V6, add, add_address, assert_free, failed, held_addresses,
                         mode_of, netconf, run_args, run_db, silent_success, store_files, succeeded)
from go_fixtures import fixture

SUPPORTED = list(ALL_VERSIONS)
SOURCE = ROOT


# -- commands, flags and versions -----------------------------------------------------------

@pytest.mark.parametrize("stdin", ["", "not json at all", '{"cniVersion": "9.9.9"}', "\xff"])
def test_version_ignores_stdin(plugin, stdin):
    outcome = succeeded(plugin.run("VERSION", stdin=stdin))
    assert outcome.json == {"cniVersion": "1.1.0", "supportedVersions": SUPPORTED}
    assert not Path(plugin.db_path).parent.exists()  # VERSION never touches the store


def test_version_ignores_the_rest_of_the_environment(plugin):
    env = {"IPAM_DB_CONNECTION_TIMEOUT": "banana", "IPAM_DB_PATH": "/proc/nowhere/db", "CNI_CONTAINERID": "\udcff",
           "CNI_IFNAME": None}
    outcome = succeeded(plugin.run("VERSION", env=env))
    assert outcome.json == {"cniVersion": "1.1.0", "supportedVersions": SUPPORTED}


def test_version_flag(plugin):
    """The version the source declares, and the commit the build was made from."""
    import ast

    source = (SOURCE / "ecs_ipam" / "buildinfo.py").read_text()
    declared = next(node.value.value for node in ast.parse(source).body if isinstance(node, ast.Assign)
                    and node.targets[0].id == "VERSION")
    outcome = succeeded(plugin.run(None, args=["--version"]))
    assert outcome.json["version"] == declared
    head = subprocess.run(["git", "-C", str(SOURCE), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: the build stamps its commit
        assert outcome.json["gitShortHash"] and head.stdout.startswith(outcome.json["gitShortHash"]), outcome


def test_capabilities_flag(plugin):
    outcome = succeeded(plugin.run(None, args=["--capabilities"]))
    assert outcome.json == {"capabilities": ["awsvpc-network-mode"]}


@pytest.mark.parametrize("go_flag, flag", [("-version", "--version"), ("-capabilities", "--capabilities")])
def test_go_one_dash_flag_spellings(plugin, go_flag, flag):
    """The Go plugin parses its flags with Go's flag package, which takes one dash as well as two."""
    go, ours = succeeded(plugin.run(None, args=[go_flag])), succeeded(plugin.run(None, args=[flag]))
    assert go.json == ours.json and go.json


@pytest.mark.parametrize("flag", ["--help", "-h", "-help"])
def test_help_says_what_the_file_is_how_it_is_called_what_it_reads_and_the_db_tools(plugin, flag):
    outcome = succeeded(run_args(plugin, [flag]))
    assert outcome.stderr == "" and outcome.stdout.startswith("ecs-ipam: the Amazon ECS IPAM plugin for CNI")
    read = set()
    for module in (SOURCE / "ecs_ipam").glob("*.py"):  # every variable the package reads is explained
        for quote in ('environ.get("', 'environ["', '_env_text(environ, "'):
            for piece in module.read_text().split(quote)[1:]:
                read.add(piece.split('"')[0])
    assert {"CNI_COMMAND", "IPAM_DB_PATH", "IPAM_DB_CONNECTION_TIMEOUT", "CNI_CONTAINERID"} <= read
    for name in read | {"CNI_NETNS", "CNI_PATH", "CNI_ARGS"}:
        assert name in outcome.stdout, name
    for words in ("stdin", "stdout", "--version", "--capabilities", "db list", "db gc", "db release", "db check",
                  "db import-bolt", "--db PATH", "/data/eni-ipam.db"):
        assert words in outcome.stdout, words
    assert not Path(plugin.db_path).parent.exists()


def test_db_help_and_each_subcommands_help(plugin):
    outcome = succeeded(run_args(plugin, ["db", "--help"]))
    subcommands = ["list", "gc", "release", "check", "import-bolt"]
    for name in subcommands:
        assert f"    {name}" in outcome.stdout, name
    for name in subcommands:
        sub = succeeded(run_args(plugin, ["db", name, "--help"]))
        assert sub.stdout.startswith(f"usage: ecs-ipam db {name} "), sub
        assert "--db PATH" in sub.stdout, sub
    assert not Path(plugin.db_path).parent.exists()


@pytest.mark.parametrize("args", [["--bogus"], ["version"], ["--help", "extra"], ["--version", "--capabilities"],
                                  ["---version"], ["-"], ["--"]])
def test_unknown_arguments_exit_2_naming_them(plugin, args):
    outcome = run_args(plugin, args)
    assert outcome.code == 2 and outcome.stdout == "", outcome
    assert f"unknown arguments {' '.join(args)!r}" in outcome.stderr and "--help" in outcome.stderr, outcome


@pytest.mark.parametrize("command", [None, ""])
def test_no_cni_command_is_code_4_with_a_usage_hint(plugin, command):
    outcome = plugin.run(command, config=netconf(V4))
    error = failed(outcome, 4, "CNI_COMMAND")
    assert error["cniVersion"] == "1.1.0"
    assert "--version" in outcome.stderr and "CNI_COMMAND" in outcome.stderr


@pytest.mark.parametrize("command", ["add", "Add", "FOO", "ADD ", "DELETE"])
def test_unknown_cni_command_is_code_4_naming_it(plugin, command):
    failed(plugin.run(command, config=netconf(V4)), 4, repr(command))
    assert store_files(plugin) == {}


@pytest.mark.parametrize("cni_version", ["0.5.0", "1.2.0", "2.0.0", "1.0", "v1.0.0", "0.3", " 1.0.0"])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "STATUS"])
def test_unsupported_cni_version_is_code_1_naming_it_and_the_list(plugin, command, cni_version):
    outcome = plugin.run(command, config=netconf({**V4, "id": "a"}, cni_version))
    error = failed(outcome, 1, repr(cni_version), *SUPPORTED)
    assert error["msg"] == "incompatible CNI versions"
    assert store_files(plugin) == {}


def test_non_string_cni_version_is_code_1(plugin):
    failed(plugin.run("ADD", config=netconf(V4, 1.0)), 1, "1.0")


@pytest.mark.parametrize("cni_version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1", None])
def test_check_needs_0_4_0(plugin, cni_version):
    add(plugin, {**V4, "id": "a"})
    failed(plugin.run("CHECK", config=netconf({**V4, "id": "a"}, cni_version)), 1, "CHECK")


@pytest.mark.parametrize("command", ["GC", "STATUS"])
@pytest.mark.parametrize("cni_version", ["0.1.0", "0.4.0", "1.0.0", None])
def test_gc_and_status_need_1_1_0(plugin, command, cni_version):
    add(plugin, V4, env={"CNI_CONTAINERID": "c1"})
    before = store_files(plugin)
    conf = netconf(V4, cni_version, **{"cni.dev/valid-attachments": []})
    failed(plugin.run(command, config=conf), 1, command)
    assert store_files(plugin) == before


# -- decoding -------------------------------------------------------------------------------

@pytest.mark.parametrize("stdin", ["", "{", '{"cniVersion": "1.0.0",}', "[]", '"ipam"', "null", "\xff\xfe"])
@pytest.mark.parametrize("command", ["ADD", "DEL"])
def test_undecodable_config_is_code_6(plugin, command, stdin):
    failed(plugin.run(command, stdin=stdin, env={"CNI_CONTAINERID": "c1"}), 6)
    assert store_files(plugin) == {}


def test_non_utf8_stdin_is_code_6(plugin, artifact):
    proc = spawn([artifact], plugin.env("ADD"), b'{"name": "\xff"}')
    assert proc.returncode == 1
    assert b"Traceback" not in proc.stdout + proc.stderr
    assert b'"code": 6' in proc.stdout


def test_json_nested_too_deep_is_code_6(plugin):
    nested = "[" * 100000 + "]" * 100000
    stdin = '{"cniVersion": "1.1.0", "name": "n", "ipam": {"ipv4-subnet": "10.0.0.0/24"}, "x": %s}' % nested
    failed(plugin.run("ADD", stdin=stdin), 6)
    assert store_files(plugin) == {}


@pytest.mark.parametrize("name", ["CNI_CONTAINERID", "CNI_IFNAME"])
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_non_utf8_container_or_ifname_is_code_4_naming_it(plugin, name, command):
    # Undecodable bytes (\xff\xfe in the real environment) reach Python as surrogates.
    env = {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", name: "c\udcff\udcfe"}
    failed(plugin.run(command, netconf({**V4, "id": "a"}), env=env), 4, name)
    assert store_files(plugin) == {}


@pytest.mark.parametrize("command, args, code", [("ADD", [], 0), ("DEL", [], 1), (None, ["--version"], 0),
                                                 (None, ["--capabilities"], 0), (None, ["db", "list"], 1)])
def test_nobody_reading_stdout_changes_nothing_but_the_output(plugin, command, args, code):
    """A runtime that died before reading: same exit code, no Python noise on stderr, the ADD kept."""
    if args[:1] == ["db"]:
        add_address(plugin, V4)  # a store to list (a missing one is an error on stderr)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        env = {"IPAM_DB_PATH": str(plugin.db_path), **({"CNI_COMMAND": command} if command else {})}
        proc = subprocess.run([str(plugin.artifact), *args], input=json.dumps(netconf(V4)).encode(),
                              stdout=write_end, stderr=subprocess.PIPE, env=env, cwd="/", timeout=30)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (code, b"")
    if command == "ADD":
        assert add_address(plugin, V4) == "10.0.0.3"


# -- config validation (code 7) -------------------------------------------------------------

INVALID = [
    # (ipam, fragments the message must contain)
    ({}, ["ipv4-subnet", "ipv6-subnet"]),
    ({"id": "x"}, ["ipv4-subnet"]),
    ({"ipv4-subnet": "10.0.0.0/31"}, ["ipv4-subnet", "10.0.0.0/31", "small"]),
    ({"ipv4-subnet": "10.0.0.0/32"}, ["ipv4-subnet", "10.0.0.0/32", "small"]),
    ({"ipv6-subnet": "2001:db8::/127"}, ["ipv6-subnet", "2001:db8::/127", "small"]),
    ({"ipv6-subnet": "2001:db8::/128"}, ["ipv6-subnet", "2001:db8::/128", "small"]),
    ({"ipv4-subnet": "2001:db8::/64"}, ["ipv4-subnet", "2001:db8::/64"]),
    ({"ipv6-subnet": "10.0.0.0/24"}, ["ipv6-subnet", "10.0.0.0/24"]),
    ({"ipv4-subnet": "10.0.0.0/33"}, ["ipv4-subnet", "10.0.0.0/33"]),
    ({"ipv4-subnet": "banana"}, ["ipv4-subnet", "banana"]),
    ({"ipv4-subnet": "10.0.0.0"}, ["ipv4-subnet", "10.0.0.0"]),
    ({"ipv4-subnet": 42}, ["ipv4-subnet", "42"]),
    ({"ipv4-subnet": ["10.0.0.0/24"]}, ["ipv4-subnet", "10.0.0.0/24"]),
    ({"ipv4-subnet": "010.0.0.0/24"}, ["ipv4-subnet", "010.0.0.0/24"]),
    ({"ipv6-subnet": "::ffff:10.0.0.0/120"}, ["ipv6-subnet", "::ffff:10.0.0.0/120"]),
    ({**V4, "ipv4-address": "10.0.0.2"}, ["ipv4-address", "10.0.0.2", "prefix"]),
    ({**V4, "ipv4-address": "10.1.0.2/24"}, ["ipv4-address", "10.1.0.2", "10.0.0.0/24"]),
    ({**V4, "ipv4-address": "10.0.0.0/24"}, ["ipv4-address", "10.0.0.0", "network"]),
    ({**V4, "ipv4-address": "10.0.0.255/24"}, ["ipv4-address", "10.0.0.255", "broadcast"]),
    ({**V4, "ipv4-address": "2001:db8::2/64"}, ["ipv4-address", "2001:db8::2/64"]),
    ({**V4, "ipv4-address": "10.0.0.2/33"}, ["ipv4-address", "10.0.0.2/33"]),
    ({**V4, "ipv4-address": 167772162}, ["ipv4-address", "167772162"]),
    ({**V6, "ipv6-address": "2001:db8::2"}, ["ipv6-address", "2001:db8::2", "prefix"]),
    ({**V6, "ipv6-address": "2001:db8:1::2/64"}, ["ipv6-address", "2001:db8:1::2", "2001:db8::/64"]),
    ({**V6, "ipv6-address": "2001:db8::/64"}, ["ipv6-address", "2001:db8::", "network"]),
    ({**V6, "ipv6-address": "10.0.0.2/24"}, ["ipv6-address", "10.0.0.2/24"]),
    ({"ipv6-subnet": "::/64", "ipv6-address": "::ffff:10.0.0.2/64"}, ["ipv6-address", "::ffff:10.0.0.2"]),
    ({"ipv6-subnet": "::/64", "ipv6-gateway": "::ffff:10.0.0.1"}, ["ipv6-gateway", "::ffff:10.0.0.1"]),
    ({**V6, "ipv6-address": "2001:db8::2%eth0/64"}, ["ipv6-address", "2001:db8::2%eth0/64"]),
    ({**V4, "ipv4-gateway": "10.0.0.1/24"}, ["ipv4-gateway", "10.0.0.1/24"]),
    ({**V4, "ipv4-gateway": "10.1.0.1"}, ["ipv4-gateway", "10.1.0.1", "10.0.0.0/24"]),
    ({**V4, "ipv4-gateway": "10.0.0.0"}, ["ipv4-gateway", "10.0.0.0", "network"]),
    ({**V4, "ipv4-gateway": "10.0.0.255"}, ["ipv4-gateway", "10.0.0.255", "broadcast"]),
    ({**V4, "ipv4-gateway": "2001:db8::1"}, ["ipv4-gateway", "2001:db8::1"]),
    ({**V6, "ipv6-gateway": "2001:db8:1::1"}, ["ipv6-gateway", "2001:db8:1::1"]),
    ({**V6, "ipv6-gateway": "2001:db8::"}, ["ipv6-gateway", "2001:db8::", "network"]),
    ({**V6, "ipv6-gateway": "2001:db8::1/64"}, ["ipv6-gateway", "2001:db8::1/64"]),
    ({**V4, "ipv4-gateway": True}, ["ipv4-gateway", "true"]),
    ({**V4, "ipv4-routes": "169.254.170.2/32"}, ["ipv4-routes", "169.254.170.2/32"]),
    ({**V4, "ipv4-routes": {"dst": "169.254.170.2/32"}}, ["ipv4-routes", "169.254.170.2/32"]),
    ({**V4, "ipv4-routes": ["169.254.170.2/32"]}, ["ipv4-routes[0]", "169.254.170.2/32"]),
    ({**V4, "ipv4-routes": [{"gw": "10.0.0.1"}]}, ["ipv4-routes[0].dst"]),
    ({**V4, "ipv4-routes": [{"dst": None}]}, ["ipv4-routes[0].dst"]),
    ({**V4, "ipv4-routes": [{"dst": "fd00:ec2::254/128"}]}, ["ipv4-routes[0].dst", "fd00:ec2::254/128"]),
    ({**V4, "ipv4-routes": [{"dst": "169.254.170.2/32"}, {"dst": "nope"}]}, ["ipv4-routes[1].dst", "nope"]),
    ({**V4, "ipv4-routes": [{"dst": "169.254.170.2/32", "gw": "2001:db8::1"}]},
     ["ipv4-routes[0].gw", "2001:db8::1"]),
    ({**V4, "ipv4-routes": [{"dst": "169.254.170.2/32", "gw": "10.0.0.1/24"}]},
     ["ipv4-routes[0].gw", "10.0.0.1/24"]),
    ({**V6, "ipv6-routes": [{"dst": "169.254.170.2/32"}]}, ["ipv6-routes[0].dst", "169.254.170.2/32"]),
    ({**V6, "ipv6-routes": [{"dst": "::/0", "gw": "10.0.0.1"}]}, ["ipv6-routes[0].gw", "10.0.0.1"]),
    ({**V6, "ipv6-routes": [{"dst": "fd00::/129"}]}, ["ipv6-routes[0].dst", "fd00::/129"]),
    ({**V4, "id": 12345}, ["id", "12345"]),
    ({**V4, "id": ["a"]}, ["id", "a"]),
    ({**V4, "id": "x" * 257}, ["id", "257", "256"]),
    ({**V4, "id": "é" * 129}, ["id", "258", "256"]),
    ({"ipv4-address": "10.0.0.2/24"}, ["ipv4-address", "ipv4-subnet"]),
    ({**V4, "ipv6-gateway": "2001:db8::1"}, ["ipv6-gateway", "ipv6-subnet"]),
    ({**DUAL, "ipv6-address": "2001:db8:1::2/64"}, ["ipv6-address", "2001:db8:1::2"]),
]


@pytest.mark.parametrize("ipam, fragments", INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_config_is_code_7_naming_field_and_value(plugin, ipam, fragments):
    add(plugin, {**V4, "id": "existing"})
    add(plugin, {**V6, "id": "existing"})
    before = store_files(plugin)
    failed(plugin.run("ADD", netconf(ipam)), 7, *fragments)
    # A rejected ADD leaves the store as it was, cursors included.
    assert store_files(plugin) == before
    assert add_address(plugin, V4) == "10.0.0.3"


@pytest.mark.parametrize("cni_version", ALL_VERSIONS)
def test_error_object_carries_the_configs_version(plugin, cni_version):
    error = failed(plugin.run("ADD", netconf({"ipv4-subnet": "10.0.0.0/31"}, cni_version)), 7)
    assert error["cniVersion"] == cni_version
    assert set(error) <= {"cniVersion", "code", "msg", "details"}


@pytest.mark.parametrize("ipam", [None, "ecs-ipam", ["ipv4-subnet"], 7])
def test_missing_or_malformed_ipam_is_code_7(plugin, ipam):
    conf = netconf(V4)
    if ipam is None:
        del conf["ipam"]
    else:
        conf["ipam"] = ipam
    failed(plugin.run("ADD", conf), 7, "ipam")
    assert store_files(plugin) == {}


@pytest.mark.parametrize("command", ["CHECK", "STATUS", "GC"])
def test_invalid_config_on_other_commands_is_code_7(plugin, command):
    conf = netconf({"ipv4-subnet": "10.0.0.0/31", "id": "a"}, **{"cni.dev/valid-attachments": []})
    failed(plugin.run(command, conf, env={"CNI_CONTAINERID": "c1"}), 7, "10.0.0.0/31")


def test_rejected_add_on_a_fresh_store_creates_no_store(plugin):
    failed(plugin.run("ADD", netconf({"ipv4-subnet": "10.0.0.0/31"})), 7)
    assert store_files(plugin) == {}
    assert add_address(plugin, V4) == "10.0.0.2"


@pytest.mark.parametrize("subnet, first", [("10.0.0.0/30", "10.0.0.2"), ("2001:db8::/126", "2001:db8::2"),
                                           ("0.0.0.0/0", "0.0.0.2"), ("::/0", "::2")])
def test_prefix_limits_that_are_accepted(plugin, subnet, first):
    family = "ipv6" if ":" in subnet else "ipv4"
    assert add_address(plugin, {f"{family}-subnet": subnet}) == first


def test_addresses_and_routes_take_any_prefix(plugin):
    ipam = {**DUAL, "ipv4-address": "10.0.0.9/32", "ipv6-address": "2001:db8::9/128",
            "ipv4-routes": [{"dst": "0.0.0.0/0"}, {"dst": "169.254.170.2/32"}],
            "ipv6-routes": [{"dst": "::/0"}, {"dst": "fd00:ec2::254/128"}]}
    result = add(plugin, ipam)
    assert [ip["address"] for ip in result["ips"]] == ["10.0.0.9/32", "2001:db8::9/128"]
    assert [route["dst"] for route in result["routes"]] == ["0.0.0.0/0", "169.254.170.2/32", "::/0",
                                                            "fd00:ec2::254/128"]


def test_unknown_ipam_keys_warn_once_each_and_del_still_works(plugin):
    ipam = {**V4, "id": "a", "ipv4-gatway": "10.0.0.9", "ipv6_subnet": "2001:db8::/64"}
    outcome = succeeded(plugin.run("ADD", netconf(ipam)))
    assert "ipv4-gatway" in outcome.stderr and "ipv6_subnet" in outcome.stderr
    assert outcome.json["ips"] == [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]
    silent_success(plugin.run("DEL", netconf(ipam)))


# -- the environment ------------------------------------------------------------------------

@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_store_directories_are_created_0700_and_files_0600(plugin, tmp_path):
    db = tmp_path / "a" / "b" / "c" / "ipam.db"
    with umask(0):
        assert add_address(plugin, V4, env={"IPAM_DB_PATH": str(db)}) == "10.0.0.2"
        assert add_address(plugin, V4, env={"IPAM_DB_PATH": str(db)}) == "10.0.0.3"
    for directory in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert mode_of(directory) == 0o700, directory
    files = list(db.parent.iterdir())
    assert db in files
    for path in files:
        assert mode_of(path) == 0o600, path


def test_existing_store_directory_keeps_its_mode(plugin, tmp_path):
    directory = tmp_path / "shared"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    add(plugin, V4, env={"IPAM_DB_PATH": str(directory / "ipam.db")})
    assert mode_of(directory) == 0o755


@pytest.mark.parametrize("timeout", ["abc", "-1s", "5x", "1h-3s", "s", "5 s", "nan", "inf", "-1"])
def test_invalid_connection_timeout_is_code_4(plugin, timeout):
    failed(plugin.run("ADD", netconf(V4), env={"IPAM_DB_CONNECTION_TIMEOUT": timeout}), 4,
           "IPAM_DB_CONNECTION_TIMEOUT", repr(timeout))
    assert store_files(plugin) == {}


@pytest.mark.parametrize("timeout", ["", "0", "5", "2.5", "300ms", "1m30s", "1h", "1.5s", "10us"])
def test_valid_connection_timeouts(plugin, timeout):
    assert add_address(plugin, V4, env={"IPAM_DB_CONNECTION_TIMEOUT": timeout}) == "10.0.0.2"


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
def test_lock_timeout_is_code_11_naming_the_path_and_timeout(plugin, command):
    add(plugin, {**V4, "id": "a"})
    before = store_files(plugin)
    conf = netconf({**V4, "id": "a"}, **{"cni.dev/valid-attachments": []})
    with hold_store_lock(plugin.db_path):
        outcome = plugin.run(command, conf, env={"IPAM_DB_CONNECTION_TIMEOUT": "300ms"})
    failed(outcome, 11, str(plugin.db_path), "0.3s")
    assert store_files(plugin) == before
    # Once the lock is free the same call goes through.
    if command == "DEL":
        silent_success(plugin.run("DEL", netconf({**V4, "id": "a"})))


def _sigalrm_blocked():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})


def _sigalrm_ignored():
    signal.signal(signal.SIGALRM, signal.SIG_IGN)


@pytest.mark.parametrize("preexec", [_sigalrm_blocked, _sigalrm_ignored])
def test_lock_timeout_holds_whatever_sigalrm_state_the_runtime_left(plugin, preexec):
    with hold_store_lock(plugin.db_path):
        proc = spawn([plugin.artifact], plugin.env("ADD", {"IPAM_DB_CONNECTION_TIMEOUT": "300ms"}),
                     json.dumps(netconf(V4)).encode(), timeout=10, preexec_fn=preexec)
    assert proc.returncode == 1 and b"Traceback" not in proc.stdout + proc.stderr, proc
    assert json.loads(proc.stdout)["code"] == 11


def test_a_lock_released_within_the_timeout_is_waited_for(plugin):
    with hold_store_lock(plugin.db_path):
        proc = plugin.start("ADD", netconf(V4), env={"IPAM_DB_CONNECTION_TIMEOUT": "10s"})
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
    outcome = finish(proc, timeout=20)
    assert outcome.code == 0, outcome
    assert outcome.json["ips"][0]["address"] == "10.0.0.2/24"


# -- a store the plugin cannot use ----------------------------------------------------------

@pytest.fixture
def bolt_store(plugin):
    plugin.db_path.parent.mkdir(parents=True)
    shutil.copyfile(fixture("ipv4-basic")[0], plugin.db_path)
    return plugin.db_path


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
def test_bolt_file_is_never_overwritten_but_kept_by_the_upgrade(plugin, bolt_store, command):
    """Every command that needs the store upgrades the Go file in place (tests/test_upgrade.py):
    the bytes stay, under the backup name, and nothing else is left beside the new store."""
    original = bolt_store.read_bytes()
    conf = netconf({**V4, "id": "c1"}, **{"cni.dev/valid-attachments": []})
    outcome = plugin.run(command, conf, env={"CNI_CONTAINERID": "c1"})
    assert "upgraded the Go plugin's store" in outcome.stderr, outcome
    assert (bolt_store.parent / "ipam.db.go-plugin").read_bytes() == original
    names = sorted(p.name for p in bolt_store.parent.iterdir())
    assert names in (["ipam.db", "ipam.db.go-plugin", "ipam.db.lock"],
                     ["ipam.db", "ipam.db.go-plugin", "ipam.db.journal", "ipam.db.lock"]), names


@pytest.mark.parametrize("args", [["db", "release", "10.0.0.2"], ["db", "release", "--id", "c1"]])
def test_bolt_file_is_refused_by_the_db_tools_that_write(plugin, bolt_store, args):
    original = bolt_store.read_bytes()
    outcome = plugin.run(None, args=[*args, "--db", str(bolt_store)])
    assert outcome.code == 1 and "BoltDB" in outcome.stderr and "upgrades it in place" in outcome.stderr, outcome
    assert bolt_store.read_bytes() == original
    assert sorted(p.name for p in bolt_store.parent.iterdir()) == ["ipam.db"]  # not even a lock file


@pytest.mark.parametrize("content", [b"", b"hello, this is not a database\n" * 10])
def test_other_non_gdbm_files_are_code_5(plugin, content):
    plugin.db_path.parent.mkdir(parents=True)
    plugin.db_path.write_bytes(content)
    failed(plugin.run("ADD", netconf(V4)), 5, str(plugin.db_path))
    assert plugin.db_path.read_bytes() == content


def test_another_programs_dbm_gnu_file_is_never_written(plugin):
    import dbm.gnu

    plugin.db_path.parent.mkdir(parents=True)
    with dbm.gnu.open(str(plugin.db_path), "n") as foreign:
        foreign[b"\xff\xfe"] = b"\xff"
        foreign[b"s/10.0.0.0/24"] = b"not an address"
    original = plugin.db_path.read_bytes()
    for command in ("ADD", "DEL", "CHECK"):
        failed(plugin.run(command, netconf({**V4, "id": "c1"})), 5, str(plugin.db_path), "not an ecs-ipam store")
    listed = plugin.run(None, args=["db", "list", "--db", str(plugin.db_path)])
    assert listed.code == 1 and "not an ecs-ipam store" in listed.stderr, listed
    assert plugin.db_path.read_bytes() == original


# listed: what `db list` makes of it: 0 when the damage is not in what it lists (cursors are shown
# as stored, indexes not read), 1 (naming the damage) when it is.
@pytest.mark.parametrize("key, value, command, holder, code, listed", [
    (b"s/10.0.0.0/24", b"not an address", "ADD", "c2", 5, 0),
    (b"s/10.0.0.0/24", b"\xff", "STATUS", "c2", 50, 1),
    (b"a/10.0.0.2", b"{not json", "DEL", "c1", 5, 1),
    (b"a/10.0.0.2", b'{"id": "c1"}', "GC", "c1", 5, 1),
    (b"i/c1", b'["10.0.0.2", "nonsense"]', "DEL", "c1", 5, 0),
    (b"\xff", b"a key not UTF-8", "GC", "c1", 5, 1),
])
def test_a_damaged_store_is_code_5_not_a_crash(plugin, key, value, command, holder, code, listed):
    """Damage that gdbm does not notice (a bad sector, a stray write) is a store error, not a 999 or a traceback."""
    import dbm.gnu

    add(plugin, {**V4, "id": "c1"}, env={"CNI_CONTAINERID": "c1"})
    with dbm.gnu.open(str(plugin.db_path), "w") as snapshot:
        snapshot[key] = value
    conf = netconf({**V4, "id": holder}, **{"cni.dev/valid-attachments": []})
    failed(plugin.run(command, conf), code, "damaged")
    listing = run_db(plugin, ["list"])  # (Run asserts there is no traceback)
    assert listing.code == listed, listing
    if listed:
        assert "damaged" in listing.stderr, listing
    checked = run_db(plugin, ["check"])
    assert checked.code == 1 and checked.stderr, checked


@pytest.mark.parametrize("key, value", [(b"a/10.0.0.2", b"{not json"), (b"c/c1", b'["nonsense"]')])
def test_gc_keeps_going_past_a_damaged_allocation_and_reports_it(plugin, key, value):
    import dbm.gnu

    add(plugin, V4, env={"CNI_CONTAINERID": "c1"})
    add(plugin, V4, env={"CNI_CONTAINERID": "c2"})
    with dbm.gnu.open(str(plugin.db_path), "w") as snapshot:  # the first ADD wrote the snapshot
        snapshot[key] = value
    failed(plugin.run("GC", netconf(V4, **{"cni.dev/valid-attachments": []})), 5, "GC released what it could",
           key.decode())
    assert_free(plugin, V4, "10.0.0.3")  # c2's, released despite c1's damage


def test_parent_path_is_a_file_is_code_5(plugin, tmp_path):
    (tmp_path / "afile").write_text("x")
    db = tmp_path / "afile" / "ipam.db"
    failed(plugin.run("ADD", netconf(V4), env={"IPAM_DB_PATH": str(db)}), 5, str(db))


def test_store_path_is_a_directory_is_code_5(plugin):
    plugin.db_path.mkdir(parents=True)
    failed(plugin.run("ADD", netconf(V4)), 5, str(plugin.db_path))


@pytest.fixture
def immutable_directory(tmp_path):
    """A directory even root cannot write to (chattr +i); skip when that is not possible."""
    directory = tmp_path / "frozen"
    directory.mkdir()
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a directory immutable here")
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_unwritable_store_directory_is_code_5_naming_the_path(plugin, immutable_directory):
    db = immutable_directory / "ipam.db"
    failed(plugin.run("ADD", netconf({**V4, "id": "a"}), env={"IPAM_DB_PATH": str(db)}), 5, str(db),
           "not permitted")
    # A DEL finds no store there: nothing is held, so it succeeds without writing anything
    # (a DEL that must write to an unwritable store is code 5: the next test).
    silent_success(plugin.run("DEL", netconf({**V4, "id": "a"}), env={"IPAM_DB_PATH": str(db)}))
    assert list(immutable_directory.iterdir()) == []


def test_unwritable_store_file_is_code_5_and_the_store_survives(plugin, tmp_path):
    add(plugin, {**V4, "id": "a"})
    add(plugin, {**V4, "id": "b"})  # the second commit goes to the journal beside the snapshot
    journal = Path(str(plugin.db_path) + ".journal")
    assert journal.exists()
    before = store_files(plugin)
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    if subprocess.run(["chattr", "+i", str(journal)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a file immutable here")
    try:
        failed(plugin.run("ADD", netconf({**V4, "id": "c"})), 5, str(plugin.db_path), "not permitted")
        failed(plugin.run("DEL", netconf({**V4, "id": "a"})), 5, str(plugin.db_path))
    finally:
        subprocess.run(["chattr", "-i", str(journal)], check=True)
    assert store_files(plugin) == before
    failed(plugin.run("ADD", netconf({**V4, "id": "a"})), 102, "'a'", "10.0.0.2")
    assert add_address(plugin, {**V4, "id": "c"}) == "10.0.0.4"


def read_only_mount(tmp_path, plugin):
    """A Plugin whose process sees tmp_path/ro as a read-only file system (a private mount namespace)."""
    directory = tmp_path / "ro"
    directory.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            f"mount --bind {directory} {directory} && mount -o remount,bind,ro {directory}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.decode().strip()}")
    wrapper = tmp_path / "ecs-ipam-ro"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec unshare -m sh -c 'mount --bind {directory} {directory} && "
        f"mount -o remount,bind,ro {directory} && exec {plugin.artifact} \"$@\"' ecs-ipam \"$@\"\n")
    wrapper.chmod(0o755)
    return directory, type(plugin)(wrapper, directory / "ipam.db")


def test_read_only_file_system_is_code_5_naming_the_path(plugin, tmp_path):
    directory, ro_plugin = read_only_mount(tmp_path, plugin)
    failed(ro_plugin.run("ADD", netconf(V4)), 5, str(directory / "ipam.db"), "Read-only file system")
    # STATUS answers "could an ADD succeed now": no, and says why.
    failed(ro_plugin.run("STATUS", netconf(V4)), 50, str(directory), "read-only file system")


def test_read_only_file_system_with_a_store_keeps_it(plugin, tmp_path):
    directory, ro_plugin = read_only_mount(tmp_path, plugin)
    db = directory / "ipam.db"
    add(plugin, {**V4, "id": "a"}, env={"IPAM_DB_PATH": str(db)})
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    failed(ro_plugin.run("ADD", netconf({**V4, "id": "b"})), 5, str(db))
    failed(ro_plugin.run("DEL", netconf({**V4, "id": "a"})), 5, str(db))
    # Reading needs no write access: CHECK still answers from the store; STATUS says no ADD can succeed.
    silent_success(ro_plugin.run("CHECK", netconf({**V4, "id": "a"})))
    failed(ro_plugin.run("CHECK", netconf({**V4, "id": "b"})), 103, "'b'")
    failed(ro_plugin.run("STATUS", netconf(V4)), 50, "read-only file system")
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


DISK_FULL_SCRIPT = """\
mount -t tmpfs -o size=256k,mode=0700 tmpfs "$STORE" || exit 97
step() {  # step NAME COMMAND CONFIG: one plugin call, its stdout and exit code kept in $OUT
    CNI_COMMAND=$2 CNI_IFNAME=eth0 IPAM_DB_PATH="$STORE/ipam.db" "$ARTIFACT" <"$OUT/$3.json" >"$OUT/$1.out" 2>&1
    echo $? >"$OUT/$1.rc"
}
step add-a ADD a
dd if=/dev/zero of="$STORE/fill" bs=1k 2>/dev/null
step add-b-full ADD b
step del-a-full DEL a
step status-full STATUS a
rm "$STORE/fill"
step status-room STATUS a
step add-b ADD b
mkdir "$OUT/store" && cp -a "$STORE/." "$OUT/store/"
"""


def test_disk_full_is_code_5_and_leaves_nothing_half_written(plugin, tmp_path):
    """A full file system (a small tmpfs in a private mount namespace): ADD and DEL fail cleanly."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    store, out = tmp_path / "store", tmp_path / "out"
    store.mkdir()
    out.mkdir()
    for holder in ("a", "b"):
        (out / f"{holder}.json").write_text(json.dumps(netconf({**V4, "id": holder})))
    proc = subprocess.run(["unshare", "-m", "sh", "-c", DISK_FULL_SCRIPT], capture_output=True, cwd="/",
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "STORE": str(store),
                               "OUT": str(out), "ARTIFACT": str(plugin.artifact)})
    if proc.returncode == 97 or not (out / "add-a.rc").exists():
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")

    def step(name):
        text = (out / f"{name}.out").read_text()
        assert "Traceback" not in text, text
        return int((out / f"{name}.rc").read_text()), (json.loads(text) if text.strip() else None)

    assert step("add-a") == (0, {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}],
                                 "dns": {}})
    for name in ("add-b-full", "del-a-full"):
        code, error = step(name)
        assert code == 1 and error["code"] == 5, error
        assert str(store / "ipam.db") in error["msg"] and "No space left" in error["msg"], error
    code, error = step("status-full")  # STATUS said no while ADD could not succeed...
    assert code == 1 and error["code"] == 50 and "is full" in error["msg"], error
    assert step("status-room") == (0, None)  # ...and yes once it could
    # The failed ADD neither kept an address nor moved the cursor; the failed DEL released nothing.
    code, result = step("add-b")
    assert code == 0 and result["ips"][0]["address"] == "10.0.0.3/24", result
    copy = type(plugin)(plugin.artifact, out / "store" / "ipam.db")
    check = run_db(copy, ["check"])
    assert check.code == 0, check
    assert held_addresses(copy) == {"10.0.0.2": ("a", None, "eth0", "10.0.0.0/24"),
                                    "10.0.0.3": ("b", None, "eth0", "10.0.0.0/24")}
    failed(copy.run("ADD", netconf({**V4, "id": "a"})), 102, "'a'", "10.0.0.2")
    assert add_address(copy, V4) == "10.0.0.4"


def test_missing_dbm_gnu_is_one_clear_code_5(plugin, tmp_path):
    """The built file on an interpreter without _gdbm (blocked in the child, as if python3-gdbm
    were not installed)."""
    wrapper = tmp_path / "ecs-ipam-no-gdbm"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec /usr/bin/python3 -I -S -c 'import runpy, sys; sys.modules[\"_gdbm\"] = None; "
        f"sys.argv = [sys.argv[1]] + sys.argv[2:]; runpy.run_path(sys.argv[0], run_name=\"__main__\")' "
        f"{plugin.artifact} \"$@\"\n")
    wrapper.chmod(0o755)
    no_gdbm = type(plugin)(wrapper, plugin.db_path)
    failed(no_gdbm.run("ADD", netconf({**V4, "id": "a"})), 5, "dbm.gnu", "python3-gdbm")
    # Commands that need no store still work, and a DEL where there is no store has nothing to release.
    assert succeeded(no_gdbm.run("VERSION")).json["supportedVersions"] == SUPPORTED
    silent_success(no_gdbm.run("DEL", netconf({**V4, "id": "a"})))
    assert store_files(plugin) == {}
    # A DEL of what a store holds needs dbm.gnu to read it.
    add(plugin, {**V4, "id": "a"})
    before = store_files(plugin)
    failed(no_gdbm.run("DEL", netconf({**V4, "id": "a"})), 5, "dbm.gnu", "python3-gdbm")
    assert store_files(plugin) == before


# -- odd input, at random -------------------------------------------------------------------

ODD_VALUES = [None, "", 0, -1, 1.5, True, [], {}, "10.0.0.0/24", "10.0.0.5", "10.0.0.5/24", "10.0.0.255/24",
              "2001:db8::/64", "2001:db8::5", "2001:db8::5/64", "::", "::/0", "0.0.0.0/0", "x", "é" * 200,
              "fe80::1%eth0", "::ffff:1.2.3.4", "10.0.0.0/31", "10.0.0.1", "2001:db8::1", 1e308,
              [{"dst": "169.254.170.2/32", "mtu": 1500}], [{"dst": "::/0", "gw": None, "table": 5}],
              [{"containerID": "c1", "ifname": "eth0"}], {"ips": [{"address": "10.0.0.2/24"}]}]
IPAM_KEYS = ["type", "id", "cniVersion", "ipv4-address", "ipv4-gateway", "ipv4-routes", "ipv6-address",
             "ipv6-gateway", "ipv6-routes", "ipv4-subnet", "ipv6-subnet", "db-path", "db-connection-timeout"]


def test_random_odd_configs_never_make_an_internal_error(plugin):
    """Any command with odd values in any field: a CNI answer (never code 999), and a sound store after."""
    rng = random.Random(20261130)
    answers = set()
    for _ in range(150):
        ipam = {key: rng.choice(ODD_VALUES) for key in rng.sample(IPAM_KEYS, rng.randint(0, 5))}
        ipam.setdefault("ipv4-subnet", rng.choice(["10.0.0.0/24", "10.0.0.0/30", "10.0.0.5/29"]))
        extra = {key: rng.choice(ODD_VALUES) for key in ("prevResult", "cni.dev/valid-attachments")
                 if rng.random() < 0.3}
        conf = netconf(ipam, rng.choice(["1.1.0", "0.4.0", "0.2.0", None]), **extra)
        env = rng.choice([{}, {"CNI_CONTAINERID": "c1"}, {"CNI_CONTAINERID": "c2", "CNI_IFNAME": "eth1"}])
        command = rng.choice(["ADD", "ADD", "DEL", "CHECK", "GC", "STATUS"])
        outcome = plugin.run(command, conf, env=env)
        if outcome.code != 0:
            assert outcome.json["code"] != 999, outcome
        answers.add((command, outcome.code and outcome.json["code"]))
    # The run went through successes and failures of several kinds.
    assert {("ADD", 0), ("DEL", 0), ("ADD", 7), ("CHECK", 103)} <= answers, answers
    check = run_db(plugin, ["check"])
    assert check.code == 0, check
