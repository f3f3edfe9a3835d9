"""The shipped file as a runtime meets it: shebang, archive layout, where it unpacks, cold and warm starts."""

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

DEFAULT_ROOT = "/run/ecs-ipam"
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
CONFIG = {
    "cniVersion": "1.0.0",
    "name": "artifact-test",
    "type": "ecs-bridge",
    "ipam": {"type": "ecs-ipam", "ipv4-subnet": "10.77.0.0/24"},
}


def run(artifact, *args, env=None, stdin="", python_flags=None):
    """Run the artifact with only BASE_ENV plus env, from cwd /; python_flags runs it through its interpreter."""
    command = [str(artifact), *args]
    if python_flags is not None:
        command = [shebang_of(artifact)[0], *python_flags, *command]
    return subprocess.run(
        command, env={**BASE_ENV, **(env or {})}, input=stdin.encode(), capture_output=True, timeout=60, cwd="/"
    )


def version_of(proc):
    assert proc.returncode == 0, proc
    assert b"Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def shebang_of(artifact):
    """The shebang's words: interpreter path, then its flags."""
    with open(artifact, "rb") as file:
        first_line = file.readline().decode()
    assert first_line.startswith("#!"), first_line
    return first_line[2:].split()


def build_id_of(artifact):
    with zipfile.ZipFile(artifact) as archive:
        return json.loads(archive.read("environment.json"))["build_id"]


def unpacked_name(artifact):
    """shiv's name for the unpacked copy: the archive's resolved file name and the build id."""
    return f"{Path(artifact).resolve().name}_{build_id_of(artifact)}"


def unpacked_dirs(root):
    return sorted(p.name for p in Path(root).iterdir() if not p.name.startswith("."))


def test_shebang_names_an_interpreter_that_has_dbm_gnu(artifact):
    interpreter, *flags = shebang_of(artifact)
    assert os.path.isabs(interpreter) and not interpreter.endswith("/env"), interpreter
    assert flags == ["-IS"]
    if os.environ.get("HOST_PYTHON"):
        assert interpreter == os.environ["HOST_PYTHON"]
    probe = subprocess.run([interpreter, "-IS", "-c", "import dbm.gnu"], capture_output=True)
    assert probe.returncode == 0, probe.stderr.decode()


def test_archive_keeps_shivs_layout_with_the_launcher_as_main(artifact):
    with zipfile.ZipFile(artifact) as archive:
        infos = archive.infolist()
        environment = json.loads(archive.read("environment.json"))
        main = archive.read("__main__.py").decode()
    names = [info.filename for info in infos]
    assert "site-packages/ecs_ipam/cli.py" in names
    assert "_bootstrap/__init__.py" in names
    assert names[-3:] == ["environment.json", "__main__.py", "__main__.pyc"]
    assert environment["entry_point"] == "ecs_ipam.cli:main"
    assert environment["root"] == DEFAULT_ROOT
    assert environment["reproducible"] is True
    assert f"BUILD_ID = {environment['build_id']!r}" in main
    assert len({info.date_time for info in infos}) == 1
    assert {info.external_attr >> 16 for info in infos} == {0o100644}
    assert "_bootstrap.bootstrap()" in main and "sys.path.insert(0, site_packages)" in main


def test_the_launcher_ships_compiled_for_the_host_and_runs_from_source_elsewhere(artifact, tmp_path):
    """__main__.pyc is __main__.py compiled by the shebang's interpreter; one of another version
    (another magic number) must pass it over and run the source."""
    import importlib.util
    import marshal

    with zipfile.ZipFile(artifact) as archive:
        source = archive.read("__main__.py")
        compiled = archive.read("__main__.pyc")
    host = open(artifact, "rb").readline()[2:].split()[0].decode()
    magic = subprocess.run([host, "-S", "-c", "import importlib.util, sys; "
                            "sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER)"], capture_output=True).stdout
    assert compiled[:4] == magic and compiled[8:16] == importlib.util.source_hash(source)
    if compiled[:4] == importlib.util.MAGIC_NUMBER:  # this interpreter can read it: the same code
        assert marshal.loads(compiled[16:]).co_code == compile(source, "__main__.py", "exec").co_code
    # A pyc of another interpreter's version: zipimport runs the source instead.
    altered = tmp_path / "ecs-ipam"
    with zipfile.ZipFile(artifact) as archive, open(altered, "wb") as target:
        target.write(open(artifact, "rb").readline())
        with zipfile.ZipFile(target, "w") as out:
            for info in archive.infolist():
                data = archive.read(info)
                out.writestr(info, b"\0\0\0\0" + data[4:] if info.filename == "__main__.pyc" else data)
    altered.chmod(0o755)
    version = version_of(run(altered, "--version", env={"SHIV_ROOT": str(tmp_path / "root")}))
    assert version["version"]


def test_version_carries_the_stamped_build(artifact, tmp_path):
    version = version_of(run(artifact, "--version", env={"SHIV_ROOT": str(tmp_path)}))
    with zipfile.ZipFile(artifact) as archive:
        built_at = json.loads(archive.read("environment.json"))["built_at"]
    assert version["built"] == built_at.replace(" ", "T") + "Z"
    assert re.fullmatch(r"[0-9a-f]{7}|dirty", version["gitShortHash"]), version


def test_runs_from_env_i_with_no_home_and_a_read_only_root_home(artifact, tmp_path, namespace):
    """As root with `env -i`: unpacks under /run/ecs-ipam, not ~/.shiv, and ADD works."""
    outcome = namespace(
        """
        mount -t tmpfs tmpfs /run                     # a fresh /run, as after a reboot
        mount --bind /root /root && mount -o remount,bind,ro /root
        ! touch /root/.ecs-ipam-probe 2>/dev/null     # /root really is read-only
        cd /
        step cold env -i "$ARTIFACT" --version
        step warm env -i "$ARTIFACT" --version
        step add env -i CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/x CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin \
            IPAM_DB_PATH="$OUT/db/ipam.db" "$ARTIFACT" <"$OUT/config.json"
        ls -A /run/ecs-ipam >"$OUT/unpacked"
        stat -c %a /run/ecs-ipam >"$OUT/root-mode"
        """,
        artifact=artifact,
    )
    assert version_of(outcome("cold")) == version_of(outcome("warm"))
    assert version_of(outcome("add"))["ips"][0]["address"] == "10.77.0.2/24"
    assert unpacked_name(artifact) in outcome.read("unpacked").split()
    assert outcome.read("root-mode").strip() == "700"


def test_runs_from_a_read_only_install_dir(artifact, tmp_path, namespace):
    bin_dir = tmp_path / "opt" / "cni" / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(artifact, bin_dir / "ecs-ipam")
    outcome = namespace(
        """
        mount --bind "$BIN" "$BIN" && mount -o remount,bind,ro "$BIN"
        ! touch "$BIN/.probe" 2>/dev/null             # the install dir really is read-only
        cd /
        step cold env -i SHIV_ROOT="$ROOT" "$BIN/ecs-ipam" --version
        step warm env -i SHIV_ROOT="$ROOT" "$BIN/ecs-ipam" --version
        """,
        artifact=artifact,
        BIN=str(bin_dir),
        ROOT=str(tmp_path / "root"),
    )
    assert version_of(outcome("cold")) == version_of(outcome("warm"))
    assert os.listdir(bin_dir) == ["ecs-ipam"]
    assert unpacked_dirs(tmp_path / "root") == [unpacked_name(bin_dir / "ecs-ipam")]


def test_many_copies_at_once_on_first_start(artifact, tmp_path):
    """A reboot, then a runtime starting 20 containers at once: one unpacks, all get an address."""
    root = tmp_path / "root"
    env = {
        **BASE_ENV, "SHIV_ROOT": str(root), "IPAM_DB_PATH": str(tmp_path / "db" / "ipam.db"),
        "CNI_COMMAND": "ADD", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
    }
    stdin = json.dumps(CONFIG).encode()
    procs = [
        subprocess.Popen([str(artifact)], env={**env, "CNI_CONTAINERID": f"c{i}"}, cwd="/",
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for i in range(20)
    ]
    results = [proc.communicate(stdin, timeout=120) + (proc.returncode,) for proc in procs]
    for stdout, stderr, code in results:
        assert code == 0 and b"Traceback" not in stderr, (stdout, stderr)
    addresses = {json.loads(stdout)["ips"][0]["address"] for stdout, _, _ in results}
    assert len(addresses) == 20
    assert unpacked_dirs(root) == [unpacked_name(artifact)]


def test_first_start_after_a_reboot_unpacks_again(artifact, tmp_path):
    env = {"SHIV_ROOT": str(tmp_path / "root")}
    first = version_of(run(artifact, "--version", env=env))
    shutil.rmtree(tmp_path / "root")  # what a reboot does to /run
    assert version_of(run(artifact, "--version", env=env)) == first
    assert unpacked_dirs(tmp_path / "root") == [unpacked_name(artifact)]


def test_warm_start_skips_shivs_bootstrap(artifact, tmp_path):
    env = {"SHIV_ROOT": str(tmp_path / "root")}
    cold = run(artifact, "--version", env=env, python_flags=["-IS", "-X", "importtime"])
    warm = run(artifact, "--version", env=env, python_flags=["-IS", "-X", "importtime"])
    assert version_of(cold) == version_of(warm)
    assert re.search(rb"\| _bootstrap$", cold.stderr, re.MULTILINE), cold.stderr.decode()
    for module in (b"_bootstrap", b"zipfile", b"compileall", b"subprocess", b"pathlib"):
        assert not re.search(rb"\|\s+" + module + rb"$", warm.stderr, re.MULTILINE), module
    # The first start's imports left bytecode, so warm starts do not compile again.
    package = tmp_path / "root" / unpacked_name(artifact) / "site-packages" / "ecs_ipam"
    assert list((package / "__pycache__").glob("cli.*.pyc"))


def test_shiv_force_extract_repairs_a_damaged_copy(artifact, tmp_path):
    env = {"SHIV_ROOT": str(tmp_path / "root")}
    expected = version_of(run(artifact, "--version", env=env))
    cli = tmp_path / "root" / unpacked_name(artifact) / "site-packages" / "ecs_ipam" / "cli.py"
    cli.write_text("")
    assert run(artifact, "--version", env=env).returncode != 0
    assert version_of(run(artifact, "--version", env={**env, "SHIV_FORCE_EXTRACT": "1"})) == expected
    assert version_of(run(artifact, "--version", env=env)) == expected


def test_an_unwritable_extraction_root_is_a_cni_error(artifact):
    proc = run(artifact, "--version", env={"SHIV_ROOT": "/proc/ecs-ipam"})
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert error["code"] == 5
    assert "SHIV_ROOT" in error["msg"] and "/proc/ecs-ipam" in error["msg"]


def test_an_existing_root_that_refuses_the_unpacking_is_a_cni_error(artifact):
    """The root exists (makedirs succeeds) but nothing can be created in it: no traceback either."""
    proc = run(artifact, env={"SHIV_ROOT": "/proc", "CNI_COMMAND": "VERSION"})
    assert b"Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc
    error = json.loads(proc.stdout)
    assert error["code"] == 5 and "/proc" in error["msg"], error


class NamespaceOutcome:
    """What a script run by the namespace fixture left in its output directory."""

    def __init__(self, out):
        self.out = out

    def read(self, name):
        return (self.out / name).read_text()

    def __call__(self, step):
        """A finished step as a CompletedProcess."""
        return subprocess.CompletedProcess(
            step, int(self.read(f"{step}.rc")), (self.out / f"{step}.out").read_bytes(),
            (self.out / f"{step}.err").read_bytes(),
        )


@pytest.fixture
def namespace(tmp_path):
    """Run a shell script as root in a private mount namespace; skip where that is not allowed.

    The script gets ARTIFACT, OUT (a directory for its results, with config.json in it) and
    a `step NAME COMMAND...` function that records a command's stdout, stderr and exit code.
    """
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private mount namespace")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(CONFIG))

    def run_script(script, artifact, **variables):
        prelude = 'step() { name=$1; shift; if "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"; ' \
                  'then echo 0; else echo $?; fi >"$OUT/$name.rc"; }\n'
        env = {**BASE_ENV, "ARTIFACT": str(artifact), "OUT": str(out), **variables}
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-euc", prelude + script],
                              env=env, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        return NamespaceOutcome(out)

    return run_script
