#!/usr/bin/env bash
# The end-to-end demo on embedded defaults: no external services, no root needed.
#   1. QoS: two nodes on a simulated link (`bauxite demo`, virtual clock).
#   2. OTA: a real hub and robot on loopback, one trial of each of the three phases of
#      docs/demos/ota_resilient (clean 3 GiB deployment, kill -9 at ~47 %, tampering).
#
#   scripts/demo.sh [QOS OPTIONS] [--ota-trials N] [--ota-size SIZE] [--no-ota]
#
# QOS OPTIONS go to `bauxite demo` (e.g. --link-mbps 50 --bulk-seconds 10 --seed 7).
set -euo pipefail
cd "$(dirname "$0")/.."

ota=1 ota_trials=1 ota_size=3GiB qos=()
while [ $# -gt 0 ]; do
    case "$1" in
        --ota-trials) ota_trials="$2"; shift 2 ;;
        --ota-size) ota_size="$2"; shift 2 ;;
        --no-ota) ota=0; shift ;;
        *) qos+=("$1"); shift ;;
    esac
done

bash scripts/setup.sh
echo "== QoS lanes: two nodes on a simulated 20 Mbit/s link =="
cargo run --release --locked --quiet -p bauxite -- demo ${qos[@]+"${qos[@]}"}
if [ "$ota" = 1 ]; then
    echo
    echo "== OTA updates: a real hub and robot on loopback, $ota_trials trial(s) of the three phases =="
    docs/demos/ota_resilient/run.sh --trials "$ota_trials" --size "$ota_size"
    echo "The seed's ten trials: docs/demos/ota_resilient/run.sh (or scripts/demo.sh --ota-trials 10)."
fi
