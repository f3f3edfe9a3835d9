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
ROOT_FOR_SUPERUSER = ""  # tools/pack.py --root
# The CNI versions the plugin speaks (ecs_ipam.cni_versions), for the cniVersion of an error here.
SUPPORTED_VERSIONS = ()
DEFAULT_VERSION = ""
NEWEST_VERSION = ""

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
        try:
            module = __import__(ENTRY_MODULE, fromlist=[ENTRY_FUNCTION])
        except (ImportError, SyntaxError, ValueError) as err:  # ValueError: a null byte in a module
            sys.exit(report(f"the plugin's unpacked copy in {os.path.dirname(site_packages)} is damaged: "
                            "run it once with SHIV_FORCE_EXTRACT=1 to unpack it again",
                            f"{type(err).__name__}: {err}"))
        sys.exit(getattr(module, ENTRY_FUNCTION)())
    try:
        # Only this user may change what it will later run, whatever the caller's umask.
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as err:
        sys.exit(unpack_failed(root, err))
    # shiv's bootstrap reads SHIV_ROOT, so it unpacks where the warm path looks.
    os.environ["SHIV_ROOT"] = root
    if os.path.isdir(os.path.dirname(site_packages)) and not os.path.isdir(site_packages):
        # shiv would take the copy for whole and fail to import from it: unpack it again.
        os.environ["SHIV_FORCE_EXTRACT"] = "1"
    import _bootstrap

    try:
        _bootstrap.bootstrap()
    except OSError as err:
        # An existing root can still refuse the unpacking: read-only, full, or not a real directory.
        if os.path.isdir(site_packages):
            raise  # it unpacked: the failure is not the unpacking's
        sys.exit(unpack_failed(root, err))
    except (ImportError, SyntaxError, ValueError) as err:  # under a SHIV_* override: no repair asked for
        sys.exit(report(f"the plugin's unpacked copy in {os.path.dirname(site_packages)} cannot be imported: "
                        "run it once with SHIV_FORCE_EXTRACT=1 to unpack it again",
                        f"{type(err).__name__}: {err}"))


def unpack_failed(root, err):
    return report(f"cannot unpack the plugin into {root}: set SHIV_ROOT to a directory this user can write",
                  f"{type(err).__name__}: {err}")


def report(msg, details):
    """Print a CNI error (code 5, I/O failure) on stdout, as the plugin would; return the exit code.

    Its cniVersion follows the plugin's rule: the config's when the plugin speaks it (a missing
    one is the default), else the newest. Only this error path reads the config.
    """
    import json

    version = NEWEST_VERSION
    if os.environ.get("CNI_COMMAND") and os.environ["CNI_COMMAND"] != "VERSION":
        try:
            config = json.loads(sys.stdin.buffer.read() or b"null")
            given = config.get("cniVersion") if isinstance(config, dict) else None
            version = DEFAULT_VERSION if given in (None, "") else given if given in SUPPORTED_VERSIONS else version
        except (OSError, ValueError, AttributeError):
            pass
    sys.stdout.write(json.dumps({"cniVersion": version, "code": 5, "msg": msg, "details": details}) + "\n")
    return 1


if __name__ == "__main__":
    main()
