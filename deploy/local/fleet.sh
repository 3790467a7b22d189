#!/usr/bin/env bash
# Runs a local fleet: roost-proxy in front of 3 roost-workers sharing one
# SQLite file (roost-data/roost.db), all on 127.0.0.1, until Ctrl-C.
# Usage: deploy/local/fleet.sh [--debug]
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
ensure_build_deps

profile=release
[ "${1:-}" = "--debug" ] && profile=debug
flag=(); [ "$profile" = release ] && flag=(--release)
command -v curl >/dev/null || apt_install curl
cargo build "${flag[@]}" -p roost-proxy -p roost-worker
bin="$ROOT/target/$profile"
config="$ROOT/deploy/config/proxy.example.yaml"
store="sqlite://$ROOT/roost-data/roost.db"

# The fleet's secrets, fresh for each run unless already set.
secret() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
export ROOST_INTERNAL_TOKEN="${ROOST_INTERNAL_TOKEN:-$(secret)}"
export ROOST_ADMIN_TOKEN="${ROOST_ADMIN_TOKEN:-$(secret)}"

pids=()
stop() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -gt 0 ] && kill "${pids[@]}" 2>/dev/null && wait "${pids[@]}" 2>/dev/null
  echo "fleet stopped"
}
trap stop EXIT INT TERM

for i in 1 2 3; do
  "$bin/roost-worker" --id "w$i" --listen "127.0.0.1:900$i" --store "$store" \
    --config "$ROOT/deploy/config/worker.example.yaml" &
  pids+=($!)
done
"$bin/roost-proxy" --config "$config" &
pids+=($!)

for _ in $(seq 50); do
  curl -fs http://127.0.0.1:9090/admin/workers 2>/dev/null | grep -q '"healthy":true' && break
  sleep 0.1
done
cat <<MSG

Roost is running (proxy config: deploy/config/proxy.example.yaml; store: $store):
  proxy     http://127.0.0.1:8080/        try: curl -H 'x-user-id: alice' http://127.0.0.1:8080/v1/cart
  workers   http://127.0.0.1:9090/admin/workers
  routing   http://127.0.0.1:9090/admin/route?key=alice
  stock     curl -X PUT -H 'Authorization: Bearer $ROOST_ADMIN_TOKEN' -d '{"stock":100}' http://127.0.0.1:8080/v1/inventory/show-1
  metrics   http://127.0.0.1:9090/metrics (proxy), http://127.0.0.1:900{1,2,3}/metrics (workers)
More curl examples: README.md ("Entity API"). Ctrl-C stops everything.

MSG
wait
