#!/usr/bin/env bash
# Instructions per request of roost-proxy builds, under valgrind's callgrind:
# a repeatable count where timings on a shared machine are not (issue 13).
#
#   loadtest/bench/profile-proxy.sh [LABEL=]PROXY_BIN [[LABEL=]PROXY_BIN ...]
#
# Each proxy runs (threads: 1, no access log, key from x-user-id) in front of
# three roost-fixed-reply backends, under `valgrind --tool=callgrind`. After
# WARMUP requests' worth of warm-up the counters are zeroed; wrk then sends
# GET /v1/whoami with USERS distinct x-user-id values on CONNECTIONS
# connections for DURATION seconds; the counters are dumped, and the
# requests the proxy answered in that window are read off its /metrics.
# Prints, per build, instructions per request and the functions with the
# most instructions (self cost, inlined code counted where it landed).
# Raw callgrind files go to loadtest/results/profile-<UTC time>/.
#
# Settings (environment): DURATION (default 10), WARMUP (s, default 3),
# CONNECTIONS (default 8), USERS (default 10000), TOP (functions listed,
# default 25), PORT_BASE (default 18400). Needs valgrind, wrk, curl and
# cargo (it builds roost-fixed-reply); as root it installs missing packages.
# Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-8}
USERS=${USERS:-10000}
TOP=${TOP:-25}
PORT_BASE=${PORT_BASE:-18400}

[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 2; }
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
(cd "$ROOT" && cargo build --release -p roost-loadtest --bin roost-fixed-reply) >&2
OUT="$ROOT/loadtest/results/profile-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for i in 1 2 3; do
  "$TARGET_DIR/release/roost-fixed-reply" --id "w$i" --listen "127.0.0.1:$((PORT_BASE + i))" >"$OUT/backend-w$i.log" 2>&1 &
  PIDS+=($!)
done

LISTEN=$((PORT_BASE + 10))
ADMIN=$((PORT_BASE + 11))
cat >"$OUT/roost-proxy.yaml" <<EOF
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
EOF

cat >"$OUT/users.lua" <<EOF
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/whoami", {["x-user-id"] = "user-" .. (n % $USERS)})
end
EOF

# Requests the proxy has answered so far (every status, every worker).
answered() {
  curl -s "http://127.0.0.1:$ADMIN/metrics" |
    awk '/^roost_proxy_requests_total/ {sum += $NF} END {printf "%d\n", sum}'
}

echo "| build | instructions per request | requests measured |"
echo "|---|---:|---:|"
TOPS=""
for spec in "$@"; do
  label=${spec%%=*}; bin=${spec#*=}
  [ "$label" = "$spec" ] && label=$(basename "$(dirname "$(dirname "$bin")")")
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
  out="$OUT/callgrind.$label.out"
  log "$label: $bin under callgrind"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" --config "$OUT/roost-proxy.yaml" >"$OUT/proxy-$label.log" 2>&1 &
  vpid=$!
  PIDS+=("$vpid")
  for _ in $(seq 1 120); do
    curl -s -o /dev/null "http://127.0.0.1:$ADMIN/metrics" && break
    sleep 1
  done
  sleep 3 # the health checks mark the backends up
  wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$OUT/users.lua" "http://127.0.0.1:$LISTEN" >/dev/null
  callgrind_control -z "$vpid" >/dev/null
  before=$(answered)
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$OUT/users.lua" "http://127.0.0.1:$LISTEN" >"$OUT/wrk-$label.txt"
  after=$(answered)
  callgrind_control -d "$vpid" >/dev/null
  kill -INT "$vpid" 2>/dev/null || true
  wait "$vpid" 2>/dev/null || true
  requests=$((after - before - 1)) # the first /metrics read is in the window
  dump=$(find "$OUT" -name "callgrind.$label.out.*" | sort | tail -1)
  total=$(awk '/^summary:|^totals:/ {print $2; exit}' "$dump")
  printf '| %s | %s | %s |\n' "$label" "$(( total / requests ))" "$requests"
  TOPS+=$'\n'"#### $label: top $TOP functions by own instructions"$'\n\n```\n'
  TOPS+=$(callgrind_annotate --threshold=100 "$dump" 2>/dev/null | awk '/^-+$/ {n++} n >= 3' | grep -v -e '^-' -e '(100.0%)' | sed -n "3,$((TOP + 2))p")
  TOPS+=$'\n```\n'
done
echo "$TOPS"
echo
echo "- Command: \`loadtest/bench/profile-proxy.sh $*\` (DURATION=$DURATION, WARMUP=$WARMUP, CONNECTIONS=$CONNECTIONS, USERS=$USERS)."
echo "- Raw callgrind files: ${OUT#"$ROOT"/}/"
