#!/usr/bin/env bash
# Dependency boundaries CI enforces (issue 10, "crate layout first"):
#  - robot-side crates (the `bauxite` binary, `bauxite-forge`) never link the hub: no
#    `bauxite-dispatch` crate, no redb, no server side of tonic (its `server`/`router`
#    features, axum). They talk to the hub through `bauxite-dispatch-api` (`client`).
#  - the hub (`bauxite-dispatch`) does not build conduit's TUN device (tun-rs): it uses
#    conduit without default features (its types; at most the device-less `io` shell).
# Each check reads `cargo tree -e normal` (what links into the binary; dev-dependencies
# don't), with features, for that package alone.
set -euo pipefail
cd "$(dirname "$0")/.."

ROBOT_SIDE=(bauxite bauxite-forge)
failed=0

# Prints the normal dependency tree of $1 with features, one crate or feature per line.
tree() {
    cargo tree --locked -p "$1" -e normal,features --prefix none --quiet
}

# fail PACKAGE WHAT WHY: reports one violation.
fail() {
    echo "check-deps: FAIL: $1 depends on $2 ($3)." >&2
    failed=$((failed + 1))
}

for package in "${ROBOT_SIDE[@]}"; do
    if ! cargo metadata --locked --no-deps --format-version 1 --quiet |
        grep -q "\"name\":\"$package\""; then
        echo "check-deps: $package is not a workspace member; skipped"
        continue
    fi
    before=$failed
    deps=$(tree "$package")
    why="robot-side crates use bauxite-dispatch-api with the client feature, never the hub; see \`cargo tree -p $package -i CRATE\`"
    if grep -q '^bauxite-dispatch v' <<<"$deps"; then
        fail "$package" "the hub crate bauxite-dispatch" "$why"
    fi
    if grep -q '^redb v' <<<"$deps"; then
        fail "$package" "redb (the hub's database)" "$why"
    fi
    if grep -qE '^tonic feature "(server|router)"' <<<"$deps"; then
        fail "$package" "tonic's server side (feature \"server\" or \"router\")" "$why"
    fi
    if grep -q '^axum v' <<<"$deps"; then
        fail "$package" "axum (tonic's router)" "$why"
    fi
    if [ "$failed" -eq "$before" ]; then
        echo "check-deps: $package: no hub code in its dependency tree"
    fi
done

before=$failed
hub=$(tree bauxite-dispatch)
if grep -q '^tun-rs v' <<<"$hub"; then
    fail bauxite-dispatch "tun-rs (conduit's TUN device)" "the hub uses bauxite-conduit with default-features = false: it has no TUN device"
fi
if [ "$failed" -eq "$before" ]; then
    echo "check-deps: bauxite-dispatch: no TUN device in its dependency tree"
fi

if [ "$failed" -ne 0 ]; then
    echo "check-deps: dependency boundaries violated (see above)" >&2
    exit 1
fi
