#!/usr/bin/env bash
# Roost's ticket sale: build release binaries of roost-proxy, roost-worker
# and roost-tickets, then run roost-tickets with this script's arguments.
#
#   loadtest/tickets.sh kill9            # one run (plain, kill9, rolling)
#   loadtest/tickets.sh all              # every run, one summary table
#   loadtest/tickets.sh all --short      # the CI size (1,000 users instead of 5,000)
#
# Needs PostgreSQL's initdb/pg_ctl (/usr/lib/postgresql/*/bin or PATH); as
# root the cluster runs as the postgres user. Results go to
# loadtest/results/tickets-<run>-<UTC stamp>/ unless --out DIR is given.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release -p roost-proxy -p roost-builtins -p roost-loadtest --bin roost-proxy --bin roost-worker --bin roost-tickets
exec "$root/target/release/roost-tickets" "$@"
