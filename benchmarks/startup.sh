#!/usr/bin/env bash
# Where ecs-ipam's start-up time goes: one side-by-side hyperfine run, medians, on this machine.
#
#   benchmarks/startup.sh [RUNS]        (./build.sh bench builds first, then runs this)
#
# Rows: the bare interpreter; the interpreter importing what an ADD needs; the plugin's ADD
# run straight from its unpacked site-packages (no zipapp); the shipped file's ADD (our
# launcher); the same package built by stock shiv; and host-local's ADD for reference.
# Every ADD starts on an empty store. Needs hyperfine (Debian: apt-get install hyperfine).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-200}
PY=${HOST_PYTHON:-/usr/bin/python3}
ARTIFACT=${ECS_IPAM_ARTIFACT:-$PWD/dist/ecs-ipam}
HOST_LOCAL=${HOST_LOCAL:-/usr/lib/cni/host-local}
command -v hyperfine >/dev/null || { echo "startup.sh: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
[ -x "$ARTIFACT" ] || { echo "startup.sh: no artifact at $ARTIFACT: run ./build.sh first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/python tools/pack.py --python "$PY" --stock --output "$work/ecs-ipam-stock" >/dev/null
cp "$ARTIFACT" "$work/ecs-ipam"

export SHIV_ROOT="$work/unpacked" CNI_COMMAND=ADD CNI_CONTAINERID=bench CNI_NETNS=/var/run/netns/bench
export CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni IPAM_DB_PATH="$work/db/ipam.db"
cat >"$work/ecs.conf" <<'CONF'
{"cniVersion": "1.0.0", "name": "bench", "type": "ecs-bridge",
 "ipam": {"type": "ecs-ipam", "ipv4-subnet": "169.254.172.0/22", "ipv4-routes": [{"dst": "169.254.170.2/32"}]}}
CONF
cat >"$work/host-local.conf" <<CONF
{"cniVersion": "1.0.0", "name": "bench", "type": "bridge",
 "ipam": {"type": "host-local", "subnet": "169.254.172.0/22", "dataDir": "$work/host-local"}}
CONF

# Unpack both archives once, so every timed run is a warm start, as on a running host.
"$work/ecs-ipam" --version >/dev/null
"$work/ecs-ipam-stock" --version >/dev/null
site_packages=$(echo "$SHIV_ROOT"/ecs-ipam_*/site-packages)

names=(interpreter imports direct launcher stock host-local)
commands=(
    "$PY -I -S -c pass"
    "$PY -I -S -c 'import json, ipaddress, fcntl, dbm.gnu'"
    "$PY -I -S -c 'import sys; sys.path.insert(0, \"$site_packages\"); from ecs_ipam.cli import main; main()' <$work/ecs.conf"
    "$work/ecs-ipam <$work/ecs.conf"
    "$work/ecs-ipam-stock <$work/ecs.conf"
)
if [ -x "$HOST_LOCAL" ]; then
    commands+=("$HOST_LOCAL <$work/host-local.conf")
else
    names=("${names[@]:0:5}")
fi
for i in "${!commands[@]}"; do args+=(-n "${names[$i]}" "${commands[$i]}"); done

hyperfine --style basic --warmup 10 --runs "$RUNS" --export-json "$work/results.json" \
    --prepare "rm -rf $work/db $work/host-local" "${args[@]}" >&2

"$PY" - "$work/results.json" <<'REPORT'
import json, os, platform, statistics, sys, time

results = {r["command"]: statistics.median(r["times"]) * 1000 for r in json.load(open(sys.argv[1]))["results"]}
ms = lambda name: results[name]
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}; medians")
print()
print("| what runs | median | vs bare interpreter |")
print("|---|---:|---:|")
labels = {
    "interpreter": "bare interpreter (`python3 -I -S -c pass`)",
    "imports": "+ `import json, ipaddress, fcntl, dbm.gnu`",
    "direct": "ecs-ipam ADD from the unpacked package, no zipapp",
    "launcher": "**ecs-ipam ADD, the shipped file (launcher)**",
    "stock": "ecs-ipam ADD, stock shiv bootstrap",
    "host-local": "host-local ADD (reference)",
}
for name, label in labels.items():
    if name in results:
        print(f"| {label} | {ms(name):.1f} ms | {ms(name) / ms('interpreter'):.1f}x |")
print()
print("| share of the shipped file's ADD | ms |")
print("|---|---:|")
print(f"| interpreter | {ms('interpreter'):.1f} |")
print(f"| imports (json, ipaddress, fcntl, dbm.gnu) | {ms('imports') - ms('interpreter'):.1f} |")
print(f"| our code (the rest of the ADD) | {ms('direct') - ms('imports'):.1f} |")
print(f"| zipapp start and launcher | {ms('launcher') - ms('direct'):.1f} |")
print(f"| (stock shiv bootstrap instead of the launcher) | ({ms('stock') - ms('direct'):.1f}) |")
REPORT
