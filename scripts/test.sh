#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, docs, every test. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CARGO_TERM_COLOR=never
# A clean CI build gains nothing from incremental state, which would take gigabytes of disk.
export CARGO_INCREMENTAL=0

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# conduit builds without its TUN device (the hub's build: `io` only) and without any IO.
cargo clippy -p bauxite-conduit --no-default-features --features io --all-targets --locked -- -D warnings
cargo clippy -p bauxite-conduit --no-default-features --all-targets --locked -- -D warnings
bash scripts/check-deps.sh
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
cargo test --workspace --locked
# The OTA demonstration's quick mode: real hub and robot, the three phases on a 64 MiB package.
bash scripts/ota-demo-quick.sh
