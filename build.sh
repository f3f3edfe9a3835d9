#!/usr/bin/env bash
# Builds, tests and demonstrates ecs-ipam's single-file plugin (dist/ecs-ipam).
#
#   ./build.sh          build dist/ecs-ipam and print its sha256
#   ./build.sh test     build, then run the test suite against the built file
#   ./build.sh demo     build, then ADD and DEL a container on a scratch store
#   ./build.sh bench    build, then measure start-up time (benchmarks/startup.py)
#
# Settings (environment):
#   PYTHON       interpreter for the dev venv .venv (default /usr/bin/python3; needs dbm.gnu)
#   HOST_PYTHON  interpreter the artifact's shebang names (default /usr/bin/python3; needs dbm.gnu)
#   SOURCE_DATE_EPOCH  build time stamped into the file (default: the commit time of HEAD)
set -euo pipefail

cd "$(dirname "$0")"
PYTHON=${PYTHON:-/usr/bin/python3}
export HOST_PYTHON=${HOST_PYTHON:-/usr/bin/python3}
VENV=.venv
ARTIFACT=dist/ecs-ipam
# The artifact carries shiv's bootstrap, so its bytes depend on shiv's version: pin it.
SHIV_REQUIREMENT="shiv==1.0.8"
# pytest runs the tests; setuptools and wheel let the pip-install test build offline.
TEST_REQUIREMENTS=("pytest>=7" "setuptools>=61" "wheel")

say() { printf '%s\n' "$*" >&2; }
die() { say "build.sh: $*"; exit 1; }

install_hint() {
    cat >&2 <<'EOF'
Install a Python 3 with dbm.gnu and venv, then run this again:
  Debian/Ubuntu:              apt-get install python3 python3-venv python3-gdbm
  Alpine:                     apk add python3 py3-gdbm
  Fedora/Amazon Linux 2023:   dnf install python3   (dbm.gnu is included)
or point PYTHON at one that has them, e.g. PYTHON=/usr/local/bin/python3.12 ./build.sh test
EOF
}

has_dbm_gnu() { "$1" -c 'import dbm.gnu' >/dev/null 2>&1; }

# Make .venv from $PYTHON (once) and put the pinned shiv and pytest in it.
ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        [ -x "$PYTHON" ] || { say "build.sh: no Python at $PYTHON"; install_hint; exit 1; }
        has_dbm_gnu "$PYTHON" || { say "build.sh: $PYTHON has no dbm.gnu"; install_hint; exit 1; }
        "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 \
            || { say "build.sh: $PYTHON cannot make a venv (no ensurepip)"; install_hint; exit 1; }
        say "build.sh: creating $VENV from $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi
    has_dbm_gnu "$VENV/bin/python" \
        || die "$VENV was made from a Python without dbm.gnu: remove it (rm -rf $VENV) and run again, with PYTHON=... if needed"
    if ! "$VENV/bin/python" -c '
import sys, shiv, pytest, wheel
sys.exit(shiv.__version__ != sys.argv[1])' "${SHIV_REQUIREMENT#shiv==}" >/dev/null 2>&1; then
        say "build.sh: installing $SHIV_REQUIREMENT ${TEST_REQUIREMENTS[*]} into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SHIV_REQUIREMENT" "${TEST_REQUIREMENTS[@]}" \
            || die "could not install $SHIV_REQUIREMENT ${TEST_REQUIREMENTS[*]} from PyPI into $VENV"
    fi
    # The package itself, editable, so that tests may run `.venv/bin/python -c 'import ecs_ipam'` anywhere.
    local here=$PWD
    if ! (cd / && "$here/$VENV/bin/python" -c '
import sys, ecs_ipam
sys.exit(not ecs_ipam.__file__.startswith(sys.argv[1]))' "$here/ecs_ipam/") >/dev/null 2>&1; then
        say "build.sh: installing this checkout into $VENV (editable)"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . \
            || die "could not install this checkout into $VENV (pip install -e .)"
    fi
}

build() {
    ensure_venv
    "$VENV/bin/python" tools/pack.py --python "$HOST_PYTHON" --output "$ARTIFACT"
}

run_tests() {
    build
    local status=0
    ECS_IPAM_ARTIFACT="$PWD/$ARTIFACT" "$VENV/bin/python" -m pytest "$@" || status=$?
    if [ "$status" -eq 5 ]; then
        die "pytest collected no tests"
    fi
    return "$status"
}

# Run the plugin once the way a runtime does: a bare environment, the config on stdin.
cni() {
    local command=$1 config=$2 scratch=$3
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        CNI_COMMAND="$command" CNI_CONTAINERID=demo-container CNI_NETNS=/var/run/netns/demo \
        CNI_IFNAME=eth0 CNI_PATH=/opt/cni/bin IPAM_DB_PATH="$scratch/ipam.db" \
        "$PWD/$ARTIFACT" <"$config"
}

demo() {
    build
    local scratch
    scratch=$(mktemp -d)
    # shellcheck disable=SC2064  # expand now: the path is fixed
    trap "rm -rf '$scratch'" EXIT
    cat >"$scratch/demo.conf" <<'EOF'
{
  "cniVersion": "1.0.0",
  "name": "ecs-demo",
  "type": "ecs-bridge",
  "ipam": {
    "type": "ecs-ipam",
    "id": "demo-task",
    "ipv4-subnet": "169.254.172.0/22",
    "ipv4-routes": [{"dst": "169.254.170.2/32"}],
    "ipv6-subnet": "fd00:ec2::/64"
  }
}
EOF
    echo "--- network config (the plugin's stdin):"
    cat "$scratch/demo.conf"
    echo "--- ADD, store $scratch/ipam.db:"
    cni ADD "$scratch/demo.conf" "$scratch" || die "ADD failed (exit $?)"
    echo "--- held now (ecs-ipam db list):"
    "$PWD/$ARTIFACT" db list --db "$scratch/ipam.db" || die "db list failed (exit $?)"
    echo "--- DEL (prints nothing on success):"
    cni DEL "$scratch/demo.conf" "$scratch" || die "DEL failed (exit $?)"
    echo "--- held after DEL:"
    "$PWD/$ARTIFACT" db list --db "$scratch/ipam.db" || die "db list failed (exit $?)"
    echo "--- ADD and DEL both exited 0"
}

case "${1:-build}" in
    build) build ;;
    test) shift; run_tests "$@" ;;
    demo) demo ;;
    bench) build; shift; "$VENV/bin/python" benchmarks/startup.py "$@" ;;
    -h | --help | help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) say "usage: ./build.sh [build|test|demo|bench|help]"; exit 2 ;;
esac
