#!/usr/bin/env bash
# Instructions per request of roost-proxy or roost-worker builds, under
# valgrind's callgrind: a repeatable count where timings on a shared machine
# are not (issue 13).
#
#   loadtest/bench/profile.sh proxy  [LABEL=]PROXY_BIN  [[LABEL=]PROXY_BIN ...]
#   loadtest/bench/profile.sh worker [LABEL=]WORKER_BIN [[LABEL=]WORKER_BIN ...]
#
# proxy: each proxy runs (threads: 1, no access log, key from x-user-id) in
# front of three roost-fixed-reply backends; wrk sends GET /v1/whoami with
# USERS distinct x-user-id values.
#
# worker: each worker runs alone on STORE (default: a SQLite file in a temp
# dir, so the flusher's share is SQLite's, not Postgres's client side);
# wrk sends it loadtest/bench/cart.lua's LINE requests directly (default
# write-behind: cart adds and removes; "ceiling": the same requests to the
# no-state /v1/whoami), as one of worker.sh's three direct workers would
# get them. An activation pass claims every user's cart first.
#
# Under `valgrind --tool=callgrind`, after WARMUP seconds of load the
# counters are zeroed; wrk then runs CONNECTIONS connections for DURATION
# seconds; the counters are dumped, and the requests answered in that
# window are read off the server's /metrics. Prints, per build,
# instructions per request and the functions with the most instructions
# (self cost, inlined code counted where it landed). Raw callgrind files go
# to loadtest/results/profile-<UTC time>/.
#
# Settings (environment): DURATION (default 10), WARMUP (s, default 3),
# CONNECTIONS (default 8), USERS (default 10000; worker: users x 2 devices),
# TOP (functions listed, default 25), PORT_BASE (default 18400), SERVER_CPU
# (the one CPU the server may run on, as in worker.sh and proxy.sh, so its
# runtime has the one thread it has there; default 1), LINE and STORE
# (worker only). Needs valgrind, wrk, curl and cargo (it builds
# roost-fixed-reply); as root it installs missing packages. Everything
# listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-8}
USERS=${USERS:-10000}
TOP=${TOP:-25}
PORT_BASE=${PORT_BASE:-18400}
LINE=${LINE:-write-behind}
SERVER_CPU=${SERVER_CPU:-1}

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
TARGET=$1
shift
case "$TARGET" in proxy | worker) ;; *) usage ;; esac
log() { printf '[profile %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

missing=()
command -v valgrind >/dev/null || missing+=(valgrind)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "install: sudo apt-get install -y ${missing[*]}" >&2; exit 1; }
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >&2
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT="$ROOT/loadtest/results/profile-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

LISTEN=$((PORT_BASE + 10))
ADMIN=$((PORT_BASE + 11))

if [ "$TARGET" = proxy ]; then
  (cd "$ROOT" && cargo build --release -p roost-loadtest --bin roost-fixed-reply) >&2
  for i in 1 2 3; do
    "$TARGET_DIR/release/roost-fixed-reply" --id "w$i" --listen "127.0.0.1:$((PORT_BASE + i))" >"$OUT/backend-w$i.log" 2>&1 &
    PIDS+=($!)
  done
  cat >"$OUT/roost-proxy.yaml" <<YAML
listen: 127.0.0.1:$LISTEN
admin_listen: 127.0.0.1:$ADMIN
hash_seed: "roost-bench"
key:
  sources: [{header: x-user-id}]
  missing: reject
workers:
  - {id: w1, addr: 127.0.0.1:$((PORT_BASE + 1)), weight: 1}
  - {id: w2, addr: 127.0.0.1:$((PORT_BASE + 2)), weight: 1}
  - {id: w3, addr: 127.0.0.1:$((PORT_BASE + 3)), weight: 1}
threads: 1
access_log: false
YAML
  cat >"$OUT/users.lua" <<LUA
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/whoami", {["x-user-id"] = "user-" .. (n % $USERS)})
end
LUA
  SERVED=roost_proxy_requests_total
  LOAD=(-s "$OUT/users.lua" "http://127.0.0.1:$LISTEN")
  LOAD_ENV=()
  WHAT="GET /v1/whoami through the proxy, $USERS users"
else
  STORE=${STORE:-sqlite://$OUT/store.sqlite}
  cat >"$OUT/worker.yaml" <<YAML
flush_interval_ms: 50
flush_batch_max: 512
idle_ms: 3600000
YAML
  SERVED=roost_worker_request_seconds_count
  LOAD=(-s "$SCRIPT_DIR/cart.lua" "http://127.0.0.1:$LISTEN" -- direct "$LINE" "$USERS" profile)
  LOAD_ENV=(env "ROOST_WORKER_PORTS=$LISTEN")
  WHAT="cart.lua $LINE, direct, $USERS users x 2 devices, store ${STORE%%://*}"
fi

# start LABEL BIN: the server under callgrind, in the background (sets VPID).
start() {
  local label=$1 bin=$2 out="$OUT/callgrind.$1.out"
  if [ "$TARGET" = proxy ]; then
    taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$bin" --config "$OUT/roost-proxy.yaml" >"$OUT/proxy-$label.log" 2>&1 &
  else
    # Each build gets its own store: none inherits another's rows.
    taskset -c "$SERVER_CPU" valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$bin" --id "profile-$label" --listen "127.0.0.1:$LISTEN" --admin-listen "127.0.0.1:$ADMIN" \
      --store "${STORE/store.sqlite/store-$label.sqlite}" --config "$OUT/worker.yaml" >"$OUT/worker-$label.log" 2>&1 &
  fi
  VPID=$!
  PIDS+=("$VPID")
  for _ in $(seq 1 120); do
    curl -s -o /dev/null "http://127.0.0.1:$ADMIN/metrics" && break
    sleep 1
  done
  if [ "$TARGET" = proxy ]; then
    sleep 3 # the health checks mark the backends up
  else
    # Claim every cart before the measured window (cart.lua's activate line).
    "${LOAD_ENV[@]}" wrk -t1 -c"$CONNECTIONS" -d120s "${LOAD[@]:0:3}" direct activate "$USERS" profile >/dev/null &
    local activating=$!
    until [ "$(answered)" -ge "$USERS" ] || ! kill -0 "$activating" 2>/dev/null; do sleep 1; done
    kill -INT "$activating" 2>/dev/null || true
    wait "$activating" 2>/dev/null || true
  fi
}

# Requests the server has answered so far (every status, every route).
answered() {
  curl -s "http://127.0.0.1:$ADMIN/metrics" |
    awk -v name="$SERVED" 'index($1, name) == 1 {sum += $NF} END {printf "%d\n", sum}'
}

echo "| build | instructions per request | requests measured |"
echo "|---|---:|---:|"
TOPS=""
for spec in "$@"; do
  label=${spec%%=*}; bin=${spec#*=}
  [ "$label" = "$spec" ] && label=$(basename "$(dirname "$(dirname "$bin")")")
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
  log "$label: $bin under callgrind"
  start "$label" "$bin"
  "${LOAD_ENV[@]}" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "${LOAD[@]}" >/dev/null
  callgrind_control -z "$VPID" >/dev/null
  before=$(answered)
  "${LOAD_ENV[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "${LOAD[@]}" >"$OUT/wrk-$label.txt"
  after=$(answered)
  callgrind_control -d "$VPID" >/dev/null
  kill -INT "$VPID" 2>/dev/null || true
  wait "$VPID" 2>/dev/null || true
  requests=$((after - before - 1)) # the first /metrics read is in the window
  dump=$(find "$OUT" -name "callgrind.$label.out.*" | sort | tail -1)
  total=$(awk '/^summary:|^totals:/ {print $2; exit}' "$dump")
  printf '| %s | %s | %s |\n' "$label" "$((total / requests))" "$requests"
  TOPS+=$'\n'"#### $label: top $TOP functions by own instructions"$'\n\n```\n'
  TOPS+=$(callgrind_annotate --threshold=100 "$dump" 2>/dev/null | awk '/^-+$/ {n++} n >= 3' | grep -v -e '^-' -e '(100.0%)' | sed -n "3,$((TOP + 2))p")
  TOPS+=$'\n```\n'
done
echo "$TOPS"
echo
echo "- Load: $WHAT."
echo "- Command: \`loadtest/bench/profile.sh $TARGET $*\` (DURATION=$DURATION, WARMUP=$WARMUP, CONNECTIONS=$CONNECTIONS, USERS=$USERS)."
echo "- Raw callgrind files: ${OUT#"$ROOT"/}/"
