"""End to end: the operator tools `ecs-ipam db list` and `ecs-ipam db gc`, run from the built file."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, RUNTIME_PATH, hold_store_lock, runtime_env
from e2e_support import add, add_address, delete, listing, readme_block, run_db, store_files, succeeded
from ecs_ipam.disk import open_store

LINK_LOCAL = {"ipv4-subnet": "169.254.172.0/22"}
DUAL = {"ipv4-subnet": "169.254.172.0/22", "ipv6-subnet": "fd00:ec2::/64"}


def backdate(plugin, seconds_by_address):
    """Make the allocations of the given addresses look that many seconds older (an ADD made back then)."""
    with open_store(str(plugin.db_path), 5) as store:
        for allocation in store.allocations():
            seconds = seconds_by_address.get(str(allocation.address))
            if seconds is not None:
                cursor = store.cursor(allocation.subnet)
                store.reserve(allocation._replace(allocated_at=allocation.allocated_at - seconds))
                store.set_cursor(allocation.subnet, cursor)


def table(outcome):
    """The rows of `db list` as dicts by column name (the lines before the blank line)."""
    lines = outcome.stdout.split("\n\n")[0].splitlines()
    header = lines[0].split()
    return [dict(zip(header, line.split())) for line in lines[1:]]


def summary(outcome):
    """The lines of `db list` after the blank line."""
    return outcome.stdout.split("\n\n")[1].splitlines()


# -- db list --------------------------------------------------------------------------------

def test_list_sorts_by_address_numerically_ipv4_first(plugin):
    for address in ("2001:db8::10/64", "10.0.0.100/24", "2001:db8::9/64", "10.0.0.9/24", "10.0.0.10/24"):
        family = 6 if ":" in address else 4
        subnet = "2001:db8::/64" if family == 6 else "10.0.0.0/24"
        add(plugin, {f"ipv{family}-subnet": subnet, f"ipv{family}-address": address, "id": address})
    expected = ["10.0.0.9", "10.0.0.10", "10.0.0.100", "2001:db8::9", "2001:db8::10"]
    listed = run_db(plugin, ["list"])
    assert listed.code == 0, listed
    assert [row["ADDRESS"] for row in table(listed)] == expected
    assert [a["address"] for a in listing(plugin)["allocations"]] == expected


def test_list_ends_with_each_subnets_usage(plugin):
    for n in range(3):
        add(plugin, {**DUAL, "id": f"task-{n}"})
    add(plugin, {"ipv4-subnet": "10.0.0.0/30", "id": "small"})  # .1 is the gateway: one usable address
    add(plugin, {"ipv4-subnet": "10.0.1.0/24", "id": "gone"})
    delete(plugin, {"ipv4-subnet": "10.0.1.0/24", "id": "gone"})  # leaves a cursor and nothing held
    listed = run_db(plugin, ["list"])
    assert listed.code == 0, listed
    assert summary(listed) == [
        f"7 allocation(s) in {plugin.db_path}",
        "10.0.0.0/30:      1 held of 1 usable (100.0%), cursor 10.0.0.2",
        "10.0.1.0/24:      0 held of 253 usable (0%), cursor 10.0.1.2",
        "169.254.172.0/22: 3 held of 1021 usable (0.3%), cursor 169.254.172.4",
        "fd00:ec2::/64:    3 held of 18446744073709551614 usable (<0.1%), cursor fd00:ec2::4",
    ]
    assert listing(plugin)["subnets"] == {
        "10.0.0.0/30": {"held": 1, "usable": 1, "cursor": "10.0.0.2"},
        "10.0.1.0/24": {"held": 0, "usable": 253, "cursor": "10.0.1.2"},
        "169.254.172.0/22": {"held": 3, "usable": 2**10 - 3, "cursor": "169.254.172.4"},
        "fd00:ec2::/64": {"held": 3, "usable": 2**64 - 2, "cursor": "fd00:ec2::4"},
    }


def test_list_filters_by_id_container_and_subnet(plugin):
    for n in range(3):
        add(plugin, {**DUAL, "id": f"task-{n}"}, env={"CNI_CONTAINERID": f"pause-{n}"})
    add(plugin, {"ipv4-subnet": "10.0.0.0/24"}, env={"CNI_CONTAINERID": "pause-1"})

    def rows(*args):
        outcome = run_db(plugin, ["list", *args])
        assert outcome.code == 0, outcome
        return [(row["ADDRESS"], row["ID"], row["CONTAINER"]) for row in table(outcome)], summary(outcome)

    shown, lines = rows("--id", "task-1")
    assert shown == [("169.254.172.3", "task-1", "pause-1"), ("fd00:ec2::3", "task-1", "pause-1")]
    assert lines[0] == f"2 of 7 allocation(s) in {plugin.db_path} match --id task-1"
    assert len(lines) == 4  # every subnet's line: they count whole subnets
    shown, _ = rows("--container", "pause-1")
    assert shown == [("10.0.0.2", "-", "pause-1"), ("169.254.172.3", "task-1", "pause-1"),
                     ("fd00:ec2::3", "task-1", "pause-1")]
    shown, lines = rows("--subnet", "fd00:ec2::/64", "--container", "pause-2")
    assert shown == [("fd00:ec2::4", "task-2", "pause-2")]
    assert lines[1:] == ["fd00:ec2::/64: 3 held of 18446744073709551614 usable (<0.1%), cursor fd00:ec2::4"]
    shown, _ = rows("--subnet", "169.254.173.9/22")  # host bits dropped, as in the config
    assert [address for address, _, _ in shown] == ["169.254.172.2", "169.254.172.3", "169.254.172.4"]
    as_json = json.loads(run_db(plugin, ["list", "--json", "--subnet", "10.0.0.0/24"]).stdout)
    assert [a["address"] for a in as_json["allocations"]] == ["10.0.0.2"]
    assert as_json["subnets"] == {"10.0.0.0/24": {"held": 1, "usable": 253, "cursor": "10.0.0.2"}}
    assert as_json["cursors"] == {"10.0.0.0/24": "10.0.0.2"}


def test_list_names_a_subnet_the_store_does_not_know_and_a_bad_cidr(plugin):
    add(plugin, {**LINK_LOCAL, "id": "a"})
    unknown = run_db(plugin, ["list", "--subnet", "169.254.172.0/24"])
    assert unknown.code == 1 and unknown.stdout == "", unknown
    assert "--subnet 169.254.172.0/24" in unknown.stderr and "169.254.172.0/22" in unknown.stderr, unknown
    bad = run_db(plugin, ["list", "--subnet", "169.254.172.0/33"])
    assert bad.code == 2 and "--subnet" in bad.stderr and "'169.254.172.0/33'" in bad.stderr, bad


def test_list_ages_are_human_readable(plugin):
    for n in range(4):
        add(plugin, {**LINK_LOCAL, "id": f"task-{n}"})
    backdate(plugin, {"169.254.172.2": 3 * 86400 + 4 * 3600 + 59, "169.254.172.3": 2 * 3600 + 5 * 60,
                      "169.254.172.4": 75})
    ages = [row["AGE"] for row in table(run_db(plugin, ["list"]))]
    assert ages[:2] == ["3d4h", "2h5m"]
    assert ages[2] in ("1m15s", "1m16s", "1m17s")  # the list runs a second or two after the backdating
    assert ages[3] in ("0s", "1s", "2s")


# -- db release -----------------------------------------------------------------------------

def test_release_by_address_frees_that_address_only(plugin):
    add(plugin, {**LINK_LOCAL, "id": "task-a"}, env={"CNI_CONTAINERID": "pause-a"})  # 169.254.172.2
    add(plugin, {**LINK_LOCAL, "id": "task-b"}, env={"CNI_CONTAINERID": "pause-b"})  # 169.254.172.3
    outcome = run_db(plugin, ["release", "169.254.172.2"])
    assert (outcome.code, outcome.stdout) == (0, "released 169.254.172.2 (id task-a, container pause-a)\n"), outcome
    assert remaining(plugin) == ["169.254.172.3"]
    # The id is free again: a new ADD under it succeeds (it would be code 102 while it held one).
    assert add_address(plugin, {**LINK_LOCAL, "id": "task-a"}) == "169.254.172.4"


def test_release_by_id_frees_every_address_the_id_holds(plugin):
    add(plugin, {**DUAL, "id": "task-a"})  # 169.254.172.2 and fd00:ec2::2
    add(plugin, {**DUAL, "id": "task-b"}, env={"CNI_CONTAINERID": "pause-b"})  # .3 and ::3
    add(plugin, LINK_LOCAL, env={"CNI_CONTAINERID": "anonymous"})  # .4, without an id
    outcome = run_db(plugin, ["release", "--id", "task-a"])
    assert outcome.code == 0, outcome
    assert sorted(outcome.stdout.splitlines()) == ["released 169.254.172.2 (id task-a, container -)",
                                                   "released fd00:ec2::2 (id task-a, container -)"]
    assert remaining(plugin) == ["169.254.172.3", "169.254.172.4", "fd00:ec2::3"]


@pytest.mark.parametrize("args, named", [(["169.254.172.9"], "169.254.172.9"), (["--id", "nobody"], "id 'nobody'")])
def test_release_of_what_nothing_holds_is_exit_1_and_changes_nothing(plugin, args, named):
    add(plugin, {**LINK_LOCAL, "id": "task-a"})
    before = store_files(plugin)
    outcome = run_db(plugin, ["release", *args])
    assert (outcome.code, outcome.stdout) == (1, ""), outcome
    assert f"nothing held by {named}" in outcome.stderr, outcome
    assert store_files(plugin) == before


@pytest.mark.parametrize("args", [[], ["169.254.172.2", "--id", "task-a"], ["169.254.172.300"], ["task-a"]])
def test_release_usage_errors_are_exit_2_and_change_nothing(plugin, args):
    add(plugin, {**LINK_LOCAL, "id": "task-a"})
    before = store_files(plugin)
    outcome = run_db(plugin, ["release", *args])
    assert (outcome.code, outcome.stdout) == (2, ""), outcome
    assert "ecs-ipam db release" in outcome.stderr, outcome
    assert store_files(plugin) == before


def test_a_released_address_becomes_the_cursor_so_it_is_handed_out_last(plugin):
    small = {"ipv4-subnet": "10.0.0.0/29"}  # usable: .2 to .6 (.1 is the gateway)
    for holder in ("a", "b", "c"):
        add(plugin, {**small, "id": holder})  # .2, .3, .4
    assert run_db(plugin, ["release", "10.0.0.2"]).code == 0
    assert listing(plugin)["cursors"] == {"10.0.0.0/29": "10.0.0.2"}
    # The next free ones after the cursor first, wrapping round to the released address last.
    assert [add_address(plugin, {**small, "id": holder}) for holder in ("d", "e", "f")] == [
        "10.0.0.5", "10.0.0.6", "10.0.0.2"]


@pytest.mark.parametrize("args", [["list"], ["check"], ["release", "10.0.0.2"], ["release", "--id", "a"],
                                  ["gc", "--keep-ids", "/dev/null"]])
def test_the_db_tools_on_a_path_with_no_store_say_so(plugin, args):
    outcome = run_db(plugin, [*args, "--db", str(plugin.db_path)], env={"IPAM_DB_PATH": "/nonexistent/x.db"})
    assert (outcome.code, outcome.stdout) == (1, ""), outcome
    assert f"no store at {plugin.db_path}" in outcome.stderr, outcome
    assert not plugin.db_path.parent.exists()  # nothing made: no directory, no lock file


# -- db gc ----------------------------------------------------------------------------------

MACS = ["0a:1b:2c:3d:4e:01", "0a:1b:2c:3d:4e:02", "0a:1b:2c:3d:4e:03", "0a:1b:2c:3d:4e:04"]


def classic_host(plugin, age=86400):
    """Four classic-agent tasks (ENI MAC ids) and one allocation without an id, made age seconds ago
    (a day: shown as 1d however long the test takes): {address: id or None}."""
    held = {}
    for n, mac in enumerate(MACS):
        held[add_address(plugin, {**LINK_LOCAL, "id": mac}, env={"CNI_CONTAINERID": f"{n:064x}"})] = mac
    held[add_address(plugin, LINK_LOCAL, env={"CNI_CONTAINERID": "anonymous"})] = None
    backdate(plugin, {address: age for address in held})
    return held


def gc_lines(plugin, args, keep):
    """The lines `db gc ARGS` printed, keep on its standard input; it must succeed."""
    outcome = run_db(plugin, ["gc", *args], stdin=keep)
    assert outcome.code == 0, outcome
    return outcome.stdout.splitlines()


def remaining(plugin):
    """The addresses the store holds, sorted as text."""
    return sorted(a["address"] for a in listing(plugin)["allocations"])


def journal_records(plugin):
    journal = plugin.db_path.parent / (plugin.db_path.name + ".journal")
    return journal.read_bytes().count(b"\n") if journal.exists() else 0


def test_gc_releases_every_allocation_whose_id_is_not_listed_in_one_commit(plugin):
    held = classic_host(plugin)
    assert list(held) == ["169.254.172.2", "169.254.172.3", "169.254.172.4", "169.254.172.5", "169.254.172.6"]
    records = journal_records(plugin)
    # As an operator's pipe may deliver it: CRLF, blank lines, a stray space, an id of another host.
    keep = f"{MACS[1]}\r\n\n  {MACS[3]} \n0a:1b:2c:3d:4e:99\n".encode()
    assert gc_lines(plugin, ["--keep-ids", "-"], keep) == [
        f"released 169.254.172.2 (id {MACS[0]}, age 1d)",
        f"released 169.254.172.4 (id {MACS[2]}, age 1d)",
        f"released 2 allocation(s) in {plugin.db_path}; kept 2 whose id is listed, "
        "1 without an id (gc never touches those)",
    ]
    assert remaining(plugin) == ["169.254.172.3", "169.254.172.5", "169.254.172.6"]
    assert journal_records(plugin) == records + 1


def test_gc_reads_the_keep_list_from_a_file(plugin, tmp_path):
    classic_host(plugin)
    keep = tmp_path / "live-ids"
    keep.write_text("\n".join(MACS[:3]) + "\n")
    assert gc_lines(plugin, ["--keep-ids", str(keep)], b"")[0] == f"released 169.254.172.5 (id {MACS[3]}, age 1d)"
    assert len(listing(plugin)["allocations"]) == 4


def test_gc_dry_run_prints_what_would_go_and_changes_nothing(plugin):
    classic_host(plugin)
    before = store_files(plugin)
    assert gc_lines(plugin, ["--keep-ids", "-", "--dry-run"], MACS[0].encode()) == [
        f"would release 169.254.172.3 (id {MACS[1]}, age 1d)",
        f"would release 169.254.172.4 (id {MACS[2]}, age 1d)",
        f"would release 169.254.172.5 (id {MACS[3]}, age 1d)",
        f"would release 3 allocation(s) in {plugin.db_path}; kept 1 whose id is listed, "
        "1 without an id (gc never touches those); dry run: nothing was changed",
    ]
    assert store_files(plugin) == before


def test_gc_older_than_spares_young_allocations(plugin):
    classic_host(plugin, age=0)
    backdate(plugin, {"169.254.172.2": 2 * 3600, "169.254.172.3": 3600 + 5 * 60, "169.254.172.6": 86400})
    assert gc_lines(plugin, ["--keep-ids", "-", "--older-than", "1h"], MACS[3].encode()) == [
        f"released 169.254.172.2 (id {MACS[0]}, age 2h)",
        f"released 169.254.172.3 (id {MACS[1]}, age 1h5m)",
        f"released 2 allocation(s) in {plugin.db_path}; kept 1 whose id is listed, 1 younger than 1h, "
        "1 without an id (gc never touches those)",
    ]
    assert remaining(plugin) == ["169.254.172.4", "169.254.172.5", "169.254.172.6"]


def test_gc_subnet_limits_it_to_one_pool(plugin):
    for name in ("a", "b"):
        add(plugin, {**DUAL, "id": f"/var/run/netns/task-{name}-eth1"}, env={"CNI_CONTAINERID": "container-id"})
    backdate(plugin, {"fd00:ec2::3": 3 * 86400})
    lines = gc_lines(plugin, ["--keep-ids", "-", "--subnet", "fd00:ec2::/64"], b"/var/run/netns/task-a-eth1\n")
    assert lines[0] == "released fd00:ec2::3 (id /var/run/netns/task-b-eth1, age 3d)"
    assert remaining(plugin) == ["169.254.172.2", "169.254.172.3", "fd00:ec2::2"]


@pytest.mark.parametrize("keep", [b"", b"\n\n", b"0a:1b:2c:3d:4e:01/\n0a:1b:2c:3d:4e:02/\n"])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_gc_refuses_a_keep_list_that_spares_nothing_unless_allow_all(plugin, keep, dry_run):
    """An empty list (a recipe that printed nothing) or one that names no holder (IMDS's trailing '/')."""
    classic_host(plugin)
    before = store_files(plugin)
    refused = run_db(plugin, ["gc", "--keep-ids", "-", *dry_run], stdin=keep)
    assert refused.code == 1 and refused.stdout == "", refused
    assert "names none of the 4 id(s) holding addresses" in refused.stderr, refused
    assert "would release all 4 of their 4 allocation(s)" in refused.stderr and "--allow-all" in refused.stderr, refused
    assert store_files(plugin) == before
    allowed = run_db(plugin, ["gc", "--keep-ids", "-", "--allow-all", *dry_run], stdin=keep)
    assert allowed.code == 0, allowed
    remaining = [a["address"] for a in listing(plugin)["allocations"]]
    assert remaining == (["169.254.172.2", "169.254.172.3", "169.254.172.4", "169.254.172.5", "169.254.172.6"]
                         if dry_run else ["169.254.172.6"])  # the one without an id stays


def test_gc_refusal_counts_what_older_than_spares(plugin):
    classic_host(plugin)
    backdate(plugin, {"169.254.172.5": -86400})  # made just now
    refused = run_db(plugin, ["gc", "--keep-ids", "-", "--older-than", "10m"], stdin=b"")
    assert refused.code == 1, refused
    assert ("so gc would release 3 (those --older-than does not spare) of their 4 allocation(s): refused, "
            "nothing was released") in refused.stderr, refused


def test_gc_with_nothing_to_release_needs_no_allow_all(plugin):
    add(plugin, LINK_LOCAL, env={"CNI_CONTAINERID": "anonymous"})
    assert gc_lines(plugin, ["--keep-ids", "-"], b"") == [f"released 0 allocation(s) in {plugin.db_path}; kept 0 "
                                                           "whose id is listed, 1 without an id (gc never touches those)"]


@pytest.mark.parametrize("args, stdin, code, fragments", [
    ([], b"", 2, ["--keep-ids"]),
    (["--keep-ids", "/nonexistent/live-ids"], b"", 1, ["--keep-ids /nonexistent/live-ids", "No such file"]),
    (["--keep-ids", "-"], b"0a:1b:2c:3d:4e:01\n\xff\xfe\n", 1, ["--keep-ids standard input", "line 2", "UTF-8"]),
    (["--keep-ids", "-", "--older-than", "10 minutes"], b"x\n", 2, ["--older-than", "'10 minutes'"]),
    (["--keep-ids", "-", "--older-than=-5m"], b"x\n", 2, ["--older-than", "'-5m'"]),
    (["--keep-ids", "-", "--older-than", ""], b"x\n", 2, ["--older-than", "''"]),
    (["--keep-ids", "-", "--subnet", "169.254.172.0/24"], b"x\n", 1, ["--subnet 169.254.172.0/24",
                                                                     "169.254.172.0/22"]),
    (["--keep-ids", "-", "--subnet", "nonsense"], b"x\n", 2, ["--subnet", "'nonsense'"]),
])
def test_gc_bad_input_is_named_and_changes_nothing(plugin, args, stdin, code, fragments):
    classic_host(plugin)
    before = store_files(plugin)
    outcome = run_db(plugin, ["gc", *args], stdin=stdin)
    assert outcome.code == code and outcome.stdout == "", outcome
    for fragment in fragments:
        assert fragment in outcome.stderr, (fragment, outcome)
    assert store_files(plugin) == before


def test_gc_waits_for_the_plugins_lock(plugin):
    classic_host(plugin)
    before = store_files(plugin)
    with hold_store_lock(plugin.db_path):
        outcome = run_db(plugin, ["gc", "--keep-ids", "-"], env={"IPAM_DB_CONNECTION_TIMEOUT": "200ms"},
                         stdin=MACS[0].encode())
    assert outcome.code == 1 and "timed out" in outcome.stderr and "lock" in outcome.stderr, outcome
    assert store_files(plugin) == before


# -- the README's gc recipes, run as written -----------------------------------------------------

FAKE_IMDS = r'''
import http.server
import sys

TOKEN = "fake-imds-token"


class IMDS(http.server.BaseHTTPRequestHandler):
    """IMDSv2 as far as the recipe uses it: a PUT for a token, then a GET with it."""

    def do_PUT(self):
        ok = self.path == "/latest/api/token" and self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        self.reply(200 if ok else 400, TOKEN if ok else "")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            self.reply(401, "")
        elif self.path == "/latest/meta-data/network/interfaces/macs/":
            self.reply(200, sys.argv[1])
        else:
            self.reply(404, "")

    def reply(self, code, body):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


http.server.HTTPServer(("169.254.169.254", 80), IMDS).serve_forever()
'''


def recipe_environment(plugin, tmp_path):
    """PATH with ecs-ipam on it (bin/ecs-ipam: the built file), IPAM_DB_PATH the plugin's store."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ecs-ipam").symlink_to(plugin.artifact)
    return runtime_env({"PATH": f"{tmp_path / 'bin'}:{RUNTIME_PATH}", "IPAM_DB_PATH": str(plugin.db_path),
                        "HOME": str(tmp_path)})


def needs(*tools):
    if os.geteuid() != 0:
        pytest.skip("namespaces need root")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def test_readme_classic_agent_recipe_works_as_written(plugin, tmp_path):
    """The recipe against a fake instance metadata service at 169.254.169.254, in a network namespace."""
    needs("unshare", "ip", "curl")
    macs = {n: f"0e:5f:a1:c2:7b:{n}" for n in (11, 12, 13, 16)}
    held = {n: add_address(plugin, {**LINK_LOCAL, "id": mac}, env={"CNI_CONTAINERID": f"{n:064x}",
                                                                      "CNI_IFNAME": "ecs-eth0"})
            for n, mac in macs.items()}
    anonymous = add_address(plugin, LINK_LOCAL, env={"CNI_CONTAINERID": "not-a-task"})
    backdate(plugin, {held[11]: 3600, held[12]: 3600, held[13]: 3600, anonymous: 3600})  # 16 started just now
    (tmp_path / "imds.py").write_text(FAKE_IMDS)
    listed = "0e:5f:a1:c2:7b:01/\n0e:5f:a1:c2:7b:11/\n0e:5f:a1:c2:7b:13/"  # as IMDS lists them; 01: the primary ENI
    script = f"""
        ip link set lo up
        ip addr add 169.254.169.254/32 dev lo
        {sys.executable} {tmp_path / 'imds.py'} '{listed}' &
        for _ in $(seq 200); do curl -s -o /dev/null http://169.254.169.254/ && break; sleep 0.05; done
        {readme_block("On the classic ECS agent")}
        kill %1
    """
    proc = subprocess.run(["unshare", "--net", "bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                          env=recipe_environment(plugin, tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    summary = (f"1 allocation(s) in {plugin.db_path}; kept 2 whose id is listed, 1 younger than 10m, "
               "1 without an id (gc never touches those)")
    assert proc.stdout.splitlines() == [
        f"would release {held[12]} (id {macs[12]}, age 1h)", f"would release {summary}; dry run: nothing was changed",
        f"released {held[12]} (id {macs[12]}, age 1h)", f"released {summary}",
    ]
    assert remaining(plugin) == sorted([held[11], held[13], held[16], anonymous])


def test_readme_netlib_recipe_works_as_written(plugin, tmp_path):
    """The recipe with /var/run/netns a tmpfs of its own (in a mount namespace) holding the live tasks' names."""
    needs("unshare")
    daemon = (ROOT / "examples" / "ecs-netlib-daemon.conf").read_text()
    succeeded(plugin.run("ADD", stdin=daemon, env={"CNI_CONTAINERID": "container-id"}))
    tasks = {"/var/run/netns/3f1c9a2b4d5e6f708192a3b4c5d6e7f8-eth1": "live",
             "/var/run/netns/0a9b8c7d6e5f40312233445566778899-eth1": "stopped"}
    for task in tasks:
        add(plugin, {"ipv4-subnet": "169.254.172.0/22", "ipv6-subnet": "fd00:ec2::172:0/112", "id": task},
            "0.3.0", env={"CNI_CONTAINERID": "container-id"})
    held = {a["address"]: a["id"] for a in listing(plugin)["allocations"]}
    backdate(plugin, {address: 3600 for address in held})
    live = [name for name, state in tasks.items() if state == "live"] + ["/var/run/netns/host-daemon"]
    script = f"""
        mount -t tmpfs tmpfs "$(readlink -f /var/run)"
        mkdir /var/run/netns
        touch {' '.join(live)}
        {readme_block("With the agent's netlib")}
    """
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-euo", "pipefail", "-c",
                           script], cwd=tmp_path, env=recipe_environment(plugin, tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    stopped = [address for address, holder in held.items() if tasks.get(holder) == "stopped"]
    assert len(stopped) == 2
    assert [line for line in proc.stdout.splitlines() if line.startswith("released ") and "(id " in line] == \
        [f"released {address} (id /var/run/netns/0a9b8c7d6e5f40312233445566778899-eth1, age 1h)"
         for address in stopped]
    assert remaining(plugin) == sorted(address for address in held if address not in stopped)
