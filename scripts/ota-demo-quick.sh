#!/usr/bin/env bash
# CI check of the OTA demonstration (docs/demos/ota_resilient/run.sh) in its quick mode: a
# 64 MiB virtual package, one trial of the three phases, debug binaries. Fails unless the
# demo exits 0, every phase prints its verdict, the power cut retransferred 0 verified
# bytes, and the MCAP recording was written.
set -euo pipefail
cd "$(dirname "$0")/.."

out="$(mktemp -d "${TMPDIR:-/tmp}/bauxite-ota-quick.XXXXXX")"
trap 'rm -rf "$out"' EXIT

log="$out/run.log"
if ! docs/demos/ota_resilient/run.sh --quick --trials 1 --debug --out "$out/result" >"$log" 2>&1; then
    cat "$log"
    echo "ota-demo-quick: run.sh --quick failed" >&2
    exit 1
fi

fail=0
expect() {
    if ! grep -Eq "$1" "$log"; then
        echo "ota-demo-quick: missing in the output: $1" >&2
        fail=1
    fi
}
expect 'phase 1 \(clean deployment\): [0-9]+ chunks verified, VALID, active 2\.0\.0 -> PASS'
expect 'phase 2 \(power cut: kill -9, restart\): cut at [0-9.]+ %, CHECKPOINT_LOADED \([1-9][0-9]* chunks\), 0 verified bytes retransferred, VALID, active 3\.0\.0 -> PASS'
expect 'phase 3 \(8 bytes tampered in the staged image\): INVALID_SIGNATURE_REJECTED .*ATOMIC_ROLLED_BACK, staging purged, current still 3\.0\.0 -> PASS'
expect '\*\*Data retransferred after power cut\*\* \| 0 B of verified chunks'
expect '^RESULT: PASS \(3 phases in 1 trials\)'
if [ ! -s "$out/result/ota_resilient.mcap" ]; then
    echo "ota-demo-quick: no MCAP recording at $out/result/ota_resilient.mcap" >&2
    fail=1
fi
if [ "$fail" = 1 ]; then
    cat "$log"
    exit 1
fi
grep -E '^trial|^RESULT' "$log"
