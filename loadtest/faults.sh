#!/usr/bin/env bash
# Roost's fault suite: build release binaries of roost-proxy, roost-worker
# and roost-faults, then run roost-faults with this script's arguments.
#
#   loadtest/faults.sh kill9            # one scenario (sigstop, pg-restart, rolling, scale, cut, blip)
#   loadtest/faults.sh all              # every scenario, one summary table
#   loadtest/faults.sh all --short      # the CI version (under 4 minutes)
#
# Needs PostgreSQL's initdb/pg_ctl (/usr/lib/postgresql/*/bin or PATH); as
# root the cluster runs as the postgres user. Results go to
# loadtest/results/faults-<scenario>-<UTC stamp>/ unless --out DIR is given.
# Cargo's own variables apply to the build: CARGO_TARGET_DIR (the binaries
# are run from there; roost-faults finds the proxy and the worker beside
# itself) and CARGO_BUILD_JOBS, e.g. for a second checkout on a small machine:
#
#   CARGO_TARGET_DIR=/tmp/target-x CARGO_BUILD_JOBS=1 loadtest/faults.sh all --short
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release -p roost-proxy -p roost-builtins -p roost-loadtest --bin roost-proxy --bin roost-worker --bin roost-faults
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/release/roost-faults" "$@"
