"""Where ecs-ipam's start-up time goes: each command once per round, round after round, medians.

    ./build.sh bench [--rounds N]      (builds dist/ecs-ipam first, then runs this)

Rows: the bare interpreter; the interpreter importing what an ADD needs; the plugin's ADD
run straight from its unpacked site-packages (no zipapp); the same from a bare zipapp; the
shipped file's ADD (our launcher), without and with the call log (ECS_CNI_LOG_FILE); the same
package built by stock shiv; host-local's ADD for reference; and the shipped file's first start
after a reboot, when it unpacks. Every ADD starts on an empty store; the call log grows over the
run, as on a host. The commands take turns within each round, so a machine that gets busier or
quieter during the run shifts all of them alike instead of skewing the comparison.
"""

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipapp
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# What an ADD imports beyond the interpreter's own start (ecs_ipam.jsontext, store and disk say why
# _json and _gdbm rather than json and dbm.gnu), and the reference set of imports.
IMPORTS = "import _json, ipaddress, fcntl, _gdbm, zlib"
REFERENCE_IMPORTS = "import json, ipaddress, fcntl, dbm.gnu"
ECS_CONFIG = {
    "cniVersion": "1.0.0", "name": "bench", "type": "ecs-bridge",
    "ipam": {"type": "ecs-ipam", "ipv4-subnet": "169.254.172.0/22", "ipv4-routes": [{"dst": "169.254.170.2/32"}]},
}
LABELS = {
    "interpreter": "bare interpreter (`python3 -I -S -c pass`)",
    "reference-imports": f"+ `{REFERENCE_IMPORTS}`",
    "imports": f"+ `{IMPORTS}` (what an ADD imports)",
    "direct": "ecs-ipam ADD from the unpacked package, no zipapp",
    "zipapp": "ecs-ipam ADD, a bare zipapp whose `__main__` only imports it",
    "launcher": "**ecs-ipam ADD, the shipped file (launcher)**",
    "logged": "ecs-ipam ADD, the shipped file, with the call log (`ECS_CNI_LOG_FILE`)",
    "stock": "ecs-ipam ADD, stock shiv bootstrap",
    "host-local": "host-local ADD (reference)",
    "cold": "ecs-ipam ADD, first start after a reboot (unpacks)",
    "compared": "ecs-ipam ADD, the build given with --compare (its launcher)",
}


class Case:
    """One command to time: argv, its stdin file, what to clear before each run, and its own environment."""

    def __init__(self, argv, stdin, clear=(), env=None):
        self.argv, self.stdin, self.clear, self.env = argv, stdin, clear, env or {}

    def run_once(self, env):
        """Milliseconds from spawn to exit; posix_spawn and waitpid keep the harness's own cost small."""
        env = {**env, **self.env}
        for path in self.clear:
            shutil.rmtree(path, ignore_errors=True)
        file_actions = [
            (os.POSIX_SPAWN_OPEN, 0, str(self.stdin), os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ]
        start = time.perf_counter()
        pid = os.posix_spawn(self.argv[0], self.argv, env, file_actions=file_actions)
        _, status = os.waitpid(pid, 0)
        elapsed = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            with open(self.stdin, "rb") as stdin:
                proc = subprocess.run(self.argv, stdin=stdin, capture_output=True, env=env)
            sys.exit(f"startup.py: {self.argv} failed: {proc.stdout.decode()}{proc.stderr.decode()}")
        return elapsed * 1000


def cases(work, python, artifact, host_local, compared=None):
    """The commands to compare, by row name; the plugin copies live in work."""
    shutil.copy2(artifact, work / "ecs-ipam")
    shutil.copy2(artifact, work / "ecs-ipam-cold")
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "pack.py"), "--python", python, "--stock",
         "--output", str(work / "ecs-ipam-stock")], check=True, stdout=subprocess.DEVNULL,
    )
    (work / "ecs.conf").write_text(json.dumps(ECS_CONFIG))
    (work / "host-local.conf").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "bench", "type": "bridge",
        "ipam": {"type": "host-local", "subnet": "169.254.172.0/22", "dataDir": str(work / "host-local")},
    }))
    empty, store = work / "ecs.conf", [work / "db"]
    unpacked = work / "unpacked"
    table = {
        "interpreter": Case([python, "-I", "-S", "-c", "pass"], empty),
        "reference-imports": Case([python, "-I", "-S", "-c", REFERENCE_IMPORTS], empty),
        "imports": Case([python, "-I", "-S", "-c", IMPORTS], empty),
        "direct": Case([python, "-I", "-S", "-c",
                        "import sys; sys.path.insert(0, sys.argv.pop(1)); from ecs_ipam.cli import main; main()",
                        "SITE_PACKAGES"], empty, store),
        "launcher": Case([str(work / "ecs-ipam")], empty, store),
        "logged": Case([str(work / "ecs-ipam")], empty, store,
                       {"ECS_CNI_LOG_FILE": str(work / "ecs-cni-ipam-plugin.log"), "ECS_CNI_LOGLEVEL": "info"}),
        "stock": Case([str(work / "ecs-ipam-stock")], empty, store),
    }
    if host_local and os.access(host_local, os.X_OK):
        table["host-local"] = Case([host_local], work / "host-local.conf", [work / "host-local"])
    with zipfile.ZipFile(artifact) as archive:
        build_id = json.loads(archive.read("environment.json"))["build_id"]
    table["cold"] = Case([str(work / "ecs-ipam-cold")], empty, store + [unpacked / f"ecs-ipam-cold_{build_id}"])
    site_packages = unpacked / f"ecs-ipam_{build_id}" / "site-packages"
    table["direct"].argv[-1] = str(site_packages)
    # The least any zipapp can do: what the launcher's warm path does, minus finding the copy.
    bare_app = work / "bare-zipapp"
    bare_app.mkdir()
    (bare_app / "__main__.py").write_text(
        f"import sys\nsys.path.insert(0, {str(site_packages)!r})\nfrom ecs_ipam.cli import main\nmain()\n"
    )
    zipapp.create_archive(bare_app, work / "ecs-ipam-bare-zipapp", interpreter=f"{python} -IS")
    table["zipapp"] = Case([str(work / "ecs-ipam-bare-zipapp")], empty, store)
    if compared is not None:  # another build's shipped file, side by side with this one
        shutil.copy2(compared, work / "ecs-ipam-compared")
        table["compared"] = Case([str(work / "ecs-ipam-compared")], empty, store)
    return table


def report(times, rounds):
    med = {name: statistics.median(values) for name, values in times.items()}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, {platform.system()} "
          f"{platform.release()}; {rounds} rounds; medians")
    print()
    print("| what runs | median | vs bare interpreter |")
    print("|---|---:|---:|")
    for name, label in LABELS.items():
        if name in med:
            print(f"| {label} | {med[name]:.1f} ms | {med[name] / med['interpreter']:.1f}x |")
    if {"direct", "imports", "zipapp", "stock"} <= set(med):
        report_parts(med)
    if {"compared", "launcher"} <= set(med):
        print()
        print(f"This build's ADD {med['launcher']:.2f} ms, the compared build's {med['compared']:.2f} ms: "
              f"{med['launcher'] / med['compared']:.3f}x")
    if {"logged", "launcher"} <= set(med):
        print()
        print(f"The call log: the shipped file's ADD with it {med['logged']:.2f} ms, without {med['launcher']:.2f} ms: "
              f"{med['logged'] / med['launcher']:.3f}x")


def report_parts(med):
    print()
    print("| the shipped file's ADD, by part | ms |")
    print("|---|---:|")
    print(f"| interpreter start | {med['interpreter']:.1f} |")
    print(f"| imports ({IMPORTS[len('import '):]}) | {med['imports'] - med['interpreter']:.1f} |")
    print(f"| our code (the rest of the ADD, including the store) | {med['direct'] - med['imports']:.1f} |")
    print(f"| zipapp start (any zipapp: runpy, zipimport, `__main__` from the zip) | {med['zipapp'] - med['direct']:.1f} |")
    print(f"| launcher (finding the unpacked copy) | {med['launcher'] - med['zipapp']:.1f} |")
    print(f"| (stock shiv bootstrap in place of the launcher) | ({med['stock'] - med['direct']:.1f}) |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--python", default=os.environ.get("HOST_PYTHON") or "/usr/bin/python3")
    parser.add_argument("--artifact", type=Path, default=Path(os.environ.get("ECS_IPAM_ARTIFACT", REPO / "dist" / "ecs-ipam")))
    parser.add_argument("--host-local", default="/usr/lib/cni/host-local")
    parser.add_argument("--compare", type=Path, metavar="ARTIFACT",
                        help="another build of the shipped file, timed in the same rounds (row 'compared')")
    parser.add_argument("--only", metavar="ROW,ROW", type=lambda text: text.split(","),
                        help=f"time only these rows (of {', '.join(LABELS)}); e.g. launcher,logged for the call log")
    args = parser.parse_args()
    if not args.artifact.is_file():
        sys.exit(f"startup.py: no artifact at {args.artifact}: run ./build.sh first")
    with tempfile.TemporaryDirectory(prefix="ecs-ipam-bench-") as scratch:
        work = Path(scratch)
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SHIV_ROOT": str(work / "unpacked"),
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "bench", "CNI_NETNS": "/var/run/netns/bench",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "IPAM_DB_PATH": str(work / "db" / "ipam.db"),
            "ECS_CNI_LOGLEVEL": "off",  # no call log but where a row asks for one, even where /log exists
        }
        table = cases(work, args.python, args.artifact, args.host_local, args.compare)
        if args.only:
            unknown = set(args.only) - set(table)
            if unknown or "interpreter" not in args.only:
                sys.exit(f"startup.py: --only takes rows of {', '.join(table)}, interpreter among them"
                         + (f"; not {', '.join(sorted(unknown))}" if unknown else ""))
            table = {name: table[name] for name in args.only}
        # Unpack the warm copies and let them write their bytecode before timing anything.
        for name, case in table.items():
            if name not in ("direct", "cold"):
                for _ in range(3):
                    case.run_once(env)
        times = {name: [] for name in table}
        names = list(table)
        for _ in range(args.rounds):
            random.shuffle(names)
            for name in names:
                times[name].append(table[name].run_once(env))
        report(times, args.rounds)


if __name__ == "__main__":
    main()
