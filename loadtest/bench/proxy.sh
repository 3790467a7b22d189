#!/usr/bin/env bash
# Proxy benchmark: roost-proxy vs nginx vs HAProxy in front of the same three
# backends, in two layouts, with direct-to-one-backend baselines.
#
#   loadtest/bench/proxy.sh [-b "light workers"] [-d SECONDS] [-w SECONDS]
#                           [-r REPS] [-c CONNECTIONS]
#                           [-t "direct direct-light roost nginx haproxy"]
#
# Layouts (-b), each measured in turn with its own summary table:
#   light    three roost-fixed-reply backends (a bare hyper server answering
#            every request with a fixed 200 JSON, loadtest/src/fixed_reply.rs):
#            the proxies' own CPU per request, not diluted by the workers'.
#            Target: roost-proxy's CPU per request at most nginx's.
#   workers  three roost-workers (the worker's no-state route by default).
#            Target: the worker's CPU per request (direct) at most 1.3x a
#            bare hyper server's (direct-light), printed as a ratio.
# Both run the backends on the same ports and CPU, and every proxy fronts
# them identically.
#
# Targets (-t), in each layout:
#   direct        wrk straight to backend 1 (a worker, or a fixed-reply
#                 backend in the light layout); CPU: the backends'
#   direct-light  wrk straight to one roost-fixed-reply (the bare-hyper peer
#                 of direct; beside the workers it is a fourth backend of its
#                 own, on the backends' CPU; in the light layout it is
#                 direct, and is measured once, as direct, if both are asked)
#   roost, nginx, haproxy   the proxy in front of the three; CPU: the proxy's
#   roost-alt     roost-proxy built elsewhere, from ROOST_ALT_BIN (label
#                 ROOST_ALT_LABEL), to A/B a change against the same rivals
#
# Everything listens on 127.0.0.1 only and every process it starts is stopped
# on exit (also on Ctrl-C and on failure). wrk runs pinned to CPU 0; the proxy
# under test and the 3 backends run pinned to CPU 1; every proxy gets one
# thread/process. Repetitions are interleaved within a layout: rep 1 of every
# target, then rep 2, ... Raw results go to loadtest/results/proxy-<UTC
# time>/<layout>/ (runs.tsv for all), the Markdown summary to stdout (and
# summary.md there). Progress goes to stderr.
#
# Settings (flag, or environment variable of the same meaning):
#   -b BACKENDS     layouts, in order                    (default "light workers")
#   -d DURATION     measured seconds per run             (default 10)
#   -w WARMUP       unmeasured warm-up seconds per run   (default 3)
#   -r REPS         repetitions of every target          (default 3)
#   -c CONNECTIONS  wrk connections (1 wrk thread)       (default 64)
#   -t TARGETS      subset/order of targets    (default all but roost-alt)
#   USERS           distinct x-user-id values            (default 10000)
#   BENCH_PATH      path every request GETs (default /v1/whoami: the
#                   worker's stateless answer, 200 and a short JSON body;
#                   a fixed-reply backend gives its one answer to any path)
#   PORT_BASE       first of the 127.0.0.1 ports used    (default 18100)
#   LOADGEN_CPU / SERVER_CPU                             (default 0 / 1)
#   BENCH_REV       label for the code measured outside a git checkout
#   WORKER_CPU      CPU of the 3 backends (default SERVER_CPU; set it to
#                   LOADGEN_CPU to see a proxy without backends on its core)
#   FOREIGN_LIMIT   % of a pinned CPU that other processes or steal may take
#                   before a measurement is repeated      (default 10)
#   RETRIES         repeats of a disturbed measurement    (default 3)
#   QUIET_LIMIT / QUIET_WAIT  before each measurement, wait up to QUIET_WAIT s
#                   for both CPUs to be under QUIET_LIMIT % busy (10 / 300)
#   CARGO_TARGET_DIR, CARGO_BUILD_JOBS  cargo's own: where the release build
#                   goes (and the binaries are run from; default ./target)
#                   and how many jobs it runs
#
# Needs nginx, haproxy, wrk, curl, taskset/setsid and cargo; as root it
# installs the missing Debian packages, otherwise it names them and stops.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=proc.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/proc.sh"
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

# The exact command, with any settings given through the environment.
COMMAND=""
for var in BACKENDS DURATION WARMUP REPS CONNECTIONS TARGETS USERS BENCH_PATH BENCH_REV ROOST_ALT_BIN ROOST_ALT_LABEL \
  PORT_BASE LOADGEN_CPU SERVER_CPU WORKER_CPU \
  FOREIGN_LIMIT RETRIES QUIET_LIMIT QUIET_WAIT CARGO_TARGET_DIR CARGO_BUILD_JOBS; do
  if [ -n "${!var:-}" ]; then
    COMMAND+="$var=$(printf '%q' "${!var}") "
  fi
done
COMMAND+="loadtest/bench/proxy.sh"
for arg in "$@"; do
  COMMAND+=" $(printf '%q' "$arg")"
done

BACKENDS=${BACKENDS:-light workers}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
REPS=${REPS:-3}
CONNECTIONS=${CONNECTIONS:-64}
TARGETS=${TARGETS:-direct direct-light roost nginx haproxy}
USERS=${USERS:-10000}
BENCH_PATH=${BENCH_PATH:-/v1/whoami}
PORT_BASE=${PORT_BASE:-18100}
LOADGEN_CPU=${LOADGEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
WORKER_CPU=${WORKER_CPU:-$SERVER_CPU}
# A measurement is "disturbed" when other processes or the hypervisor (steal)
# took more than FOREIGN_LIMIT % of either pinned CPU; it is then repeated
# up to RETRIES times. Before each measurement, wait up to QUIET_WAIT s for
# both CPUs to be under QUIET_LIMIT % busy.
FOREIGN_LIMIT=${FOREIGN_LIMIT:-10}
RETRIES=${RETRIES:-3}
QUIET_LIMIT=${QUIET_LIMIT:-10}
QUIET_WAIT=${QUIET_WAIT:-300}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    -d | --duration) DURATION=${2:?}; shift 2 ;;
    -w | --warmup) WARMUP=${2:?}; shift 2 ;;
    -r | --reps) REPS=${2:?}; shift 2 ;;
    -b | --backends) BACKENDS=${2:?}; shift 2 ;;
    -c | --connections) CONNECTIONS=${2:?}; shift 2 ;;
    -t | --targets) TARGETS=${2:?}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

for var in DURATION WARMUP REPS CONNECTIONS USERS PORT_BASE LOADGEN_CPU SERVER_CPU WORKER_CPU \
  FOREIGN_LIMIT RETRIES QUIET_LIMIT QUIET_WAIT; do
  case "${!var}" in
    '' | *[!0-9]*) echo "$var must be a non-negative integer, got '${!var}'" >&2; exit 2 ;;
  esac
done
if [ "$DURATION" -lt 1 ] || [ "$REPS" -lt 1 ] || [ "$CONNECTIONS" -lt 1 ] || [ "$USERS" -lt 1 ]; then
  echo "DURATION, REPS, CONNECTIONS and USERS must be at least 1" >&2
  exit 2
fi
case "$BENCH_PATH" in
  /*) ;;
  *) echo "BENCH_PATH must start with /" >&2; exit 2 ;;
esac
[ -n "${BACKENDS// /}" ] || { echo "BACKENDS must name at least one layout (light, workers)" >&2; exit 2; }
seen=" "
for layout in $BACKENDS; do
  case "$layout" in
    light | workers) ;;
    *) echo "unknown layout '$layout' (light, workers)" >&2; exit 2 ;;
  esac
  [[ "$seen" != *" $layout "* ]] || { echo "layout '$layout' named twice" >&2; exit 2; }
  seen+="$layout "
done
[ -n "${TARGETS// /}" ] || { echo "TARGETS must name at least one target" >&2; exit 2; }
for target in $TARGETS; do
  case "$target" in
    direct | direct-light | roost | nginx | haproxy) ;;
    roost-alt)
      [ -x "${ROOST_ALT_BIN:-}" ] || { echo "roost-alt needs ROOST_ALT_BIN=path/to/roost-proxy" >&2; exit 2; }
      ;;
    *) echo "unknown target '$target' (direct, direct-light, roost, nginx, haproxy, roost-alt)" >&2; exit 2 ;;
  esac
done

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------
# 1. Prerequisites: packages (installed as root, else named) and the build.

ensure_packages() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  { command -v taskset >/dev/null && command -v setsid >/dev/null; } || missing+=(util-linux)
  command -v getconf >/dev/null || missing+=(libc-bin)
  # Pingora's build needs cmake and a C compiler.
  { command -v cmake >/dev/null && command -v cc >/dev/null; } || missing+=(cmake build-essential)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}" >&2
    echo "install them as root, then run this again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  log "installing ${missing[*]} (apt-get)"
  # Debian's nginx/haproxy packages start their system service (nginx on
  # port 80, all interfaces) unless a policy-rc.d forbids it.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=1
  fi
  local rc=0
  apt-get update -qq || rc=$?
  if [ "$rc" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  fi
  [ "$created_policy" -eq 1 ] && rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get failed (exit $rc)"
}

ensure_packages
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup)"

NPROC=$(nproc)
PINNING="wrk on CPU $LOADGEN_CPU; proxy under test and the 3 backends on CPU $SERVER_CPU"
if [ "$NPROC" -lt 2 ]; then
  log "WARNING: nproc is $NPROC: the load generator and the servers cannot get"
  log "WARNING: separate CPUs, so everything shares CPU 0 and the figures are not comparable"
  LOADGEN_CPU=0
  SERVER_CPU=0
  WORKER_CPU=0
  PINNING="NOT ISOLATED: only $NPROC CPU, wrk and the servers share CPU 0"
fi
taskset -c "$LOADGEN_CPU" true 2>/dev/null || die "cannot pin to CPU $LOADGEN_CPU (set LOADGEN_CPU)"
taskset -c "$SERVER_CPU" true 2>/dev/null || die "cannot pin to CPU $SERVER_CPU (set SERVER_CPU)"
taskset -c "$WORKER_CPU" true 2>/dev/null || die "cannot pin to CPU $WORKER_CPU (set WORKER_CPU)"
if [ "$WORKER_CPU" != "$SERVER_CPU" ]; then
  PINNING="wrk on CPU $LOADGEN_CPU; proxy under test on CPU $SERVER_CPU; the 3 backends on CPU $WORKER_CPU"
fi

# The light layout and direct-light need roost-fixed-reply too.
NEED_FIXED_REPLY=0
if [[ " $BACKENDS " == *" light "* || " $TARGETS " == *" direct-light "* ]]; then
  NEED_FIXED_REPLY=1
fi
log "building roost-proxy and roost-worker (release)"
(cd "$ROOT" && cargo build --release -p roost-proxy -p roost-builtins) >&2
if [ "$NEED_FIXED_REPLY" -eq 1 ]; then
  log "building roost-fixed-reply (release)"
  (cd "$ROOT" && cargo build --release -p roost-loadtest --bin roost-fixed-reply) >&2
fi
# Where cargo put them: CARGO_TARGET_DIR (relative to the root, where cargo
# ran) or ./target.
BIN=${CARGO_TARGET_DIR:-target}
[[ "$BIN" == /* ]] || BIN="$ROOT/$BIN"
BIN="$BIN/release"
LUA="$SCRIPT_DIR/users.lua"
[ -f "$LUA" ] || die "missing $LUA"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------
# Process control: every server runs in its own session (setsid), so the
# whole tree (nginx master + worker) can be signalled at once and Ctrl-C on
# the terminal reaches only this script, whose trap stops the servers.

STARTED=() # "pid:signal" of every process group started and not yet stopped
WORK=""
RESULTS=""


# group_alive PID: whether any process of PID's session/group is still there.
group_alive() { kill -0 -- "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }

# stop_server PID SIGNAL: signal the group, wait up to 5 s, then SIGKILL it.
stop_server() {
  local pid=$1 signal=$2 i
  kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
  for i in $(seq 50); do
    group_alive "$pid" || break
    sleep 0.1
  done
  if group_alive "$pid"; then
    log "pid $pid did not stop on SIG$signal; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  local kept=() entry
  for entry in "${STARTED[@]}"; do
    [ "${entry%%:*}" = "$pid" ] || kept+=("$entry")
  done
  STARTED=(${kept[@]+"${kept[@]}"})
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  local i entry
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    entry=${STARTED[$i]}
    stop_server "${entry%%:*}" "${entry##*:}"
  done
  [ -n "$WORK" ] && rm -rf "$WORK"
  if [ "$rc" -ne 0 ] && [ -n "$RESULTS" ]; then
    log "stopped everything; partial results in ${RESULTS#"$ROOT"/}"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP



# cpu_stat CPU: "busy steal total" jiffies of one CPU from /proc/stat. busy:
# user+nice+system+irq+softirq; steal: time the hypervisor gave to others.
cpu_stat() {
  awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}


# wait_quiet: wait (up to QUIET_WAIT s) until neither CPU is more than
# QUIET_LIMIT % busy over one second while nothing of ours is loaded, so a
# build or test run of someone else does not land in a measurement.
wait_quiet() {
  local waited=0 a b c d busy
  while :; do
    read -r a _ c < <(cpu_stat "$LOADGEN_CPU")
    read -r b _ d < <(cpu_stat "$SERVER_CPU")
    sleep 1
    busy=$(awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" -v l="$LOADGEN_CPU" -v s="$SERVER_CPU" '
      $1 == "cpu" l { x = ($2 + $3 + $4 + $7 + $8 - a) * 100 / ($2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 - c) }
      $1 == "cpu" s { y = ($2 + $3 + $4 + $7 + $8 - b) * 100 / ($2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 - d) }
      END { printf "%.0f", (x > y) ? x : y }' /proc/stat)
    [ "$busy" -le "$QUIET_LIMIT" ] && return 0
    if [ "$waited" -ge "$QUIET_WAIT" ]; then
      log "WARNING: the CPUs are still ${busy}% busy with other work after ${QUIET_WAIT}s; measuring anyway"
      return 0
    fi
    [ "$waited" -eq 0 ] && log "the CPUs are ${busy}% busy with other work; waiting for quiet (up to ${QUIET_WAIT}s)"
    waited=$((waited + 1))
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_ready NAME PID URL EXPECTED_WORKERS: until 30 keys in a row get a 200
# and the answers come from EXPECTED_WORKERS distinct backends (by their
# x-roost-worker header, which roost-fixed-reply sends too).
wait_ready() {
  local name=$1 pid=$2 url=$3 expected=$4 attempt key headers workers ok
  for attempt in $(seq 150); do
    group_alive "$pid" || die "$name exited during start-up; see its log in ${RESULTS#"$ROOT"/}"
    ok=1
    workers=""
    for key in $(seq -f 'user-%05g' 1 30); do
      if ! headers=$(curl -sS -o /dev/null -D - --max-time 1 -H "x-user-id: $key" -H "x-roost-key: $key" "$url" 2>/dev/null) ||
        ! grep -q '^HTTP/1.1 200' <<<"$headers"; then
        ok=0
        break
      fi
      workers+="$(tr -d '\r' <<<"$headers" | awk -F': ' 'tolower($1)=="x-roost-worker" {print $2}') "
    done
    if [ "$ok" -eq 1 ] && [ "$(tr ' ' '\n' <<<"$workers" | sort -u | grep -c .)" -ge "$expected" ]; then
      log "$name ready (attempt $attempt): answers from $(tr ' ' '\n' <<<"$workers" | sort -u | grep . | paste -sd, -)"
      return 0
    fi
    sleep 0.1
  done
  die "$name did not answer 200 from $expected worker(s) at $url within 15 s"
}

# ---------------------------------------------------------------------------
# Configs. Every proxy: one thread/process, no access log, the 3 backends,
# consistent hashing on x-user-id, upstream keep-alive, and it forwards the
# key as x-roost-key as roost-proxy does (so the workers' work is the same).

BACKEND_PORTS=("$((PORT_BASE + 1))" "$((PORT_BASE + 2))" "$((PORT_BASE + 3))")
LIGHT_PORT=$((PORT_BASE + 4)) # direct-light's fixed-reply beside the workers
ROOST_PORT=$((PORT_BASE + 10))
ROOST_ADMIN_PORT=$((PORT_BASE + 11))
NGINX_PORT=$((PORT_BASE + 20))
HAPROXY_PORT=$((PORT_BASE + 30))

write_roost_config() {
  cat >"$1" <<EOF
# roost-proxy config written by loadtest/bench/proxy.sh
listen: 127.0.0.1:$ROOST_PORT
admin_listen: 127.0.0.1:$ROOST_ADMIN_PORT
hash_seed: "roost-bench"
key:
  sources: [{header: x-user-id}]
  missing: reject
workers:
  - {id: w1, addr: 127.0.0.1:${BACKEND_PORTS[0]}, weight: 1}
  - {id: w2, addr: 127.0.0.1:${BACKEND_PORTS[1]}, weight: 1}
  - {id: w3, addr: 127.0.0.1:${BACKEND_PORTS[2]}, weight: 1}
threads: 1
access_log: false
EOF
}

write_nginx_config() {
  local prefix=$2
  cat >"$1" <<EOF
# nginx config written by loadtest/bench/proxy.sh
daemon off;
master_process on;
worker_processes 1;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $prefix/client_body;
    proxy_temp_path $prefix/proxy;
    fastcgi_temp_path $prefix/fastcgi;
    uwsgi_temp_path $prefix/uwsgi;
    scgi_temp_path $prefix/scgi;

    upstream roost_workers {
        hash \$http_x_user_id consistent;
        server 127.0.0.1:${BACKEND_PORTS[0]};
        server 127.0.0.1:${BACKEND_PORTS[1]};
        server 127.0.0.1:${BACKEND_PORTS[2]};
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://roost_workers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header x-roost-key \$http_x_user_id;
        }
    }
}
EOF
}

write_haproxy_config() {
  cat >"$1" <<EOF
# HAProxy config written by loadtest/bench/proxy.sh (no log lines: no logging)
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    http-reuse always

frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend roost_workers

backend roost_workers
    balance hdr(x-user-id)
    hash-type consistent
    http-request set-header x-roost-key %[req.hdr(x-user-id)]
    server w1 127.0.0.1:${BACKEND_PORTS[0]}
    server w2 127.0.0.1:${BACKEND_PORTS[1]}
    server w3 127.0.0.1:${BACKEND_PORTS[2]}
EOF
}

# start_target TARGET RUN_DIR: start it (not for direct, direct-light); sets
# TARGET_PID, TARGET_URL, TARGET_WORKERS (how many backends should answer),
# TARGET_CPU_LABEL (whose CPU cpu_ticks is) and TARGET_CPU_ON: "proxy" (the
# target's own processes, on SERVER_CPU), "pool" (one of the three backends:
# its CPU is in the backends' ticks) or "own" (a backend of its own, on
# WORKER_CPU).
start_target() {
  local target=$1 run_dir=$2
  TARGET_WORKERS=1
  case "$target" in
    direct | direct-light)
      if [ "$target" = direct ] || [ -z "$LIGHT_PID" ]; then
        TARGET_PID=${BACKEND_PIDS[0]}
        TARGET_URL="http://127.0.0.1:${BACKEND_PORTS[0]}$BENCH_PATH"
        TARGET_CPU_ON=pool
        TARGET_CPU_LABEL=$BACKEND_KIND
      else
        TARGET_PID=$LIGHT_PID
        TARGET_URL="http://127.0.0.1:$LIGHT_PORT$BENCH_PATH"
        TARGET_CPU_ON=own
        TARGET_CPU_LABEL=fixed-reply
      fi
      return 0
      ;;
    roost | roost-alt)
      local bin="$BIN/roost-proxy"
      [ "$target" = roost-alt ] && bin=$ROOST_ALT_BIN
      write_roost_config "$run_dir/roost-proxy.yaml"
      RUST_LOG=info start_server "$target" "$run_dir/roost-proxy.log" INT \
        "$bin" --config "$run_dir/roost-proxy.yaml"
      TARGET_URL="http://127.0.0.1:$ROOST_PORT$BENCH_PATH"
      ;;
    nginx)
      local prefix="$WORK/nginx"
      rm -rf "$prefix"
      mkdir -p "$prefix"
      write_nginx_config "$prefix/nginx.conf" "$prefix"
      cp "$prefix/nginx.conf" "$run_dir/nginx.conf"
      start_server nginx "$run_dir/nginx.log" TERM \
        nginx -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf"
      TARGET_URL="http://127.0.0.1:$NGINX_PORT$BENCH_PATH"
      ;;
    haproxy)
      write_haproxy_config "$run_dir/haproxy.cfg"
      start_server haproxy "$run_dir/haproxy.log" TERM \
        haproxy -db -f "$run_dir/haproxy.cfg"
      TARGET_URL="http://127.0.0.1:$HAPROXY_PORT$BENCH_PATH"
      ;;
  esac
  TARGET_PID=$SERVER_PID
  TARGET_WORKERS=3
  TARGET_CPU_ON=proxy
  TARGET_CPU_LABEL=proxy
}

stop_target() {
  local target=$1 run_dir=$2
  [[ "$target" == direct* ]] && return 0
  stop_server "$TARGET_PID" "$([[ "$target" == roost* ]] && echo INT || echo TERM)"
  if [ "$target" = nginx ] && [ -f "$WORK/nginx/error.log" ]; then
    cp "$WORK/nginx/error.log" "$run_dir/nginx-error.log"
  fi
}

# layout_targets LAYOUT: the targets measured in LAYOUT. In the light layout
# direct already is wrk straight to a fixed-reply backend, so direct-light
# is measured once, as direct, when both are asked for.
layout_targets() {
  local target out=""
  for target in $TARGETS; do
    if [ "$1" = light ] && [ "$target" = direct-light ] && [[ " $TARGETS " == *" direct "* ]]; then
      continue
    fi
    out+="$target "
  done
  echo "${out% }"
}

# start_backends LAYOUT: LAYOUT's three backends on BACKEND_PORTS, pinned to
# WORKER_CPU (sets BACKEND_PIDS and BACKEND_KIND, the cpu_of label of
# direct), and beside the workers the fixed-reply backend of direct-light
# when it is measured (LIGHT_PID, else empty); waits until each answers.
start_backends() {
  local layout=$1 dir="$RESULTS/$1" i store
  BACKEND_PIDS=()
  LIGHT_PID=""
  BACKEND_KIND=worker
  [ "$layout" = light ] && BACKEND_KIND=fixed-reply
  for i in 1 2 3; do
    local addr="127.0.0.1:${BACKEND_PORTS[$((i - 1))]}"
    if [ "$layout" = workers ]; then
      # A worker with a state store gets a private SQLite file in the temp dir.
      store=()
      [ "$WORKER_STORE" -eq 1 ] && store=(--store "sqlite://$WORK/worker-w$i.db")
      PIN_CPU=$WORKER_CPU RUST_LOG=warn start_server "worker w$i" "$dir/worker-w$i.log" TERM \
        "$BIN/roost-worker" --id "w$i" --listen "$addr" ${store[@]+"${store[@]}"}
    else
      PIN_CPU=$WORKER_CPU start_server "fixed-reply w$i" "$dir/fixed-reply-w$i.log" TERM \
        "$BIN/roost-fixed-reply" --id "w$i" --listen "$addr"
    fi
    BACKEND_PIDS+=("$SERVER_PID")
  done
  local pids=("${BACKEND_PIDS[@]}") ports=("${BACKEND_PORTS[@]}")
  if [ "$layout" = workers ] && [[ " $(layout_targets workers) " == *" direct-light "* ]]; then
    PIN_CPU=$WORKER_CPU start_server "fixed-reply (direct-light)" "$dir/fixed-reply-direct-light.log" TERM \
      "$BIN/roost-fixed-reply" --id bare-hyper --listen "127.0.0.1:$LIGHT_PORT"
    LIGHT_PID=$SERVER_PID
    pids+=("$LIGHT_PID")
    ports+=("$LIGHT_PORT")
  fi
  for i in "${!pids[@]}"; do
    for _ in $(seq 100); do
      curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:${ports[$i]}/healthz" 2>/dev/null && break
      group_alive "${pids[$i]}" || die "the backend on port ${ports[$i]} exited; see its log in ${dir#"$ROOT"/}"
      sleep 0.1
    done
  done
}

# stop_backends: signal every backend at once (a worker drains), then wait
# for each.
stop_backends() {
  local pid
  for pid in $LIGHT_PID "${BACKEND_PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in $LIGHT_PID "${BACKEND_PIDS[@]}"; do
    stop_server "$pid" TERM
  done
  BACKEND_PIDS=()
  LIGHT_PID=""
}

# ---------------------------------------------------------------------------
# 2. Ports, the results dir, the machine and versions.

for port in "${BACKEND_PORTS[@]}" "$LIGHT_PORT" "$ROOST_PORT" "$ROOST_ADMIN_PORT" "$NGINX_PORT" "$HAPROXY_PORT"; do
  ! port_in_use "$port" || die "127.0.0.1:$port is in use; pick other ports with PORT_BASE=..."
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$ROOT/loadtest/results/proxy-$STAMP"
mkdir -p "$RESULTS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/roost-bench.XXXXXX")
chmod 755 "$WORK" # nginx's worker runs as nobody when started as root

WORKER_STORE=0
worker_help=$("$BIN/roost-worker" --help 2>&1 || true)
[[ "$worker_help" == *--store* ]] && WORKER_STORE=1
BACKEND_PIDS=()
LIGHT_PID=""

CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: //')
HAPROXY_VERSION=$(first_line haproxy -v)
HAPROXY_VERSION=${HAPROXY_VERSION%% - https*}
WRK_VERSION=$(first_line wrk -v)
WRK_VERSION=${WRK_VERSION%% Copyright*}
ROOST_VERSION=$(first_line "$BIN/roost-proxy" --version)
FIXED_REPLY_VERSION=unused
[ "$NEED_FIXED_REPLY" -eq 1 ] && FIXED_REPLY_VERSION=$(first_line "$BIN/roost-fixed-reply" --version)
RUSTC_VERSION=$(rustc --version 2>/dev/null || echo unknown)
KERNEL=$(uname -sr)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
if GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  IN_GIT=1
else
  IN_GIT=0
  GIT_REV=${BENCH_REV:-unknown}
fi
MEASURED_CODE=(proxy worker routing loadtest/src loadtest/Cargo.toml Cargo.toml Cargo.lock)
if [ "$IN_GIT" -eq 1 ] && ! git -C "$ROOT" diff --quiet HEAD -- "${MEASURED_CODE[@]}"; then
  GIT_REV+=" (with local changes: local-changes.diff)"
  git -C "$ROOT" diff HEAD -- "${MEASURED_CODE[@]}" >"$RESULTS/local-changes.diff" || true
fi
{
  echo "date: $DATE"
  echo "command: $COMMAND"
  echo "git: $GIT_REV"
  echo "nproc: $NPROC"
  echo "cpu: $CPU_MODEL"
  echo "kernel: $KERNEL"
  echo "pinning: $PINNING"
  echo "layouts: $BACKENDS"
  echo "nginx: $NGINX_VERSION"
  echo "haproxy: $HAPROXY_VERSION"
  echo "wrk: $WRK_VERSION"
  echo "roost-proxy: $ROOST_VERSION"
  echo "roost-fixed-reply: $FIXED_REPLY_VERSION"
  echo "rustc: $RUSTC_VERSION"
  echo "loadavg at start: $(cat /proc/loadavg)"
  echo "settings: duration=${DURATION}s warmup=${WARMUP}s reps=$REPS connections=$CONNECTIONS wrk_threads=1 users=$USERS path=$BENCH_PATH clk_tck=$CLK_TCK"
  echo "disturbance: foreign_limit=${FOREIGN_LIMIT}% retries=$RETRIES quiet_limit=${QUIET_LIMIT}% quiet_wait=${QUIET_WAIT}s"
} >"$RESULTS/env.txt"

# ---------------------------------------------------------------------------
# 3-5. Per layout: start its backends, run the interleaved reps, stop them.

RUNS="$RESULTS/runs.tsv"
# workers_cpu_*: the layout's three backends (workers or fixed-reply);
# summary_cpu_us_per_req: the figure the summary shows (the proxy's; for
# direct the backends', for direct-light the fixed-reply backend's).
printf '%s\n' "layout	rep	target	attempt	counted	req_per_s	p50_ms	p99_ms	requests	non_2xx	socket_errors	cpu_of	cpu_ticks	cpu_us_per_req	workers_cpu_ticks	workers_cpu_us_per_req	wall_s	wrk_cpu_pct	loadgen_cpu_busy_pct	loadgen_foreign_pct	loadgen_steal_pct	ours_on_server_cpu_pct	server_cpu_busy_pct	server_foreign_pct	server_steal_pct	summary_cpu_us_per_req" >"$RUNS"
ERRORS_SEEN=0
DISTURBED_KEPT=0

# measure LAYOUT TARGET REP ATTEMPT RUN_DIR: one warm-up and one measured wrk
# run against the started target; appends a row to runs.tsv (counted column
# left as "?") and sets DISTURBED=1 when other load took either CPU.
measure() {
  local layout=$1 target=$2 rep=$3 attempt=$4 run_dir=$5 mode=proxied
  [[ "$target" == direct* ]] && mode=direct
  local wrk_cmd=(taskset -c "$LOADGEN_CPU" wrk -t1 "-c$CONNECTIONS" --latency -s "$LUA")
  local tag="$rep"
  [ "$attempt" -gt 1 ] && tag="$rep-try$attempt"

  wait_quiet
  if [ "$WARMUP" -gt 0 ]; then
    "${wrk_cmd[@]}" "-d${WARMUP}s" "$TARGET_URL" -- "$mode" "$USERS" "$BENCH_PATH" >"$run_dir/warmup-$tag.txt" 2>&1 ||
      die "wrk warm-up against $target failed; see $run_dir/warmup-$tag.txt"
  fi

  local target_pids=()
  read -r -a target_pids <<<"$(session_pids "$TARGET_PID" | paste -sd' ' -)"
  [ ${#target_pids[@]} -gt 0 ] || die "$target has no processes left"
  local lg0 sv0 lg1 sv1 cpu_before workers_before wrk_before t0 t1
  local cpu_after workers_after wrk_after out="$run_dir/wrk-$tag.txt"
  lg0=$(cpu_stat "$LOADGEN_CPU")
  sv0=$(cpu_stat "$SERVER_CPU")
  cpu_before=$(cpu_ticks "${target_pids[@]}")
  workers_before=$(cpu_ticks "${BACKEND_PIDS[@]}")
  wrk_before=$(children_ticks)
  t0=$EPOCHREALTIME
  "${wrk_cmd[@]}" "-d${DURATION}s" "$TARGET_URL" -- "$mode" "$USERS" "$BENCH_PATH" >"$out" 2>&1 ||
    die "wrk against $target failed; see $out"
  t1=$EPOCHREALTIME
  wrk_after=$(children_ticks)
  cpu_after=$(cpu_ticks "${target_pids[@]}")
  workers_after=$(cpu_ticks "${BACKEND_PIDS[@]}")
  lg1=$(cpu_stat "$LOADGEN_CPU")
  sv1=$(cpu_stat "$SERVER_CPU")
  group_alive "$TARGET_PID" || die "$target died during the run"

  local rps requests p50 p99 non2xx socket_errors
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  requests=$(awk '/ requests in / {print $1}' "$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")
  non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$out")
  non2xx=${non2xx:-0}
  socket_errors=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
  socket_errors=${socket_errors:-0}
  if [ -z "$rps" ] || [ -z "$requests" ] || [ "$requests" -eq 0 ]; then
    die "cannot read wrk's output $out"
  fi

  local cpu=$((cpu_after - cpu_before)) workers_cpu=$((workers_after - workers_before))
  # Our ticks on each pinned CPU: wrk on LOADGEN_CPU, a proxy on SERVER_CPU,
  # the backends on WORKER_CPU (a direct target is one of them, or, for
  # direct-light beside the workers, a backend of its own on that CPU).
  local wrk_t=$((wrk_after - wrk_before)) proxy_t=$cpu backends_t=$workers_cpu
  case "$TARGET_CPU_ON" in
    pool) proxy_t=0 ;;
    own) proxy_t=0; backends_t=$((backends_t + cpu)) ;;
  esac
  local lg_ours=$wrk_t sv_ours=$proxy_t
  if [ "$WORKER_CPU" = "$LOADGEN_CPU" ]; then
    lg_ours=$((lg_ours + backends_t))
  else
    sv_ours=$((sv_ours + backends_t))
  fi
  if [ "$SERVER_CPU" = "$LOADGEN_CPU" ]; then
    lg_ours=$((lg_ours + sv_ours))
    sv_ours=$lg_ours
  fi
  local stats
  stats=$(awk -v c="$cpu" -v w="$workers_cpu" -v n="$requests" -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" \
    -v ours="$sv_ours" -v lg_ours="$lg_ours" -v wrk="$wrk_t" -v lim="$FOREIGN_LIMIT" \
    -v lg="$lg0 $lg1" -v sv="$sv0 $sv1" 'BEGIN {
      split(lg, a, " "); split(sv, b, " ")
      wall = t1 - t0
      lgt = a[6] - a[3]; svt = b[6] - b[3]
      lg_busy = (a[4] - a[1]) * 100 / lgt; lg_steal = (a[5] - a[2]) * 100 / lgt
      sv_busy = (b[4] - b[1]) * 100 / svt; sv_steal = (b[5] - b[2]) * 100 / svt
      wrk_pct = wrk * 100 / hz / wall; ours_pct = ours * 100 / hz / wall
      lg_foreign = lg_busy - lg_ours * 100 / hz / wall; if (lg_foreign < 0) lg_foreign = 0
      sv_foreign = sv_busy - ours_pct; if (sv_foreign < 0) sv_foreign = 0
      disturbed = (lg_foreign > lim || sv_foreign > lim || lg_steal > lim || sv_steal > lim)
      printf "%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f %d\n",
        c * 1e6 / hz / n, w * 1e6 / hz / n, wall, wrk_pct, lg_busy, lg_foreign, lg_steal,
        ours_pct, sv_busy, sv_foreign, sv_steal, disturbed }')
  DISTURBED=${stats##* }
  stats=${stats% *}
  local cpu_us workers_us shown_us
  cpu_us=$(cut -f1 <<<"$stats")
  workers_us=$(cut -f2 <<<"$stats")
  shown_us=$cpu_us
  [ "$TARGET_CPU_ON" = pool ] && shown_us=$workers_us
  printf '%s\t%s\t%s\t%s\t?\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$layout" "$rep" "$target" "$attempt" "$rps" "$p50" "$p99" "$requests" "$non2xx" "$socket_errors" \
    "$TARGET_CPU_LABEL" "$cpu" "$cpu_us" "$workers_cpu" "$workers_us" "$(cut -f3- <<<"$stats")" "$shown_us" >>"$RUNS"
  log "$layout rep $rep $target (try $attempt): $rps req/s, p50 $p50 ms, p99 $p99 ms, $shown_us µs CPU/req ($TARGET_CPU_LABEL)"
  log "  CPU $LOADGEN_CPU: wrk $(cut -f4 <<<"$stats")%, other $(cut -f6 <<<"$stats")%, steal $(cut -f7 <<<"$stats")%;" \
    "CPU $SERVER_CPU: ours $(cut -f8 <<<"$stats")%, other $(cut -f10 <<<"$stats")%, steal $(cut -f11 <<<"$stats")%"
  if [ "$non2xx" != 0 ] || [ "$socket_errors" != 0 ]; then
    ERRORS_SEEN=1
    log "WARNING: $layout rep $rep $target: $non2xx non-2xx responses, $socket_errors socket errors (see $out)"
  fi
}

for layout in $BACKENDS; do
  targets=$(layout_targets "$layout")
  mkdir -p "$RESULTS/$layout"
  log "layout $layout: results in ${RESULTS#"$ROOT"/}/$layout; $REPS reps x ($targets), ${WARMUP}s warm-up + ${DURATION}s each, $CONNECTIONS connections"
  start_backends "$layout"
  for rep in $(seq "$REPS"); do
    for target in $targets; do
      run_dir="$RESULTS/$layout/$target"
      mkdir -p "$run_dir"
      for attempt in $(seq $((RETRIES + 1))); do
        start_target "$target" "$run_dir"
        wait_ready "$target" "$TARGET_PID" "$TARGET_URL" "$TARGET_WORKERS"
        measure "$layout" "$target" "$rep" "$attempt" "$run_dir"
        stop_target "$target" "$run_dir"
        keep_measurement "$layout rep $rep $target" "$attempt" && break
      done
    done
  done
  stop_backends
done

# ---------------------------------------------------------------------------
# 6. Summary: one table per layout.

# column_of LAYOUT TARGET COLUMN: that column of every counted run of TARGET
# in LAYOUT.
column_of() {
  awk -F'\t' -v l="$1" -v t="$2" -v c="$3" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) col = i; next }
    $1 == l && $3 == t && $5 == 1 { print $col }' "$RUNS"
}

# measured LAYOUT TARGET: whether TARGET has counted runs in LAYOUT.
measured() { [ -n "$(column_of "$1" "$2" requests)" ]; }

# layout_table LAYOUT: the Markdown table of LAYOUT's targets.
layout_table() {
  local layout=$1 target nginx_rps="" rps lo hi p50 p99 cpu backends errs name note
  measured "$layout" nginx && nginx_rps=$(column_of "$layout" nginx req_per_s | median)
  echo "| target | req/s (median) | req/s min–max | p50 ms | p99 ms | CPU µs/request | backends' CPU µs/request | req/s vs nginx | non-2xx / socket errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for target in $(layout_targets "$layout"); do
    rps=$(column_of "$layout" "$target" req_per_s | median)
    lo=$(column_of "$layout" "$target" req_per_s | sort -g | awk 'NR == 1')
    hi=$(column_of "$layout" "$target" req_per_s | sort -g | awk 'END { print }')
    p50=$(column_of "$layout" "$target" p50_ms | median)
    p99=$(column_of "$layout" "$target" p99_ms | median)
    cpu=$(column_of "$layout" "$target" summary_cpu_us_per_req | median)
    backends=$(column_of "$layout" "$target" workers_cpu_us_per_req | median)
    errs=$(awk -F'\t' -v l="$layout" -v t="$target" '$1 == l && $3 == t && $5 == 1 { n += $10; s += $11 }
      END { printf "%d / %d", n, s }' "$RUNS")
    note=""
    case "$target/$layout" in
      direct/workers) name="direct (1 worker, no proxy)"; note=" (worker)"; backends="" ;;
      direct/light) name="direct (1 fixed-reply backend, no proxy)"; note=" (backend)"; backends="" ;;
      direct-light/*) name="direct-light (1 fixed-reply backend: bare hyper)"; note=" (backend)"; backends="" ;;
      roost/*) name="roost-proxy" ;;
      roost-alt/*) name="roost-proxy (alt: ${ROOST_ALT_LABEL:-$ROOST_ALT_BIN})" ;;
      nginx/*) name="nginx" ;;
      haproxy/*) name="HAProxy" ;;
    esac
    awk -v name="$name" -v rps="$rps" -v lo="$lo" -v hi="$hi" -v p50="$p50" -v p99="$p99" \
      -v cpu="$cpu" -v note="$note" -v backends="$backends" -v ng="$nginx_rps" -v errs="$errs" 'BEGIN {
        ratio = (ng != "" && ng > 0) ? sprintf("%.2f×", rps / ng) : "n/a"
        b = (backends != "") ? sprintf("%.1f", backends) : "–"
        printf "| %s | %.0f | %.0f–%.0f | %.3f | %.3f | %.1f%s | %s | %s | %s |\n",
          name, rps, lo, hi, p50, p99, cpu, note, b, ratio, errs }'
  done
}

# layout_verdicts LAYOUT: the targets LAYOUT is measured against, as lines.
layout_verdicts() {
  local layout=$1
  if [ "$layout" = light ] && measured light roost && measured light nginx; then
    awk -v r="$(column_of light roost summary_cpu_us_per_req | median)" \
      -v n="$(column_of light nginx summary_cpu_us_per_req | median)" 'BEGIN {
        printf "Target (roost-proxy CPU per request ≤ nginx'"'"'s, light backends): %.1f µs vs %.1f µs (%.2f×): **%s**.\n",
          r, n, r / n, (r <= n) ? "MET" : "NOT MET" }'
  fi
  if [ "$layout" = workers ] && measured workers roost && measured workers nginx; then
    awk -v r="$(column_of workers roost req_per_s | median)" -v n="$(column_of workers nginx req_per_s | median)" \
      -v rp="$(column_of workers roost p99_ms | median)" -v np="$(column_of workers nginx p99_ms | median)" 'BEGIN {
        ratio = r / n
        ok1 = ratio >= 1.2; ok2 = rp <= np
        printf "Target (roost-proxy ≥ 1.2× nginx req/s, p99 ≤ nginx p99): req/s %.2f× nginx (%s), p99 %.3f ms vs %.3f ms (%s): **%s**.\n",
          ratio, ok1 ? "met" : "not met", rp, np, ok2 ? "met" : "not met", (ok1 && ok2) ? "MET" : "NOT MET" }'
  fi
  if [ "$layout" = workers ] && measured workers direct; then
    # The bare-hyper peer: direct-light beside the workers, else the light
    # layout's direct (a fixed-reply backend too, measured in its own layout).
    local peer="" where
    if measured workers direct-light; then
      peer=$(column_of workers direct-light summary_cpu_us_per_req | median)
      where="direct-light, interleaved with it"
    elif measured light direct; then
      peer=$(column_of light direct summary_cpu_us_per_req | median)
      where="the light layout's direct, not interleaved with it"
    elif measured light direct-light; then
      peer=$(column_of light direct-light summary_cpu_us_per_req | median)
      where="the light layout's direct-light, not interleaved with it"
    fi
    [ -n "$peer" ] && awk -v w="$(column_of workers direct summary_cpu_us_per_req | median)" -v b="$peer" \
      -v where="$where" -v path="$BENCH_PATH" 'BEGIN {
        printf "Target (the worker'"'"'s GET %s ≤ 1.3× a bare hyper server'"'"'s CPU per request): worker CPU per request ÷ bare hyper CPU per request = %.1f µs ÷ %.1f µs = **%.2f×** (%s; %s).\n",
          path, w, b, w / b, where, (w / b <= 1.3) ? "MET" : "NOT MET" }'
  fi
  return 0
}

summary="$RESULTS/summary.md"
{
  echo "Proxy benchmark, $DATE (roost $GIT_REV)"
  for layout in $BACKENDS; do
    echo
    case "$layout" in
      light) echo "### Light backends: 3 × roost-fixed-reply (bare hyper, fixed 200)" ;;
      workers) echo "### Real backends: 3 × roost-worker" ;;
    esac
    echo
    layout_table "$layout"
    verdicts=$(layout_verdicts "$layout")
    if [ -n "$verdicts" ]; then
      echo
      printf '%s\n' "$verdicts"
    fi
  done
  echo
  echo "- Machine: $NPROC CPUs ($CPU_MODEL), $KERNEL; $PINNING."
  echo "- Versions: nginx $NGINX_VERSION; $HAPROXY_VERSION; $WRK_VERSION; $ROOST_VERSION; $FIXED_REPLY_VERSION ($RUSTC_VERSION)."
  echo "- Load: wrk, 1 thread, $CONNECTIONS connections, GET $BENCH_PATH with $USERS distinct x-user-id values (cycled), ${WARMUP} s warm-up then ${DURATION} s measured, $REPS interleaved reps per layout (layouts in turn: $BACKENDS); medians of the reps."
  echo "- CPU µs/request: utime+stime of all the proxy's processes over the measured window / requests completed (direct: the three backends'; direct-light: the fixed-reply backend's). Backends' CPU µs/request: the three backends' over the same window."
  echo "- Raw results: loadtest/results/proxy-$STAMP/ (runs.tsv, wrk output and configs per layout and target)."
  echo "- Command: \`$COMMAND\`"
  for layout in $BACKENDS; do
    for target in $(layout_targets "$layout"); do
      busy=$(column_of "$layout" "$target" wrk_cpu_pct | median)
      if awk -v b="$busy" 'BEGIN { exit !(b >= 95) }'; then
        echo "- $layout $target: wrk's CPU was ${busy}% busy (median): the load generator, not the target, set its req/s."
      fi
    done
  done
  retried=$(awk -F'\t' 'NR > 1 && $5 == 0' "$RUNS" | wc -l)
  if [ "$retried" -gt 0 ]; then
    echo "- $retried measurement(s) disturbed by other load on the machine were discarded and repeated (runs.tsv, counted = 0)."
  fi
  if [ "$DISTURBED_KEPT" -ne 0 ]; then
    echo
    echo "**WARNING: $DISTURBED_KEPT counted run(s) were disturbed by other load (over ${FOREIGN_LIMIT}% of a pinned CPU); the figures are less reliable.**"
  fi
  if [ "$ERRORS_SEEN" -ne 0 ]; then
    echo
    echo "**WARNING: some runs had non-2xx responses or socket errors (last column); see runs.tsv.**"
  fi
} >"$summary"
cat "$summary"
log "done; raw results in ${RESULTS#"$ROOT"/}"
