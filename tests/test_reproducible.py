"""Two builds of one commit, from different directories at different times, are bit-identical."""

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile

import pytest

from conftest import ROOT



def git(*args, cwd=ROOT):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def clone_head(tmp_path):
    """Clone the repo's HEAD into a new directory under tmp_path (skip outside a git checkout)."""
    if not shutil.which("git") or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    pytest.importorskip("shiv")

    def clone(name):
        target = tmp_path / name
        git("clone", "--quiet", "--no-hardlinks", str(ROOT), str(target), cwd=tmp_path)
        return target

    return clone


def build(checkout, umask, tz):
    """Run the checkout's own tools/pack.py with the given umask and TZ; return the file's bytes."""
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "GIT_SHORT_HASH", "GIT_DIRTY")}
    env["TZ"] = tz
    output = checkout / "dist" / "ecs-ipam"
    subprocess.run(
        [sys.executable, "tools/pack.py", "--output", str(output)],
        cwd=checkout, env=env, check=True, capture_output=True, preexec_fn=lambda: os.umask(umask),
    )
    return output.read_bytes()


def test_two_builds_of_one_commit_are_identical(clone_head):
    first = build(clone_head("a"), umask=0o022, tz="UTC")
    time.sleep(1.1)  # a build that leaked the clock would now differ
    second = build(clone_head("elsewhere/b"), umask=0o077, tz="Asia/Tokyo")
    assert hashlib.sha256(first).hexdigest() == hashlib.sha256(second).hexdigest()


def test_the_build_is_stamped_with_the_commit(clone_head):
    checkout = clone_head("c")
    build(checkout, umask=0o022, tz="UTC")
    with zipfile.ZipFile(checkout / "dist" / "ecs-ipam") as archive:
        version_py = archive.read("site-packages/ecs_ipam/buildinfo.py").decode()
    commit_time = int(git("log", "-1", "--format=%ct", cwd=checkout))
    assert f"GIT_SHORT_HASH = '{git('rev-parse', '--short=7', 'HEAD', cwd=checkout)}'" in version_py
    assert f"BUILT = '{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(commit_time))}'" in version_py
    assert "DIRTY = False" in version_py  # a clean clone of the commit
    # The working tree's own version.py is left as it is.
    assert "GIT_SHORT_HASH = \"\"" in (checkout / "ecs_ipam" / "buildinfo.py").read_text()
