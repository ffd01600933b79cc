#!/usr/bin/env bash
# The OTA demonstration (docs/demos/ota_resilient/README.md): a real hub and a real robot
# daemon on loopback, unprivileged, on embedded defaults, and the seed's three phases per
# trial: a clean deployment of a virtual package, kill -9 of the robot's daemon at about
# 47 % and a restart, 8 bytes tampered in the staged image before activation. A 1 kHz
# control loop on the Critical lane runs idle before and during every update. Prints the
# results table and the timeline from measured values and writes an MCAP recording.
#
#   docs/demos/ota_resilient/run.sh [--trials N] [--size 3GiB] [--quick] [--keep]
#                                    [--seed N] [--out DIR] [--debug] [--rt]
#
#   --trials N   trials of the three phases (default 10, as the seed)
#   --size S     the virtual package's size (default 3GiB; KiB/MiB/GiB suffixes)
#   --quick      a small package (64MiB) and fewer idle probes: the CI check
#   --keep       keep the work directory (hub data, robot state roots, logs)
#   --seed N     the virtual images' seed (default 2026)
#   --out DIR    where the recording and tables go (default target/ota_resilient/<time>)
#   --debug      build and use debug binaries (faster to build, slower to run)
#   --rt         hub and robot daemon at SCHED_FIFO 10 (chrt), as edge/systemd/bauxite.service
#                runs the daemon (the orchestrator at 20); needs root or an RLIMIT_RTPRIO of 20
#
# Exit status 0 only when every phase of every trial passed its checks.
set -euo pipefail
cd "$(dirname "$0")/../../.."

trials=10 size=3GiB seed=2026 keep=0 profile=release out="" idle=3000 timeout=600 wrap=() rt=()
while [ $# -gt 0 ]; do
    case "$1" in
        --trials) trials="$2"; shift 2 ;;
        --size) size="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --quick) size=64MiB idle=500 timeout=300; shift ;;
        --keep) keep=1; shift ;;
        --debug) profile=debug; shift ;;
        --rt) wrap=(--hub-wrap "chrt -f 10" --robot-wrap "chrt -f 10") rt=(chrt -f 20); shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

target="${CARGO_TARGET_DIR:-target}"
flags=(--locked --quiet)
[ "$profile" = release ] && flags+=(--release)
echo "building ($profile): bauxite, bauxite-dispatch, the orchestrator (benches example ota_demo)"
cargo build "${flags[@]}" -p bauxite -p bauxite-dispatch --bins
cargo build "${flags[@]}" -p bauxite-benches --example ota_demo
bin="$target/$profile"

work="$(mktemp -d "${TMPDIR:-/tmp}/bauxite-ota-demo.XXXXXX")"
[ -n "$out" ] || out="$target/ota_resilient/$(date -u +%Y%m%dT%H%M%SZ)"
orchestrator=""
cleanup() {
    status=$?
    trap - EXIT INT TERM
    # The orchestrator kills its children when it ends; these are for the case where it
    # was killed first. Only the pids it recorded, never by name.
    if [ -n "$orchestrator" ]; then kill -TERM "$orchestrator" 2>/dev/null || true; fi
    if [ -f "$work/pids" ]; then
        while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done < "$work/pids"
    fi
    if [ "$keep" = 1 ]; then
        echo "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# With --rt the orchestrator (and the status commands it runs) sits above the daemons, so
# two real-time daemons on two cores cannot starve the reads the power cut is timed by.
${rt[@]+"${rt[@]}"} "$bin/examples/ota_demo" --bauxite "$bin/bauxite" --dispatch "$bin/bauxite-dispatch" \
    --work "$work" --out "$out" --trials "$trials" --size "$size" --seed "$seed" \
    --idle-probes "$idle" --timeout "$timeout" ${wrap[@]+"${wrap[@]}"} &
orchestrator=$!
wait "$orchestrator"
