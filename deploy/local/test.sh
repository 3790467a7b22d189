#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit and integration tests.
# Integration tests start real proxy and worker processes on 127.0.0.1, and
# run every store test against SQLite and Postgres: DATABASE_URL when it is
# set and answers, otherwise a throwaway cluster they start and stop.
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
ensure_build_deps
[ -n "${DATABASE_URL:-}" ] || ensure_postgres_binaries

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace
