#!/usr/bin/env bash
# Runs a local fleet: roost-proxy in front of 3 roost-workers sharing one
# SQLite file (roost-data/roost.db), all on 127.0.0.1, until Ctrl-C.
# Each process logs to roost-data/logs/NAME.log. If one does not come up
# healthy within ROOST_START_TIMEOUT_S seconds (default 30), or exits later,
# the fleet stops and the script exits 1 with the end of that process's log.
# Usage: deploy/local/fleet.sh [--debug]
# ROOST_WORKER_BIN, ROOST_PROXY_BIN: run these binaries instead of the build
# (an application's own worker binary, say).
# ROOST_WORKER_CONFIG, ROOST_PROXY_CONFIG: these config files instead of
# deploy/config/{worker,proxy}.example.yaml (the worker example configures
# the built-in kinds; a worker serving other kinds needs its own).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
ensure_build_deps

profile=release
[ "${1:-}" = "--debug" ] && profile=debug
flag=(); [ "$profile" = release ] && flag=(--release)
command -v curl >/dev/null || apt_install curl
cargo build "${flag[@]}" -p roost-proxy -p roost-builtins
worker_bin="${ROOST_WORKER_BIN:-$ROOT/target/$profile/roost-worker}"
proxy_bin="${ROOST_PROXY_BIN:-$ROOT/target/$profile/roost-proxy}"
config="${ROOST_PROXY_CONFIG:-$ROOT/deploy/config/proxy.example.yaml}"
worker_config="${ROOST_WORKER_CONFIG:-$ROOT/deploy/config/worker.example.yaml}"
store="sqlite://$ROOT/roost-data/roost.db"
logs="$ROOT/roost-data/logs"
timeout_s="${ROOST_START_TIMEOUT_S:-30}"
mkdir -p "$logs"

# The fleet's secrets, fresh for each run unless already set: the proxies'
# token (opens the workers' entity API), the workers' own token for calls
# between them (opens their internal routes; never given to a proxy), and
# the admin token.
secret() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
export ROOST_PROXY_TOKEN="${ROOST_PROXY_TOKEN:-$(secret)}"
export ROOST_INTERNAL_TOKEN="${ROOST_INTERNAL_TOKEN:-$(secret)}"
export ROOST_ADMIN_TOKEN="${ROOST_ADMIN_TOKEN:-$(secret)}"

# One entry per process: its name, pid, and the URL that answers 200 with
# a body matching the pattern once it is healthy.
names=(); pids=(); urls=(); patterns=()
stop() {
  trap - EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  echo "fleet stopped"
}
trap stop EXIT
trap 'exit 130' INT TERM

# launch NAME URL PATTERN COMMAND...: run COMMAND in the background, its
# output in $logs/NAME.log (a missing binary's error included).
launch() {
  local name=$1 url=$2 pattern=$3; shift 3
  "$@" >"$logs/$name.log" 2>&1 &
  names+=("$name"); pids+=($!); urls+=("$url"); patterns+=("$pattern")
}

# fail I WHY: say why process I failed, show the end of its log, exit 1
# (the EXIT trap stops the others).
fail() {
  echo "fleet.sh: ${names[$1]} $2; the end of $logs/${names[$1]}.log:" >&2
  tail -n 20 "$logs/${names[$1]}.log" | sed 's/^/  /' >&2
  exit 1
}

# exited I: whether process I has exited (reaped, its status in $status).
exited() {
  kill -0 "${pids[$1]}" 2>/dev/null && return 1
  status=0; wait "${pids[$1]}" 2>/dev/null || status=$?
}

for i in 1 2 3; do
  launch "w$i" "http://127.0.0.1:900$i/readyz" '"ready"' \
    "$worker_bin" --id "w$i" --listen "127.0.0.1:900$i" --admin-listen "127.0.0.1:910$i" \
    --store "$store" --config "$worker_config"
done
launch proxy "http://127.0.0.1:9090/admin/workers" '"healthy":true' "$proxy_bin" --config "$config"

# Every process must be running and healthy within the timeout.
deadline=$((SECONDS + timeout_s))
while :; do
  waiting=()
  for i in "${!names[@]}"; do
    exited "$i" && fail "$i" "exited (status $status) while starting"
    curl -fs --max-time 1 "${urls[$i]}" 2>/dev/null | grep -q "${patterns[$i]}" || waiting+=("$i")
  done
  [ ${#waiting[@]} -eq 0 ] && break
  [ "$SECONDS" -ge "$deadline" ] && fail "${waiting[0]}" "is not healthy after ${timeout_s}s (${urls[${waiting[0]}]})"
  sleep 0.2
done

cat <<MSG

Roost is running (proxy config: $config; worker config: $worker_config; store: $store):
  proxy     http://127.0.0.1:8080/        try: curl -H 'x-user-id: alice' http://127.0.0.1:8080/v1/cart
  workers   http://127.0.0.1:9090/admin/workers
  routing   http://127.0.0.1:9090/admin/route?key=alice
  stock     curl -X PUT -H 'Authorization: Bearer $ROOST_ADMIN_TOKEN' -d '{"stock":100}' http://127.0.0.1:8080/v1/inventory/show-1
  metrics   http://127.0.0.1:9090/metrics (proxy), http://127.0.0.1:910{1,2,3}/metrics (workers' admin listeners)
  logs      $logs/{w1,w2,w3,proxy}.log
More curl examples: README.md ("Entity API"). Ctrl-C stops everything.

MSG

# Until Ctrl-C, or until one of them exits.
wait -n "${pids[@]}" || true
for i in "${!names[@]}"; do
  exited "$i" && fail "$i" "exited (status $status)"
done
