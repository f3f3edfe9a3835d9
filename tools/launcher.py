"""The zipapp's __main__: start the plugin straight from its unpacked copy, else let shiv unpack it.

tools/pack.py puts this file into the archive in place of shiv's own __main__.py and
fills in the build constants below. A runtime starts a fresh process for every ADD, CHECK
and DEL, and after the first start the archive's site-packages is already unpacked; shiv's
bootstrap would still import about 24 ms of modules (compileall, pathlib, subprocess,
hashlib, zipfile...) only to find that out. So the warm path here needs nothing beyond
sys and os, which runpy has already imported by the time a zip's __main__ runs.
Everything else - the first start after a reboot, the SHIV_* overrides - goes through
shiv's bootstrap unchanged, and that unpacks exactly where this file looks.
"""

import os
import sys

# Build constants (tools/pack.py replaces these values).
BUILD_ID = ""
ENTRY_MODULE = "ecs_ipam.cli"
ENTRY_FUNCTION = "main"
ROOT_FOR_SUPERUSER = "/run/ecs-ipam"

# Variables that ask shiv's bootstrap for something the warm path does not do.
SHIV_OVERRIDES = (
    "SHIV_FORCE_EXTRACT",
    "SHIV_INTERPRETER",
    "SHIV_ENTRY_POINT",
    "SHIV_MODULE",
    "SHIV_CONSOLE_SCRIPT",
    "SHIV_EXTEND_PYTHONPATH",
    "SHIV_PREPEND_PYTHONPATH",
)


def extraction_root():
    """Where the archive unpacks: SHIV_ROOT if set; else /run/ecs-ipam for root, ~/.shiv for others.

    Runtimes run the plugin as root, often with no HOME and sometimes with a read-only
    /root; root can always write its own tmpfs /run, and a reboot empties it. Other
    users keep shiv's per-user default rather than a shared, writable directory that
    root might later execute code from.
    """
    root = os.environ.get("SHIV_ROOT")
    if root:
        return os.path.expanduser(root)
    if os.geteuid() == 0:
        return ROOT_FOR_SUPERUSER
    return os.path.expanduser("~/.shiv")


def main():
    root = extraction_root()
    # shiv names the unpacked copy after the archive's resolved file name and build id.
    archive_name = os.path.basename(os.path.realpath(sys.argv[0]))
    site_packages = os.path.join(root, f"{archive_name}_{BUILD_ID}", "site-packages")
    # shiv renames the copy into place only once it is complete, so existing means whole.
    if os.path.isdir(site_packages) and not any(name in os.environ for name in SHIV_OVERRIDES):
        # First, so that no other installed ecs_ipam can shadow this build's.
        sys.path.insert(0, site_packages)
        module = __import__(ENTRY_MODULE, fromlist=[ENTRY_FUNCTION])
        sys.exit(getattr(module, ENTRY_FUNCTION)())
    try:
        # Only this user may change what it will later run, whatever the caller's umask.
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as err:
        sys.exit(unpack_failed(root, err))
    # shiv's bootstrap reads SHIV_ROOT, so it unpacks where the warm path looks.
    os.environ["SHIV_ROOT"] = root
    import _bootstrap

    try:
        _bootstrap.bootstrap()
    except OSError as err:
        # An existing root can still refuse the unpacking: read-only, full, or not a real directory.
        if os.path.isdir(site_packages):
            raise  # it unpacked: the failure is not the unpacking's
        sys.exit(unpack_failed(root, err))


def unpack_failed(root, err):
    """Report on stdout, as a CNI error (code 5, I/O failure), that the archive cannot unpack."""
    import json

    error = {
        "cniVersion": "1.0.0",
        "code": 5,
        "msg": f"cannot unpack the plugin into {root}: set SHIV_ROOT to a directory this user can write",
        "details": f"{type(err).__name__}: {err}",
    }
    sys.stdout.write(json.dumps(error) + "\n")
    return 1


if __name__ == "__main__":
    main()
