"""Everything around the store, tried as a hostile user and as an operator would: links planted
beside it, a directory others can write, STATUS and the db tools telling the truth, compactions
that keep failing, and a lock file removed while held. The built file, as root, on real file
systems (a tmpfs and a read-only bind mount in private mount namespaces, a directory of nobody's).
"""

import json
import os
import pwd
import shutil
import time
from pathlib import Path

import pytest

from conftest import finish, hold_store_lock, spawn
from e2e_support import V4, add, add_address, failed, netconf, run_db, silent_success, succeeded

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="these are root's refusals")

NOBODY = pwd.getpwnam("nobody")


def as_nobody():
    os.setgid(NOBODY.pw_gid)
    os.setuid(NOBODY.pw_uid)


@pytest.fixture
def nobodys_directory(tmp_path):
    """A directory nobody owns (and so can plant files in), inside a root-only one."""
    directory = tmp_path / "nobodys"
    directory.mkdir()
    os.chown(directory, NOBODY.pw_uid, NOBODY.pw_gid)
    yield directory
    shutil.rmtree(directory)


# -- 1. links planted beside the store -------------------------------------------------------

@pytest.mark.parametrize("suffix", [".journal", ".lock"])
def test_a_link_planted_beside_the_store_is_refused_and_its_target_untouched(plugin, tmp_path, suffix):
    add(plugin, {**V4, "id": "a"})  # a store: snapshot (and a journal after the next ADD)
    add(plugin, {**V4, "id": "b"})
    target = tmp_path / "victim"
    target.write_bytes(b"one line without a newline")
    planted = Path(f"{plugin.db_path}{suffix}")
    planted.unlink()
    planted.symlink_to(target)
    error = failed(plugin.run("ADD", netconf({**V4, "id": "c"})), 5, str(planted), "symbolic link")
    assert target.read_bytes() == b"one line without a newline", error
    assert planted.is_symlink()


def test_a_lock_link_to_a_new_file_elsewhere_creates_nothing(plugin, tmp_path):
    plugin.db_path.parent.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere" / "new-file"
    elsewhere.parent.mkdir()
    Path(f"{plugin.db_path}.lock").symlink_to(elsewhere)
    failed(plugin.run("ADD", netconf(V4)), 5, ".lock", "symbolic link")
    assert not elsewhere.exists()


def test_a_new_snapshot_link_is_removed_not_followed(plugin, tmp_path):
    """PATH.new is only ever created with O_EXCL after unlinking a leftover: a link there is
    removed, its target never written."""
    add(plugin, {**V4, "id": "a"})
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    Path(f"{plugin.db_path}.new").symlink_to(target)
    for n in range(300):  # past a compaction
        add(plugin, {"ipv4-subnet": "10.1.0.0/16", "id": f"t{n}"})
    assert target.read_bytes() == b"precious"
    assert not Path(f"{plugin.db_path}.new").exists()


def test_root_refuses_a_store_directory_another_user_can_write(artifact, nobodys_directory):
    db = nobodys_directory / "ipam.db"
    outcome = spawn([artifact], {"CNI_COMMAND": "ADD", "IPAM_DB_PATH": str(db)}, json.dumps(netconf(V4)).encode())
    error = json.loads(outcome.stdout)
    assert error["code"] == 5 and str(nobodys_directory) in error["msg"] and "other users" in error["msg"], error
    assert list(nobodys_directory.iterdir()) == []  # not even a lock file


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o775])
def test_root_refuses_a_group_or_world_writable_store_directory(plugin, mode):
    plugin.db_path.parent.mkdir(parents=True)
    os.chmod(plugin.db_path.parent, mode)
    failed(plugin.run("ADD", netconf(V4)), 5, "can be written by other users")
    assert list(plugin.db_path.parent.iterdir()) == []


def test_a_symlinked_store_path_is_followed_once(plugin, tmp_path):
    real = tmp_path / "real" / "ipam.db"
    real.parent.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    assert add_address(plugin, V4, env={"IPAM_DB_PATH": str(link)}) == "10.0.0.2"
    assert real.exists() and link.is_symlink()


# -- 2. STATUS says what ADD would -----------------------------------------------------------

def test_status_under_a_regular_file_says_what_add_says(plugin, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"IPAM_DB_PATH": str(blocker / "sub" / "ipam.db")}
    failed(plugin.run("ADD", netconf(V4), env=env), 5, "Not a directory")
    failed(plugin.run("STATUS", netconf(V4), env=env), 50, str(blocker), "Not a directory")
    assert blocker.read_text() == ""


def test_status_with_an_exhausted_subnet_and_a_busy_lock(plugin):
    add(plugin, {"ipv4-subnet": "10.0.0.0/30", "id": "only"})
    failed(plugin.run("STATUS", netconf({"ipv4-subnet": "10.0.0.0/30"})), 50, "10.0.0.0/30", "exhausted")
    with hold_store_lock(plugin.db_path):
        failed(plugin.run("STATUS", netconf(V4), env={"IPAM_DB_CONNECTION_TIMEOUT": "200ms"}), 11)


# -- 3. read-only calls never call an unreadable or missing store empty -----------------------

@pytest.fixture
def nobody(tmp_path):
    """run(args, command, doc, db): the artifact run as nobody, unpacking into a directory of its own."""
    import tempfile

    shiv_root = Path(tempfile.mkdtemp(prefix="ecs-ipam-nobody-"))
    os.chown(shiv_root, NOBODY.pw_uid, NOBODY.pw_gid)

    def run(artifact, args=(), command=None, doc=None, db=None):
        env = {"SHIV_ROOT": str(shiv_root)}
        if command:
            env.update({"CNI_COMMAND": command, "IPAM_DB_PATH": str(db)})
        return spawn([artifact, *args], env, json.dumps(doc or {}).encode(), preexec_fn=as_nobody)

    yield run
    shutil.rmtree(shiv_root)


def test_a_store_nobody_can_read_is_an_error_not_an_empty_store(plugin, nobody):
    add(plugin, {**V4, "id": "a"})  # under pytest's root-only temporary directory
    for args in (["db", "list", "--db", str(plugin.db_path)], ["db", "check", "--db", str(plugin.db_path)]):
        proc = nobody(plugin.artifact, args)
        assert proc.returncode == 1 and b"Permission denied" in proc.stderr, proc
        assert b"0 allocation" not in proc.stdout and b"sound" not in proc.stdout, proc
    proc = nobody(plugin.artifact, command="CHECK", doc=netconf({**V4, "id": "a"}), db=plugin.db_path)
    error = json.loads(proc.stdout)
    assert error["code"] == 5 and "Permission denied" in error["msg"], error


def test_cni_check_and_status_on_a_fresh_host_keep_their_meaning(plugin):
    failed(plugin.run("CHECK", netconf({**V4, "id": "a"})), 103, "holds no IPv4 address")
    silent_success(plugin.run("STATUS", netconf(V4)))
    assert not plugin.db_path.parent.exists()  # neither made a directory or a lock file


# -- 4. a compaction that keeps failing is loud ----------------------------------------------

def test_a_compaction_that_keeps_failing_warns_and_is_reported(plugin):
    add(plugin, {**V4, "id": "first"})  # the snapshot; every later commit appends to the journal
    Path(f"{plugin.db_path}.new").mkdir()  # every compaction's O_EXCL create of PATH.new now fails
    warned = []
    for n in range(300):
        outcome = succeeded(plugin.run("ADD", netconf({"ipv4-subnet": "10.1.0.0/16", "id": f"t{n}"})))
        warned += [n] if "compacting the store" in outcome.stderr and "Is a directory" in outcome.stderr else []
    assert warned == list(range(255, 300))  # every commit from the 256th record on says so
    check = run_db(plugin, ["check"])
    # 300 records of ADDs and 45 notes of a failure; under the bound, so still sound, with the reason.
    assert check.code == 0 and "journal: 345 record(s)" in check.stdout, check
    assert "the last compaction failed" in check.stdout and "Is a directory" in check.stdout, check
    silent_success(plugin.run("STATUS", netconf(V4)))


def test_past_the_bound_status_fails_and_db_check_exits_1(plugin):
    """Past JOURNAL_LIMIT records: a journal made by hand (the limit's commits would take minutes)."""
    from ecs_ipam.disk import JOURNAL_LIMIT, _encode_record

    add(plugin, {**V4, "id": "first"})
    with open(f"{plugin.db_path}.journal", "ab") as journal:
        for n in range(JOURNAL_LIMIT + 1):
            journal.write(_encode_record({"compaction-failure": f"test record {n}"}))
    failed(plugin.run("STATUS", netconf(V4)), 50, f"holds {JOURNAL_LIMIT + 1} records", "test record")
    check = run_db(plugin, ["check"])
    assert check.code == 1 and f"{JOURNAL_LIMIT + 1} records" in check.stderr, check


# -- 5. the lock means what it says ----------------------------------------------------------

def test_a_call_that_waited_on_a_removed_lock_file_locks_the_one_at_the_path(plugin):
    """A waits on the lock file; it is removed and another call locks a new one at the path; when
    the old one is let go, A must wait for the new one instead of walking in beside its holder."""
    add(plugin, {**V4, "id": "a"})
    old = hold_store_lock(plugin.db_path)
    waiting = plugin.start("ADD", netconf({**V4, "id": "b"}), env={"IPAM_DB_CONNECTION_TIMEOUT": "30s"})
    new = None
    try:
        old.wait_for_waiters(1)  # it has opened the old file and waits for its flock
        os.unlink(old.path)  # an operator "cleaning a stale lock"...
        new = hold_store_lock(plugin.db_path)  # ...and another call takes the new one
        old.release()  # the old holder ends
        time.sleep(1.0)
        assert waiting.poll() is None, "it ran beside the holder of the new lock file"
        new.release()
        assert finish(waiting, timeout=30).code == 0
    finally:
        old.release()
        if new is not None:
            new.release()
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()


# -- 6. small refusals -----------------------------------------------------------------------

@pytest.mark.parametrize("what", ["garbage", "directory", "empty"])
def test_a_foreign_file_at_the_path_is_refused_without_a_lock_file_beside_it(plugin, what):
    plugin.db_path.parent.mkdir(parents=True)
    if what == "directory":
        plugin.db_path.mkdir()
    else:
        plugin.db_path.write_bytes(b"" if what == "empty" else b"not a database\n" * 20)
    for command in ("ADD", "DEL", "CHECK"):
        failed(plugin.run(command, netconf({**V4, "id": "a"})), 5, str(plugin.db_path), "not an ecs-ipam store")
    assert sorted(p.name for p in plugin.db_path.parent.iterdir()) == ["ipam.db"]


@pytest.mark.parametrize("value, fragment", [("/data/", "names a directory"), ("/data/..", "names a directory"),
                                             ("/data/.", "names a directory"), ("relative/ipam.db", "relative path"),
                                             ("ipam.db", "relative path")])
def test_an_unusable_ipam_db_path_is_code_4_naming_it(plugin, value, fragment):
    failed(plugin.run("ADD", netconf(V4), env={"IPAM_DB_PATH": value}), 4, "IPAM_DB_PATH", repr(value), fragment)


def test_a_symlink_loop_at_the_path_is_code_5_naming_it(plugin, tmp_path):
    loop = tmp_path / "loop.db"
    loop.symlink_to(tmp_path / "loop.db")
    failed(plugin.run("ADD", netconf(V4), env={"IPAM_DB_PATH": str(loop)}), 5, "loop.db", "symbolic links")


def unpacked_copy(plugin, tmp_path):
    """(a SHIV_ROOT of the test's own, the build's unpacked directory in it) after a first run."""
    root = tmp_path / "shiv-root"
    outcome = plugin.run("VERSION", env={"SHIV_ROOT": str(root)})
    assert outcome.code == 0, outcome
    [copy] = root.glob("ecs-ipam_*")
    return root, copy


def test_a_damaged_unpacked_copy_is_a_cni_error_naming_the_remedy(plugin, tmp_path):
    root, copy = unpacked_copy(plugin, tmp_path)
    with open(copy / "site-packages" / "ecs_ipam" / "cli.py", "a") as module:
        module.write("\ndef (\n")
    env = {"SHIV_ROOT": str(root)}
    error = failed(plugin.run("ADD", netconf(V4, "0.3.1"), env=env), 5, "damaged", "SHIV_FORCE_EXTRACT=1",
                   "SyntaxError")
    assert error["cniVersion"] == "0.3.1"  # the plugin's rule: the config's version
    assert failed(plugin.run("ADD", netconf(V4, "9.9.9"), env=env), 5)["cniVersion"] == "1.1.0"
    assert succeeded(plugin.run("ADD", netconf(V4), env={**env, "SHIV_FORCE_EXTRACT": "1"}))
    assert succeeded(plugin.run("ADD", netconf(V4), env=env))  # repaired for later calls too


def test_a_damaged_module_imported_later_is_code_5_too(plugin, tmp_path):
    root, copy = unpacked_copy(plugin, tmp_path)
    (copy / "site-packages" / "ecs_ipam" / "commands.py").write_text("x(\n")
    failed(plugin.run("ADD", netconf(V4), env={"SHIV_ROOT": str(root)}), 5, "SHIV_FORCE_EXTRACT=1")


def test_an_unpacked_copy_without_site_packages_is_unpacked_again(plugin, tmp_path):
    root, copy = unpacked_copy(plugin, tmp_path)
    shutil.rmtree(copy / "site-packages")
    assert add_address(plugin, V4, env={"SHIV_ROOT": str(root)}) == "10.0.0.2"
    assert (copy / "site-packages" / "ecs_ipam" / "cli.py").is_file()


# -- links and directories root must not trust, found in review ---------------------------

def test_a_store_path_linked_from_a_directory_others_can_write_is_refused(plugin, tmp_path, nobodys_directory):
    """nobody plants IPAM_DB_PATH -> a root-only directory: root must not create its store there."""
    private = tmp_path / "private"
    private.mkdir()
    link = nobodys_directory / "ipam.db"
    link.symlink_to(private / "victim")
    failed(plugin.run("ADD", netconf(V4), env={"IPAM_DB_PATH": str(link)}), 5, str(link), "symbolic link",
           str(nobodys_directory), "other users")
    assert list(private.iterdir()) == []
    # A linked directory along the path, the same.
    (nobodys_directory / "sub").symlink_to(private)
    failed(plugin.run("ADD", netconf(V4), env={"IPAM_DB_PATH": str(nobodys_directory / "sub" / "ipam.db")}), 5,
           "symbolic link", "other users")
    assert list(private.iterdir()) == []


def test_the_call_log_never_follows_a_link_nor_writes_where_others_can(plugin, tmp_path, nobodys_directory):
    secret = tmp_path / "secret"
    secret.write_text("secret\n")
    mine = tmp_path / "logs"
    mine.mkdir()
    (mine / "ecs.log").symlink_to(secret)
    outcome = succeeded(plugin.run("ADD", netconf(V4), env={"ECS_CNI_LOG_FILE": str(mine / "ecs.log")}))
    assert "cannot write the call log" in outcome.stderr and "symbolic link" in outcome.stderr, outcome
    outcome = succeeded(plugin.run("ADD", netconf(V4), env={"ECS_CNI_LOG_FILE": str(nobodys_directory / "x.log")}))
    assert "cannot write the call log" in outcome.stderr and "other users" in outcome.stderr, outcome
    assert secret.read_text() == "secret\n" and list(nobodys_directory.iterdir()) == []


def test_a_record_of_the_wrong_types_is_damage_for_the_db_tools_too(plugin):
    import dbm.gnu

    add(plugin, {**V4, "id": "k"})
    with dbm.gnu.open(str(plugin.db_path), "w") as snapshot:
        snapshot[b"a/10.0.0.2"] = json.dumps({"id": "k", "container": None, "ifname": None, "subnet": "10.0.0.0/24",
                                              "allocated_at": "x"}).encode()
    for args in (["list"], ["check"]):
        outcome = run_db(plugin, [*args, "--db", str(plugin.db_path)])
        assert outcome.code == 1 and "allocated_at" in outcome.stderr, outcome
