#!/usr/bin/env bash
# The end-to-end demo on embedded defaults: no external services, no root needed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo run --release --locked --quiet -p bauxite -- demo "$@"
