"""Packs the ecs_ipam package into one reproducible shiv zipapp, offline.

Steps: copy the package's sources into a staging site-packages (normalised modes and
times, buildinfo.py stamped with the commit and build time), let shiv build the archive
from it with --site-packages (no pip resolution), then swap shiv's __main__.py for
tools/launcher.py with this build's constants and rewrite the archive deterministically.

Inputs besides the command line: SOURCE_DATE_EPOCH (default: the commit time of HEAD),
GIT_SHORT_HASH (default: `git rev-parse --short=7 HEAD`) and GIT_DIRTY (default: whether
the package differs from HEAD; stamped only if buildinfo.py assigns DIRTY). Prints the
artifact's sha256 the way sha256sum does.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "ecs_ipam"
ENTRY_POINT = "ecs_ipam.cli:main"
LAUNCHER = Path(__file__).resolve().parent / "launcher.py"
DEFAULT_HOST_PYTHON = "/usr/bin/python3"
# -I: ignore PYTHON* variables and the user site; -S: no site module. The plugin needs
# only the standard library, and both keep the caller's environment out of a root process.
INTERPRETER_FLAGS = "-IS"
DEFAULT_ROOT = "/run/ecs-ipam"
FILE_MODE = 0o644
DIR_MODE = 0o755
ZIP_EPOCH_MIN = 315532800  # 1980-01-01, the earliest time a zip entry can carry


class PackError(Exception):
    """A build that cannot go on; the message says what to do."""


def git(*args):
    """Output of a git command in the repo, or None when git or the checkout is missing."""
    if not (REPO / ".git").exists():
        return None  # not a checkout of its own (a source archive, the Nix build): no enclosing repo's answer
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def source_date_epoch(sources):
    """SOURCE_DATE_EPOCH if set; else the commit time of HEAD; else the newest source's mtime."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    committed = git("log", "-1", "--format=%ct")
    if committed:
        return int(committed)
    return int(max(path.stat().st_mtime for path in sources))


def git_short_hash():
    """GIT_SHORT_HASH if set; else HEAD's hash, at a fixed length so that every clone agrees."""
    if "GIT_SHORT_HASH" in os.environ:
        return os.environ["GIT_SHORT_HASH"]
    return git("rev-parse", "--short=7", "HEAD") or ""


def git_dirty():
    """GIT_DIRTY if set (1 or 0); else whether what goes into the file (the package, the launcher)
    differs from HEAD."""
    if "GIT_DIRTY" in os.environ:
        return os.environ["GIT_DIRTY"] == "1"
    return bool(git("status", "--porcelain", "--", PACKAGE, str(LAUNCHER.relative_to(REPO))))


def package_sources():
    """The package's Python files in the working tree, sorted."""
    package_dir = REPO / PACKAGE
    sources = sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)
    if not sources:
        raise PackError(f"no Python files under {package_dir}")
    return sources


def stamp_version(text, short_hash, built, dirty):
    """buildinfo.py's text with GIT_SHORT_HASH, BUILT and (if it has it) DIRTY set."""
    for name, value, required in (("GIT_SHORT_HASH", short_hash, True), ("BUILT", built, True), ("DIRTY", dirty, False)):
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", text, flags=re.MULTILINE)
        if count > 1 or (required and count != 1):
            raise PackError(f"{PACKAGE}/buildinfo.py must assign {name} exactly once at top level, found {count}")
    return text


def stage(sources, site_packages, stamps, epoch):
    """Copy the sources into site_packages with fixed modes and times, stamping buildinfo.py."""
    for source in sources:
        relative = source.relative_to(REPO)
        target = site_packages / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative == Path(PACKAGE, "buildinfo.py"):
            target.write_text(stamp_version(source.read_text(), *stamps))
        else:
            shutil.copyfile(source, target)
    for path in sorted(site_packages.rglob("*")):
        path.chmod(DIR_MODE if path.is_dir() else FILE_MODE)
        os.utime(path, (epoch, epoch))


def check_host_python(host_python):
    """Refuse a shebang that cannot work; check dbm.gnu when the interpreter is on this machine."""
    if not os.path.isabs(host_python) or " " in host_python:
        raise PackError(
            f"--python must be an interpreter's absolute path, got {host_python!r} "
            "(a shebang through /usr/bin/env picks whatever python3 is first on PATH)"
        )
    if not os.path.exists(host_python):
        print(f"note: {host_python} is not on this machine; the host must have it, with dbm.gnu", file=sys.stderr)
        return
    probe = subprocess.run([host_python, INTERPRETER_FLAGS, "-c", "import dbm.gnu"], capture_output=True)
    if probe.returncode != 0:
        raise PackError(
            f"{host_python} has no dbm.gnu, so the plugin could not open its store. Install it "
            "(Debian/Ubuntu: apt-get install python3-gdbm; Alpine: apk add py3-gdbm) "
            "or name another interpreter with --python / HOST_PYTHON"
        )


def run_shiv(site_packages, output, shebang, root, epoch):
    """Build the stock shiv archive from the staged site-packages, reproducibly and without pip."""
    command = [
        sys.executable, "-m", "shiv",
        "--site-packages", str(site_packages),
        "--entry-point", ENTRY_POINT,
        "--python", shebang,
        "--root", root,
        "--reproducible",
        "--output-file", str(output),
    ]
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PackError(f"shiv failed ({' '.join(command)}):\n{proc.stdout}{proc.stderr}")


def render_launcher(build_id, root):
    """tools/launcher.py with this build's constants filled in."""
    text = LAUNCHER.read_text()
    module, _, function = ENTRY_POINT.partition(":")
    constants = {"BUILD_ID": build_id, "ENTRY_MODULE": module, "ENTRY_FUNCTION": function, "ROOT_FOR_SUPERUSER": root,
                 **_cni_versions()}
    for name, value in constants.items():
        text, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", text, count=1, flags=re.MULTILINE)
        if count != 1:
            raise PackError(f"{LAUNCHER} has no top-level {name} to fill in")
    return text


def _cni_versions():
    """The launcher's copy of ecs_ipam.cni_versions, from the source tree being packed."""
    sys.path.insert(0, str(REPO))
    try:
        from ecs_ipam import cni_versions
    finally:
        sys.path.remove(str(REPO))
    return {"SUPPORTED_VERSIONS": tuple(cni_versions.SUPPORTED), "DEFAULT_VERSION": cni_versions.DEFAULT,
            "NEWEST_VERSION": cni_versions.NEWEST}


def read_shebang(path):
    with open(path, "rb") as archive:
        first_line = archive.readline()
    if not first_line.startswith(b"#!"):
        raise PackError(f"{path} does not start with a shebang")
    return first_line


# Compiles stdin, as the file's __main__, into an unchecked hash-based pyc: zipimport then runs it
# without compiling the source (about a fifth of a warm ADD's instructions), and an interpreter of
# another version, whose magic number differs, passes it over for __main__.py.
_COMPILE_LAUNCHER = """\
import importlib.util, marshal, sys
source = sys.stdin.buffer.read()
code = compile(source, "__main__.py", "exec", dont_inherit=True)
sys.stdout.buffer.write(importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little")
                        + importlib.util.source_hash(source) + marshal.dumps(code))
"""


def compile_launcher(host_python, launcher):
    """__main__.pyc for the launcher's source, by the interpreter the shebang names (its magic)."""
    proc = subprocess.run([host_python, "-S", "-c", _COMPILE_LAUNCHER], input=launcher, capture_output=True,
                          env={"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    if proc.returncode != 0:
        raise PackError(f"{host_python} could not compile the launcher: {proc.stderr.decode().strip()}")
    return proc.stdout


def rewrite_with_launcher(stock, output, epoch, root, host_python):
    """Write output: stock's shebang and entries, in order, __main__.py replaced and its pyc added,
    fixed times and modes."""
    date_time = time.gmtime(max(epoch, ZIP_EPOCH_MIN))[:6]
    with zipfile.ZipFile(stock) as source:
        environment = json.loads(source.read("environment.json"))
        launcher = render_launcher(environment["build_id"], root).encode()
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    entries.append(("__main__.pyc", compile_launcher(host_python, launcher)))
    names = [name for name, _ in entries]
    if "__main__.py" not in names or not any(name.startswith("_bootstrap/") for name in names):
        raise PackError(f"{stock} does not have shiv's layout (__main__.py, _bootstrap/): {names}")
    partial = output.with_name(output.name + ".partial")
    with open(partial, "wb") as target:
        target.write(read_shebang(stock))
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=date_time)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # Unix, so external_attr carries the mode
                info.external_attr = (0o100000 | FILE_MODE) << 16
                archive.writestr(info, launcher if name == "__main__.py" else data)
    partial.chmod(0o755)
    os.replace(partial, output)


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pack(output, host_python, root, stock=False):
    """Build output and return its sha256; stock=True keeps shiv's own __main__.py (for comparisons)."""
    check_host_python(host_python)
    sources = package_sources()
    epoch = source_date_epoch(sources)
    built = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ecs-ipam-pack-") as scratch:
        site_packages = Path(scratch, "site-packages")
        site_packages.mkdir()
        stage(sources, site_packages, (git_short_hash(), built, git_dirty()), epoch)
        built_by_shiv = Path(scratch, output.name)
        run_shiv(site_packages, built_by_shiv, f"{host_python} {INTERPRETER_FLAGS}", root, epoch)
        if stock:
            shutil.copyfile(built_by_shiv, output)
            output.chmod(0o755)
        else:
            rewrite_with_launcher(built_by_shiv, output, epoch, root, host_python)
    return sha256_of(output)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "dist" / "ecs-ipam", help="default: dist/ecs-ipam")
    parser.add_argument(
        "--python",
        default=os.environ.get("HOST_PYTHON") or DEFAULT_HOST_PYTHON,
        help="the interpreter the shebang names; it must have dbm.gnu (default: $HOST_PYTHON or %(default)s)",
    )
    parser.add_argument("--root", default=DEFAULT_ROOT, help="where root unpacks it at run time (default: %(default)s)")
    parser.add_argument("--stock", action="store_true", help="keep shiv's own bootstrap as __main__ (benchmarks)")
    args = parser.parse_args(argv)
    try:
        digest = pack(args.output, args.python, args.root, args.stock)
    except PackError as err:
        print(f"pack: {err}", file=sys.stderr)
        return 1
    print(f"{digest}  {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
