#!/usr/bin/env bash
# Runs the public TUF conformance suite (github.com/theupdateframework/tuf-conformance)
# against `bauxite update tuf-client`. The suite is not vendored: pass a checkout of it.
#   scripts/tuf-conformance.sh /path/to/tuf-conformance [pytest args...]
# Needs python3 (venv) and faketime (apt-get install -y faketime); its Python packages
# come from PyPI into a venv under /tmp.
set -euo pipefail
suite=$(cd "${1:?usage: $0 TUF_CONFORMANCE_CHECKOUT [pytest args...]}" && pwd)
shift
cd "$(dirname "$0")/.."
command -v faketime >/dev/null || { echo "faketime is missing: apt-get install -y faketime" >&2; exit 1; }
venv=/tmp/tuf-conformance-venv
[ -x "$venv/bin/pytest" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q -e "$suite"; }
cargo build -q -p bauxite
target_dir=${CARGO_TARGET_DIR:-target}
case "$target_dir" in /*) ;; *) target_dir="$(pwd)/$target_dir" ;; esac
bin="$target_dir/debug/bauxite"
cd "$suite"
# The suite splits --entrypoint on spaces: the binary and its subcommand.
exec "$venv/bin/pytest" -v tuf_conformance --entrypoint "$bin update tuf-client" "$@"
