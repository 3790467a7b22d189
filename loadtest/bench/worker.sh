#!/usr/bin/env bash
# Worker benchmark (issue 3): cart updates on roost-workers with write-behind
# and durable acknowledgement, against the stateless baseline (the same
# workers with --stateless: one Postgres transaction per request) and two
# ceilings that touch no state: the same requests sent to /v1/whoami
# ("ceiling", what the targets compare against) and plain GET /v1/whoami
# ("ceiling-get", for reference); the write-behind requests sent to bare
# hyper servers ("bare-hyper", direct only: roost-fixed-reply in the
# workers' place, the floor issue 13 holds the worker's CPU per request
# against); then memory per active entity.
#
#   loadtest/bench/worker.sh [-d SECONDS] [-w SECONDS] [-r REPS] [-c CONNECTIONS]
#                            [-l "bare-hyper ceiling ceiling-get write-behind durable stateless"] [-m "proxy direct"]
#
# Two more lines compare the worker's HTTP mapping (issue 12), not asked for
# by default: "write-behind-generic" sends the same cart changes through
# the generic scheme (POST /v1/cart/add {"sku","qty"}, POST /v1/cart/remove
# {"sku"}) instead of the cart's own routes; "write-behind-before" sends the
# write-behind requests to workers built from an earlier commit
# (BEFORE_WORKER_BIN, required for that line), e.g. the last one with
# hand-written routes; "durable-before" does the same for the durable
# requests:
#   git worktree add /tmp/roost-before d880435 && (cd /tmp/roost-before && cargo build --release -p roost-worker) # (-p roost-builtins from this commit on)
#   BEFORE_WORKER_BIN=/tmp/roost-before/target/release/roost-worker MEM_ENTITIES=0 \
#     loadtest/bench/worker.sh -l "write-behind write-behind-generic write-behind-before" -m direct
#
# Load: USERS users with two devices each (two connections sending the same
# x-user-id), each device adding then removing its own few SKUs
# (loadtest/bench/cart.lua). Every line runs through roost-proxy (key header
# x-user-id, threads: 1, access_log: false) in front of 3 workers, and
# "direct": one wrk thread per worker, each with a third of the users
# (index mod 3), sending x-roost-key itself. All lines share one Postgres and
# one run-specific key prefix (a fresh random one per run). Repetitions are
# interleaved, in snake order (rep 1 in order, rep 2 reversed, ...) so the
# workers switch between normal and --stateless once per rep. Before the
# first run of a cart line on freshly started workers, an activation pass
# (one GET /v1/cart per user) claims every user's cart (creates its row, for
# --stateless), so no measured window pays for first use.
#
# Memory: one worker (Postgres store, idle_ms of a day so nothing
# passivates) gets MEM_ENTITIES distinct session entities (PUT /v1/session,
# loadtest/bench/sessions.lua); VmRSS before, when all are active, and after
# the flusher has drained.
#
# Everything listens on 127.0.0.1; every process started here is stopped on
# exit (also on Ctrl-C and on failure); the rows this run wrote are deleted
# at the end (KEEP_ROWS=1 keeps them). roost_entities is VACUUMed (plain, no
# blocking lock) before each rep and after the delete: every flushed change
# is an UPDATE, and the local test cluster runs with autovacuum off. wrk runs pinned to CPU 0, the proxy and
# the workers to CPU 1. Postgres is not pinned: it is shared by every line
# and runs wherever the scheduler puts it (its CPU is measured and reported).
# Before each measurement the script waits while another benchmark
# (loadtest/bench/proxy.sh) runs, then for quiet CPUs. Raw results go to
# loadtest/results/worker-<UTC time>/, the Markdown summary to stdout (and
# summary.md there); progress to stderr. A default run takes about 14
# minutes on the 2-vCPU test VM (the memory part about 2).
#
# Settings (flag, or environment variable of the same meaning):
#   -d DURATION     measured seconds per run                 (default 8)
#   -w WARMUP       unmeasured warm-up seconds per run       (default 3)
#   -r REPS         repetitions of every line                (default 5)
#   -c CONNECTIONS  wrk connections, in total                (default 60;
#                   direct: a third per worker)
#   -l LINES        subset/order of lines        (default all six, as above)
#   -m MODES        proxy and/or direct                      (default both)
#   USERS           users (two devices each)                 (default 10000)
#   SKUS            SKUs per device                          (default 3)
#   MEM_ENTITIES    session entities for the memory part     (default 1000000;
#                   0 skips it)
#   MEM_TIMEOUT     longest the activation may take, s       (default 600)
#   MEM_CONNECTIONS wrk connections for the activation       (default 64)
#   DATABASE_URL    Postgres to use when set and reachable; else LOCAL_PG
#                   (default postgres://postgres@127.0.0.1:5432/test) when
#                   reachable; else a throwaway cluster (initdb/pg_ctl, as
#                   the postgres user when run as root) in a temp dir on a
#                   free port, stopped on exit
#   KEEP_ROWS       1: leave this run's rows in roost_entities
#   BIN_DIR         take roost-proxy, roost-worker and roost-fixed-reply from this folder
#                   instead of building them (default: build, into
#                   CARGO_TARGET_DIR or ./target)
#   WORKER_YAML     extra lines for the config of the workers under test
#                   (not the BEFORE_WORKER_BIN ones), e.g.
#                   'flush_linger_us: 1000'
#   PERF_LINES      lines to profile after the reps (e.g. "durable"): one
#                   extra, uncounted proxied run each under
#                   `perf record --call-graph dwarf -C SERVER_CPU`, reports
#                   in perf-<line>.txt (PERF_KEEP=1 keeps perf-<line>.data)
#   PORT_BASE       first of the 127.0.0.1 ports used        (default 18200)
#   LOADGEN_CPU / SERVER_CPU                                  (default 0 / 1)
#   FOREIGN_LIMIT / RETRIES / QUIET_LIMIT / QUIET_WAIT: a run during which
#                   other processes (not wrk, proxy, workers or Postgres) or
#                   steal took over FOREIGN_LIMIT % of a CPU (default 15) is
#                   repeated up to RETRIES times (default 2); before each run,
#                   wait up to QUIET_WAIT s (default 60) for both CPUs to be
#                   under QUIET_LIMIT % busy (default 10)
#   OTHER_WAIT      longest wait for another benchmark, s    (default 1800)
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

# The exact command, with any settings given through the environment
# (DATABASE_URL is shown by name only: it may hold a password).
COMMAND=""
for var in DURATION WARMUP REPS CONNECTIONS LINES MODES USERS SKUS MEM_ENTITIES MEM_TIMEOUT MEM_CONNECTIONS \
  KEEP_ROWS PERF_LINES PERF_KEEP BIN_DIR WORKER_YAML LOCAL_PG PORT_BASE LOADGEN_CPU SERVER_CPU FOREIGN_LIMIT RETRIES QUIET_LIMIT QUIET_WAIT OTHER_WAIT; do
  if [ -n "${!var:-}" ]; then
    COMMAND+="$var=$(printf '%q' "${!var}") "
  fi
done
[ -n "${DATABASE_URL:-}" ] && COMMAND+="DATABASE_URL=… "
COMMAND+="loadtest/bench/worker.sh"
for arg in "$@"; do
  COMMAND+=" $(printf '%q' "$arg")"
done

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-3}
REPS=${REPS:-5}
CONNECTIONS=${CONNECTIONS:-60}
LINES=${LINES:-bare-hyper ceiling ceiling-get write-behind durable stateless}
MODES=${MODES:-proxy direct}
USERS=${USERS:-10000}
SKUS=${SKUS:-3}
MEM_ENTITIES=${MEM_ENTITIES:-1000000}
MEM_TIMEOUT=${MEM_TIMEOUT:-600}
MEM_CONNECTIONS=${MEM_CONNECTIONS:-64}
KEEP_ROWS=${KEEP_ROWS:-0}
PERF_LINES=${PERF_LINES:-}
PORT_BASE=${PORT_BASE:-18200}
LOADGEN_CPU=${LOADGEN_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
FOREIGN_LIMIT=${FOREIGN_LIMIT:-15}
RETRIES=${RETRIES:-2}
QUIET_LIMIT=${QUIET_LIMIT:-10}
QUIET_WAIT=${QUIET_WAIT:-60}
OTHER_WAIT=${OTHER_WAIT:-1800}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    -d | --duration) DURATION=${2:?}; shift 2 ;;
    -w | --warmup) WARMUP=${2:?}; shift 2 ;;
    -r | --reps) REPS=${2:?}; shift 2 ;;
    -c | --connections) CONNECTIONS=${2:?}; shift 2 ;;
    -l | --lines) LINES=${2:?}; shift 2 ;;
    -m | --modes) MODES=${2:?}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

for var in DURATION WARMUP REPS CONNECTIONS USERS SKUS MEM_ENTITIES MEM_TIMEOUT MEM_CONNECTIONS KEEP_ROWS \
  PORT_BASE LOADGEN_CPU SERVER_CPU FOREIGN_LIMIT RETRIES QUIET_LIMIT QUIET_WAIT OTHER_WAIT; do
  case "${!var}" in
    '' | *[!0-9]*) echo "$var must be a non-negative integer, got '${!var}'" >&2; exit 2 ;;
  esac
done
if [ "$DURATION" -lt 1 ] || [ "$REPS" -lt 1 ] || [ "$USERS" -lt 1 ] || [ "$SKUS" -lt 1 ] ||
  [ "$MEM_TIMEOUT" -lt 10 ] || [ "$MEM_CONNECTIONS" -lt 1 ]; then
  echo "DURATION, REPS, USERS, SKUS and MEM_CONNECTIONS must be at least 1, MEM_TIMEOUT at least 10" >&2
  exit 2
fi
if [ "$CONNECTIONS" -lt 6 ] || [ $((CONNECTIONS % 3)) -ne 0 ]; then
  echo "CONNECTIONS must be a multiple of 3, at least 6 (direct gives each of the 3 workers a third)" >&2
  exit 2
fi
for line in $LINES $PERF_LINES; do
  case "$line" in
    ceiling | ceiling-get | write-behind | durable | stateless | write-behind-generic | bare-hyper) ;;
    write-behind-before | durable-before)
      [ -x "${BEFORE_WORKER_BIN:-}" ] || { echo "$line needs BEFORE_WORKER_BIN: an earlier roost-worker binary" >&2; exit 2; }
      ;;
    *) echo "unknown line '$line' (ceiling, ceiling-get, write-behind, durable, stateless, write-behind-generic, write-behind-before, durable-before, bare-hyper)" >&2; exit 2 ;;
  esac
done
for mode in $MODES; do
  case "$mode" in
    proxy | direct) ;;
    *) echo "unknown mode '$mode' (proxy, direct)" >&2; exit 2 ;;
  esac
done
[ -n "$LINES" ] && [ -n "$MODES" ] || { echo "LINES and MODES must not be empty" >&2; exit 2; }

# shellcheck source=common.sh source-path=SCRIPTDIR
source "$SCRIPT_DIR/common.sh"

# ---------------------------------------------------------------------------
# 1. Prerequisites: packages (installed as root, else named) and the build.

ensure_packages() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  command -v psql >/dev/null || missing+=(postgresql-client)
  { command -v taskset >/dev/null && command -v setsid >/dev/null; } || missing+=(util-linux)
  command -v getconf >/dev/null || missing+=(libc-bin)
  { command -v cmake >/dev/null && command -v cc >/dev/null; } || missing+=(cmake build-essential)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}" >&2
    echo "install them as root, then run this again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  log "installing ${missing[*]} (apt-get)"
  apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

ensure_packages
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup)"

NPROC=$(nproc)
PINNING="wrk on CPU $LOADGEN_CPU; roost-proxy and the workers on CPU $SERVER_CPU; Postgres not pinned"
if [ "$NPROC" -lt 2 ]; then
  log "WARNING: nproc is $NPROC: wrk and the servers share CPU 0; the figures are not comparable"
  LOADGEN_CPU=0
  SERVER_CPU=0
  PINNING="NOT ISOLATED: only $NPROC CPU, wrk, the servers and Postgres share CPU 0"
fi
taskset -c "$LOADGEN_CPU" true 2>/dev/null || die "cannot pin to CPU $LOADGEN_CPU (set LOADGEN_CPU)"
taskset -c "$SERVER_CPU" true 2>/dev/null || die "cannot pin to CPU $SERVER_CPU (set SERVER_CPU)"
if [ -n "$PERF_LINES" ]; then
  command -v perf >/dev/null || die "PERF_LINES needs perf (linux-perf)"
fi

# other_bench_pids: pids of another benchmark script running (not us).
other_bench_pids() { pgrep -f 'loadtest/bench/proxy\.sh|(^|[ /])proxy\.sh( |$)' | grep -vx "$$" || true; }

# wait_other_bench: measuring while proxy.sh measures would spoil both.
wait_other_bench() {
  local waited=0 pids
  while pids=$(other_bench_pids) && [ -n "$pids" ]; do
    if [ "$waited" -eq 0 ]; then
      log "another benchmark is running (pid $(paste -sd, <<<"$pids")); waiting for it to finish (up to ${OTHER_WAIT}s)"
    fi
    [ "$waited" -ge "$OTHER_WAIT" ] && die "another benchmark still runs after ${OTHER_WAIT}s"
    sleep 5
    waited=$((waited + 5))
  done
  [ "$waited" -gt 0 ] && log "the other benchmark has finished (waited ${waited}s)"
  return 0
}

# The build is CPU-heavy: it must not land in someone else's measurement.
if [ -n "${BIN_DIR:-}" ]; then
  BIN=$(cd "$BIN_DIR" && pwd)
  [ -x "$BIN/roost-proxy" ] && [ -x "$BIN/roost-worker" ] && [ -x "$BIN/roost-fixed-reply" ] ||
    die "BIN_DIR $BIN_DIR lacks roost-proxy, roost-worker or roost-fixed-reply"
else
  wait_other_bench
  log "building roost-proxy, roost-worker and roost-fixed-reply (release)"
  # (--bin would narrow the first build to that binary in every package.)
  (cd "$ROOT" && cargo build --release -p roost-proxy -p roost-builtins &&
    cargo build --release -p roost-loadtest --bin roost-fixed-reply) >&2
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
fi
CART_LUA="$SCRIPT_DIR/cart.lua"
SESSIONS_LUA="$SCRIPT_DIR/sessions.lua"
[ -f "$CART_LUA" ] && [ -f "$SESSIONS_LUA" ] || die "missing $CART_LUA or $SESSIONS_LUA"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------
# Process control and clean-up.

WORK=""
RESULTS=""
PG_URL=""
PG_THROWAWAY=""   # data dir of a cluster we started (stopped on exit)
PG_RUNAS=()       # runuser prefix for the throwaway cluster's commands
RUN_ID=""
ROWS_WRITTEN=0

# vacuum_table: VACUUM roost_entities (not FULL: it takes no lock that
# blocks readers or writers). Every flushed change is an UPDATE and every
# stateless request one more; with autovacuum off (as on the local test
# cluster) dead rows pile up and slow every line down as a run goes on, so
# the run vacuums before each rep and after deleting its rows.
vacuum_table() {
  local started=$SECONDS out
  out=$(timeout 300 psql "$PG_URL" -XAtq -c "SELECT to_regclass('roost_entities') IS NOT NULL" 2>/dev/null || true)
  [ "$out" = t ] || return 0
  if out=$(timeout 300 psql "$PG_URL" -XAtq -c "VACUUM roost_entities" 2>&1); then
    log "VACUUM roost_entities took $((SECONDS - started)) s"
  else
    log "WARNING: VACUUM roost_entities failed: $out"
  fi
}

delete_rows() {
  [ "$ROWS_WRITTEN" -eq 1 ] && [ -n "$RUN_ID" ] && [ -z "$PG_THROWAWAY" ] || return 0
  if [ "$KEEP_ROWS" -eq 1 ]; then
    log "KEEP_ROWS=1: this run's rows stay in roost_entities (keys cart/$RUN_ID-*, session/$RUN_ID-*)"
    return 0
  fi
  local deleted
  if deleted=$(timeout 120 psql "$PG_URL" -XAtq -v ON_ERROR_STOP=1 -c \
    "WITH d AS (DELETE FROM roost_entities WHERE key LIKE 'cart/$RUN_ID-%' OR key LIKE 'session/$RUN_ID-%' RETURNING 1) SELECT count(*) FROM d" 2>&1); then
    log "deleted this run's $deleted rows from roost_entities"
    vacuum_table
  else
    log "WARNING: could not delete this run's rows (keys cart/$RUN_ID-*, session/$RUN_ID-*): $deleted"
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  stop_all_started
  delete_rows
  if [ -n "$PG_THROWAWAY" ]; then
    log "stopping the throwaway Postgres cluster"
    ${PG_RUNAS[@]+"${PG_RUNAS[@]}"} "$PG_CTL" -D "$PG_THROWAWAY/data" -m fast -w stop >/dev/null 2>&1 || true
    cp "$PG_THROWAWAY/postgres.log" "$RESULTS/logs/postgres-throwaway.log" 2>/dev/null || true
    rm -rf "$PG_THROWAWAY"
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  if [ "$rc" -ne 0 ] && [ -n "$RESULTS" ]; then
    log "stopped everything; partial results in ${RESULTS#"$ROOT"/}"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS="$ROOT/loadtest/results/worker-$STAMP"
mkdir -p "$RESULTS/logs"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/roost-worker-bench.XXXXXX")
chmod 755 "$WORK"

WORKER_PORTS=("$((PORT_BASE + 1))" "$((PORT_BASE + 2))" "$((PORT_BASE + 3))")
# The workers' admin listeners (--admin-listen): /metrics is served only there.
WORKER_ADMIN_PORTS=("$((PORT_BASE + 4))" "$((PORT_BASE + 5))" "$((PORT_BASE + 6))")
PROXY_PORT=$((PORT_BASE + 10))
PROXY_ADMIN_PORT=$((PORT_BASE + 11))
MEM_PORT=$((PORT_BASE + 20))
MEM_ADMIN_PORT=$((PORT_BASE + 21))
for port in "${WORKER_PORTS[@]}" "${WORKER_ADMIN_PORTS[@]}" "$PROXY_PORT" "$PROXY_ADMIN_PORT" "$MEM_PORT" "$MEM_ADMIN_PORT"; do
  ! port_in_use "$port" || die "127.0.0.1:$port is in use; pick other ports with PORT_BASE=..."
done

# ---------------------------------------------------------------------------
# 2. Postgres: $DATABASE_URL, else the local test database, else a throwaway
# cluster.

pg_ok() { timeout 5 psql "$1" -XAtqc 'SELECT 1' >/dev/null 2>&1; }

start_throwaway_postgres() {
  local initdb pg_ctl dir port
  initdb=$(command -v initdb || true)
  pg_ctl=$(command -v pg_ctl || true)
  if [ -z "$initdb" ] || [ -z "$pg_ctl" ]; then
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)
    pg_ctl=${initdb%/initdb}/pg_ctl
  fi
  [ -x "$initdb" ] && [ -x "$pg_ctl" ] ||
    die "no reachable Postgres and no initdb/pg_ctl to start one: set DATABASE_URL, or install postgresql"
  PG_CTL=$pg_ctl
  dir=$(mktemp -d "${TMPDIR:-/tmp}/roost-bench-pg.XXXXXX")
  chmod 755 "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "no postgres user to run a throwaway cluster as"
    chown postgres "$dir"
    PG_RUNAS=(runuser -u postgres --)
  fi
  port=$(free_port $((PORT_BASE + 50)))
  log "starting a throwaway Postgres cluster in $dir on 127.0.0.1:$port"
  "${PG_RUNAS[@]+"${PG_RUNAS[@]}"}" "$initdb" -D "$dir/data" -A trust -U postgres >"$RESULTS/logs/initdb.log" 2>&1 ||
    die "initdb failed; see ${RESULTS#"$ROOT"/}/logs/initdb.log"
  PG_THROWAWAY=$dir
  "${PG_RUNAS[@]+"${PG_RUNAS[@]}"}" "$pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c max_connections=200" start \
    >/dev/null || die "pg_ctl start failed; see $dir/postgres.log"
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  pg_ok "$PG_URL" || die "the throwaway cluster does not answer at $PG_URL"
}

LOCAL_PG=${LOCAL_PG:-postgres://postgres@127.0.0.1:5432/test}
if [ -n "${DATABASE_URL:-}" ] && pg_ok "$DATABASE_URL"; then
  PG_URL=$DATABASE_URL
  PG_SOURCE="\$DATABASE_URL"
else
  [ -n "${DATABASE_URL:-}" ] && log "WARNING: \$DATABASE_URL is set but does not answer; trying $LOCAL_PG"
  if pg_ok "$LOCAL_PG"; then
    PG_URL=$LOCAL_PG
    PG_SOURCE="$LOCAL_PG"
  else
    start_throwaway_postgres
    PG_SOURCE="throwaway cluster (initdb in a temp dir, stopped on exit)"
  fi
fi
pg_query() { timeout 10 psql "$PG_URL" -XAtq -F ' ' -c "$1" 2>/dev/null || echo "?"; }
PG_VERSION=$(pg_query "SHOW server_version")
PG_SETTINGS=$(pg_query "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name) FROM pg_settings
  WHERE name IN ('synchronous_commit', 'fsync', 'wal_sync_method', 'shared_buffers', 'max_connections', 'commit_delay',
    'full_page_writes', 'autovacuum')")
PG_FREE=$(pg_query "SELECT current_setting('max_connections')::int - count(*) FROM pg_stat_activity")
case "$PG_URL" in
  *@127.0.0.1[:/]* | *@localhost[:/]* | *@\[::1\]* | *://127.0.0.1[:/]* | *://localhost[:/]*) PG_LOCAL=1 ;;
  *) PG_LOCAL=0 ;;
esac
# A worker's pool holds up to 16 connections; 3 workers run at a time.
if [ "$PG_FREE" != "?" ] && [ "$PG_FREE" -lt 52 ]; then
  log "WARNING: Postgres has only $PG_FREE free connections; 3 workers may open 48 (errors would follow)"
fi
log "Postgres: $PG_SOURCE, version $PG_VERSION ($PG_SETTINGS)"
RUN_ID="rb$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')"
log "key prefix of this run: $RUN_ID"

# Machine and versions, for the report.
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
WRK_VERSION=$(first_line wrk -v)
WRK_VERSION=${WRK_VERSION%% Copyright*}
ROOST_VERSION=$(first_line "$BIN/roost-worker" --version)
RUSTC_VERSION=$(rustc --version 2>/dev/null || echo unknown)
KERNEL=$(uname -sr)
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
if GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
  if ! git -C "$ROOT" diff --quiet HEAD -- proxy worker routing Cargo.toml Cargo.lock; then
    GIT_REV+=" (with local changes: local-changes.diff)"
    git -C "$ROOT" diff HEAD -- proxy worker routing Cargo.toml Cargo.lock >"$RESULTS/local-changes.diff" || true
  fi
else
  GIT_REV=${BENCH_REV:-unknown}
fi
{
  echo "date: $DATE"
  echo "command: $COMMAND"
  echo "git: $GIT_REV"
  echo "nproc: $NPROC"
  echo "cpu: $CPU_MODEL"
  echo "kernel: $KERNEL"
  echo "pinning: $PINNING"
  echo "postgres: $PG_SOURCE; $PG_VERSION; $PG_SETTINGS; local=$PG_LOCAL; free connections at start: $PG_FREE"
  echo "wrk: $WRK_VERSION"
  echo "roost-worker: $ROOST_VERSION"
  echo "rustc: $RUSTC_VERSION"
  echo "key prefix: $RUN_ID"
  echo "loadavg at start: $(cat /proc/loadavg)"
  echo "settings: duration=${DURATION}s warmup=${WARMUP}s reps=$REPS connections=$CONNECTIONS users=$USERS devices_per_user=2 skus_per_device=$SKUS lines=[$LINES] modes=[$MODES] clk_tck=$CLK_TCK"
  echo "memory: entities=$MEM_ENTITIES timeout=${MEM_TIMEOUT}s connections=$MEM_CONNECTIONS"
  echo "disturbance: foreign_limit=${FOREIGN_LIMIT}% retries=$RETRIES quiet_limit=${QUIET_LIMIT}% quiet_wait=${QUIET_WAIT}s"
} >"$RESULTS/env.txt"

# ---------------------------------------------------------------------------
# 3. Workers and proxy.

# The throughput workers' config: the defaults, written out, except idle_ms
# (an hour: nothing passivates between reps).
cat >"$RESULTS/worker.yaml" <<EOF
# roost-worker config written by loadtest/bench/worker.sh
flush_interval_ms: 50
flush_batch_max: 512
idle_ms: 3600000
drain_timeout_ms: 10000
EOF
# The workers under test also get WORKER_YAML; BEFORE_WORKER_BIN's may not
# know its fields.
cp "$RESULTS/worker.yaml" "$RESULTS/worker-before.yaml"
[ -n "${WORKER_YAML:-}" ] && printf '%s\n' "$WORKER_YAML" >>"$RESULTS/worker.yaml"

cat >"$RESULTS/roost-proxy.yaml" <<EOF
# roost-proxy config written by loadtest/bench/worker.sh
listen: 127.0.0.1:$PROXY_PORT
admin_listen: 127.0.0.1:$PROXY_ADMIN_PORT
hash_seed: "roost-bench"
key:
  sources: [{header: x-user-id}]
  missing: reject
workers:
  - {id: w1, addr: 127.0.0.1:${WORKER_PORTS[0]}, weight: 1}
  - {id: w2, addr: 127.0.0.1:${WORKER_PORTS[1]}, weight: 1}
  - {id: w3, addr: 127.0.0.1:${WORKER_PORTS[2]}, weight: 1}
threads: 1
access_log: false
EOF

WORKER_SET=""     # memory | stateless | before: what runs on WORKER_PORTS now
WORKER_PIDS=()
WORKER_STARTS=0

# wait_healthy NAME PID PORT: until GET /healthz answers 200 (15 s).
wait_healthy() {
  local name=$1 pid=$2 port=$3
  for _ in $(seq 150); do
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/healthz" 2>/dev/null && return 0
    group_alive "$pid" || die "$name exited during start-up; see ${RESULTS#"$ROOT"/}/logs/"
    sleep 0.1
  done
  die "$name did not answer /healthz within 15 s"
}

# use_workers memory|stateless|before|fixed: make that set of 3 workers the
# running one ("before": BEFORE_WORKER_BIN's build, in memory; "fixed":
# roost-fixed-reply servers, for the bare-hyper line).
use_workers() {
  local set=$1 i flags=() bin="$BIN/roost-worker" config="$RESULTS/worker.yaml"
  [ "$WORKER_SET" = "$set" ] && return 0
  if [ -n "$WORKER_SET" ]; then
    log "stopping the $WORKER_SET workers (SIGTERM: drain and last flush)"
    for i in "${!WORKER_PIDS[@]}"; do
      stop_server "${WORKER_PIDS[$i]}" TERM 15
    done
  fi
  [ "$set" = stateless ] && flags=(--stateless)
  [ "$set" = before ] && bin=$BEFORE_WORKER_BIN && config="$RESULTS/worker-before.yaml"
  # Memory workers start empty: their carts must be claimed again. (The
  # stateless workers' rows stay in Postgres.)
  local key
  for key in "${!ACTIVE[@]}"; do
    [ "${key%%:*}" != stateless ] && unset "ACTIVE[$key]"
  done
  WORKER_STARTS=$((WORKER_STARTS + 1))
  WORKER_PIDS=()
  # One after the other: each worker runs CREATE TABLE IF NOT EXISTS at
  # start, and on an empty database concurrent ones collide (Postgres:
  # duplicate key in pg_type_typname_nsp_index; the loser exits).
  for i in 1 2 3; do
    if [ "$set" = fixed ]; then
      start_server "fixed-reply w$i" "$RESULTS/logs/$(printf '%02d' "$WORKER_STARTS")-fixed-w$i.log" TERM \
        "$BIN/roost-fixed-reply" --id "w$i" --listen "127.0.0.1:${WORKER_PORTS[$((i - 1))]}"
      WORKER_PIDS+=("$SERVER_PID")
      wait_healthy "fixed-reply w$i" "$SERVER_PID" "${WORKER_PORTS[$((i - 1))]}"
      continue
    fi
    RUST_LOG=info start_server "$set worker w$i" "$RESULTS/logs/$(printf '%02d' "$WORKER_STARTS")-$set-w$i.log" TERM \
      "$bin" --id "w$i" --listen "127.0.0.1:${WORKER_PORTS[$((i - 1))]}" \
      --admin-listen "127.0.0.1:${WORKER_ADMIN_PORTS[$((i - 1))]}" \
      --store "$PG_URL" --config "$config" ${flags[@]+"${flags[@]}"}
    WORKER_PIDS+=("$SERVER_PID")
    wait_healthy "worker w$i" "$SERVER_PID" "${WORKER_PORTS[$((i - 1))]}"
  done
  WORKER_SET=$set
}

PROXY_PID=""
start_proxy() {
  local pid attempt key headers workers ok
  RUST_LOG=info start_server roost-proxy "$1" INT "$BIN/roost-proxy" --config "$RESULTS/roost-proxy.yaml"
  PROXY_PID=$SERVER_PID
  # Ready: 30 keys in a row answered 200, by all 3 workers (workers start
  # down in the proxy until their health checks pass).
  for attempt in $(seq 150); do
    group_alive "$PROXY_PID" || die "roost-proxy exited during start-up; see $1"
    ok=1
    workers=""
    for key in $(seq -f 'ready-%05g' 1 30); do
      if ! headers=$(curl -sS -o /dev/null -D - --max-time 1 -H "x-user-id: $key" \
        "http://127.0.0.1:$PROXY_PORT/v1/whoami" 2>/dev/null) || ! grep -q '^HTTP/1.1 200' <<<"$headers"; then
        ok=0
        break
      fi
      workers+="$(tr -d '\r' <<<"$headers" | awk -F': ' 'tolower($1)=="x-roost-worker" {print $2}') "
    done
    if [ "$ok" -eq 1 ] && [ "$(tr ' ' '\n' <<<"$workers" | sort -u | grep -c .)" -ge 3 ]; then
      return 0
    fi
    sleep 0.1
  done
  die "roost-proxy did not answer 200 from 3 workers within 15 s"
}

stop_proxy() {
  [ -n "$PROXY_PID" ] || return 0
  stop_server "$PROXY_PID" INT
  PROXY_PID=""
}

# scrape_workers FILE: the 3 workers' /metrics (on their admin listeners), concatenated.
scrape_workers() {
  local port
  for port in "${WORKER_ADMIN_PORTS[@]}"; do
    curl -fsS --max-time 2 "http://127.0.0.1:$port/metrics" 2>/dev/null || true
  done >"$1"
}

# metric_sum FILE NAME: the sum of an unlabelled sample over the workers.
metric_sum() { awk -v n="$2" '$1 == n { s += $2 } END { printf "%.6f\n", s }' "$1"; }

# dirty_total: entities with unflushed changes, over the 3 workers.
dirty_total() {
  local file="$WORK/dirty.prom"
  scrape_workers "$file"
  metric_sum "$file" roost_worker_dirty_entities | awk '{ printf "%d\n", $1 }'
}

# line_abbrev LINE: the line's part of the key prefix.
is_ceiling() { [ "$1" = ceiling ] || [ "$1" = ceiling-get ]; }
line_abbrev() { case "$1" in bare-hyper) echo bh ;; ceiling) echo c ;; ceiling-get) echo cg ;; write-behind) echo wb ;; durable) echo du ;; stateless) echo sl ;; write-behind-generic) echo wg ;; write-behind-before) echo wo ;; durable-before) echo do ;; esac; }

# wrk_cmd LINE MODE: sets WRK (the command) and WRK_ENV for a run.
wrk_cmd() {
  local line=$1 mode=$2 prefix
  prefix="$RUN_ID-$(line_abbrev "$line")-${mode:0:1}"
  if [ "$mode" = proxy ]; then
    WRK=(taskset -c "$LOADGEN_CPU" wrk -t1 "-c$CONNECTIONS" --latency -s "$CART_LUA"
      "http://127.0.0.1:$PROXY_PORT" -- proxied "$line" "$USERS" "$prefix" "$SKUS")
    WRK_ENV=(env ROOST_WORKER_PORTS=)
  else
    WRK=(taskset -c "$LOADGEN_CPU" wrk -t3 "-c$CONNECTIONS" --latency -s "$CART_LUA"
      "http://127.0.0.1:${WORKER_PORTS[0]}" -- direct "$line" "$USERS" "$prefix" "$SKUS")
    WRK_ENV=(env "ROOST_WORKER_PORTS=$(
      IFS=,
      echo "${WORKER_PORTS[*]}"
    )")
  fi
}

declare -A ACTIVE=() # "set:prefix" of every user namespace already activated

# activate LINE MODE: one GET /v1/cart per user of the line's namespace
# (claims the carts on the memory workers; creates the rows for
# --stateless), once per namespace and worker start, so that measured
# windows see only steady state. Waits until wrk's Lua has seen every user's
# 200 (marker files), up to 120 s.
activate() {
  local line=$1 mode=$2 prefix threads=1 url ports=()
  is_ceiling "$line" || [ "$line" = bare-hyper ] && return 0
  prefix="$RUN_ID-$(line_abbrev "$line")-${mode:0:1}"
  [ -n "${ACTIVE[$WORKER_SET:$prefix]:-}" ] && return 0
  url="http://127.0.0.1:$PROXY_PORT"
  if [ "$mode" = direct ]; then
    threads=3
    url="http://127.0.0.1:${WORKER_PORTS[0]}"
    ports=("${WORKER_PORTS[@]}")
  fi
  rm -f "$WORK"/activated-*
  local started=$SECONDS out="$RESULTS/$mode-$line/activate-$WORKER_STARTS.txt"
  mkdir -p "$RESULTS/$mode-$line"
  PIN_CPU=$LOADGEN_CPU start_server "wrk (activate $mode $line)" "$out" INT \
    env "ROOST_ACTIVATE_MARKER=$WORK/activated-" "ROOST_WORKER_PORTS=$(
      IFS=,
      echo "${ports[*]}"
    )" wrk "-t$threads" "-c$CONNECTIONS" -d120s -s "$CART_LUA" "$url" -- \
    "$([ "$mode" = proxy ] && echo proxied || echo direct)" activate "$USERS" "$prefix"
  local pid=$SERVER_PID
  while [ "$(find "$WORK" -maxdepth 1 -name 'activated-*' | wc -l)" -lt "$threads" ]; do
    if ! group_alive "$pid" || [ $((SECONDS - started)) -ge 120 ]; then
      stop_server "$pid" INT
      die "the activation pass of $mode $line did not get 200 for all $USERS users; see $out"
    fi
    sleep 0.2
  done
  stop_server "$pid" INT
  ACTIVE[$WORKER_SET:$prefix]=1
  log "activated the $USERS users of $mode $line in $((SECONDS - started)) s"
}

# ---------------------------------------------------------------------------
# 4. Measurements.

RUNS="$RESULTS/runs.tsv"
printf '%s\n' "rep	line	mode	attempt	counted	req_per_s	p50_ms	p99_ms	p999_ms	max_ms	requests	ok_2xx	not_in_cart	errors	non_2xx_other	socket_errors	worker_us_per_req	proxy_us_per_req	postgres_us_per_req	wrk_cpu_pct	server_cpu_pct	postgres_cpu_pct	foreign_pct	steal_pct	claims	flush_batches	flush_rows_per_batch	flush_ms_per_batch	durable_ack_ms	flush_over_50ms	ack_over_50ms	flush_failures	fenced_writes	settle_ms	wall_s	worker_sys_us_per_req" >"$RUNS"
ERRORS_SEEN=0
DISTURBED_KEPT=0
STUCK_FLUSH=0

# measure LINE MODE REP ATTEMPT: one warm-up and one measured wrk run; appends
# a row to runs.tsv (counted left as "?") and sets DISTURBED.
measure() {
  local line=$1 mode=$2 rep=$3 attempt=$4
  local dir="$RESULTS/$mode-$line" tag="$rep"
  [ "$attempt" -gt 1 ] && tag="$rep-try$attempt"
  mkdir -p "$dir"
  wrk_cmd "$line" "$mode"

  wait_other_bench
  wait_quiet "$LOADGEN_CPU" "$SERVER_CPU" "$QUIET_LIMIT" "$QUIET_WAIT"
  if [ "$WARMUP" -gt 0 ]; then
    "${WRK_ENV[@]}" "${WRK[@]:0:5}" "-d${WARMUP}s" "${WRK[@]:5}" >"$dir/warmup-$tag.txt" 2>&1 ||
      die "wrk warm-up ($mode $line) failed; see $dir/warmup-$tag.txt"
  fi

  local proxy_pids=() out="$dir/wrk-$tag.txt"
  [ -n "$PROXY_PID" ] && read -r -a proxy_pids <<<"$(session_pids "$PROXY_PID" | paste -sd' ' -)"
  local lg0 sv0 lg1 sv1 w0 w1 ws0 ws1 p0 p1 pg0 pg1 k0 k1 t0 t1
  scrape_workers "$dir/metrics-before-$tag.prom"
  lg0=$(cpu_stat "$LOADGEN_CPU")
  sv0=$(cpu_stat "$SERVER_CPU")
  w0=$(cpu_ticks "${WORKER_PIDS[@]}")
  ws0=$(sys_ticks "${WORKER_PIDS[@]}")
  p0=$(cpu_ticks ${proxy_pids[@]+"${proxy_pids[@]}"})
  pg0=$(comm_ticks postgres)
  k0=$(children_ticks)
  t0=$EPOCHREALTIME
  "${WRK_ENV[@]}" "${WRK[@]:0:5}" "-d${DURATION}s" "${WRK[@]:5}" >"$out" 2>&1 ||
    die "wrk ($mode $line) failed; see $out"
  t1=$EPOCHREALTIME
  k1=$(children_ticks)
  pg1=$(comm_ticks postgres)
  p1=$(cpu_ticks ${proxy_pids[@]+"${proxy_pids[@]}"})
  w1=$(cpu_ticks "${WORKER_PIDS[@]}")
  ws1=$(sys_ticks "${WORKER_PIDS[@]}")
  lg1=$(cpu_stat "$LOADGEN_CPU")
  sv1=$(cpu_stat "$SERVER_CPU")
  scrape_workers "$dir/metrics-after-$tag.prom"
  local w
  for w in "${WORKER_PIDS[@]}"; do
    group_alive "$w" || die "a worker died during $mode $line; see ${RESULTS#"$ROOT"/}/logs/"
  done
  [ -z "$PROXY_PID" ] || group_alive "$PROXY_PID" || die "roost-proxy died during $mode $line"

  # Unflushed changes must drain within a few flush intervals.
  local settle_ms=0 s0=$EPOCHREALTIME dirty=0
  if [ "$WORKER_SET" = memory ] && ! is_ceiling "$line"; then
    for _ in $(seq 100); do
      dirty=$(dirty_total)
      [ "$dirty" -eq 0 ] && break
      sleep 0.1
    done
    settle_ms=$(awk -v a="$s0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
    if [ "$dirty" -ne 0 ]; then
      STUCK_FLUSH=1
      log "WARNING: $dirty entities still dirty 10 s after the run ($mode $line rep $rep)"
      settle_ms="stuck:$dirty"
    fi
  fi

  local rps requests
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  requests=$(awk '/ requests in / {print $1}' "$out")
  [ -n "$rps" ] && [ -n "${requests:-}" ] && [ "$requests" -gt 0 ] || die "cannot read wrk's output $out"
  local pgd
  pgd=$(ticks_delta "$pg0" "$pg1")

  local row
  row=$(awk -v rep="$rep" -v line="$line" -v mode="$mode" -v attempt="$attempt" -v rps="$rps" -v n="$requests" \
    -v hz="$CLK_TCK" -v t0="$t0" -v t1="$t1" -v w="$((w1 - w0))" -v ws="$((ws1 - ws0))" -v p="$((p1 - p0))" -v pg="$pgd" \
    -v k="$((k1 - k0))" -v lg="$lg0 $lg1" -v sv="$sv0 $sv1" -v lim="$FOREIGN_LIMIT" -v settle="$settle_ms" \
    -v before="$dir/metrics-before-$tag.prom" -v after="$dir/metrics-after-$tag.prom" '
    function metric(file, name,   line, f, s) {
      s = 0
      while ((getline line < file) > 0) { split(line, f, " "); if (f[1] == name) s += f[2] }
      close(file)
      return s
    }
    function delta(name) { return metric(after, name) - metric(before, name) }
    $1 == "roost-bench" && $2 == "status" { st = $3 + 0; if (st >= 200 && st < 300) ok += $4; else bad += $4 }
    $1 == "roost-bench" && $2 == "not_in_cart" { nic = $3 }
    $1 == "roost-bench" && $2 == "latency_us" { p50 = $4; p99 = $8; p999 = $10; mx = $12 }
    $1 == "roost-bench" && $2 == "socket_errors" { sock = $4 + $6 + $8 + $10 }
    END {
      other = bad - nic
      wall = t1 - t0
      # cpu_stat before (1-4) and after (5-8): busy steal total task
      split(lg, a, " "); split(sv, b, " ")
      span = ((a[7] - a[3]) + (b[7] - b[3])) / 2     # jiffies of one CPU
      task = (a[8] - a[4]) + (b[8] - b[4])           # process time, both CPUs
      steal = ((a[6] - a[2]) + (b[6] - b[2])) * 100 / span
      ours = w + p + k + pg
      foreign = (task - ours) * 100 / span; if (foreign < 0) foreign = 0
      batches = delta("roost_worker_flush_batch_rows_count")
      rows = delta("roost_worker_flush_batch_rows_sum")
      fsec = delta("roost_worker_flush_batch_seconds_sum")
      acks = delta("roost_worker_durable_ack_seconds_count")
      asec = delta("roost_worker_durable_ack_seconds_sum")
      slow_flush = batches - delta("roost_worker_flush_batch_seconds_bucket{le=\"0.05\"}")
      slow_ack = acks - delta("roost_worker_durable_ack_seconds_bucket{le=\"0.05\"}")
      printf "%s\t%s\t%s\t%s\t?\t%.2f\t%.3f\t%.3f\t%.3f\t%.3f\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%.2f\t%.1f\n",
        rep, line, mode, attempt, rps, p50 / 1000, p99 / 1000, p999 / 1000, mx / 1000, n, ok, nic,
        other + sock, other, sock,
        w * 1e6 / hz / n, p * 1e6 / hz / n, pg * 1e6 / hz / n,
        k * 100 / hz / wall, (w + p) * 100 / hz / wall, pg * 100 / hz / wall, foreign, steal,
        delta("roost_worker_claims_total"), batches,
        (batches > 0) ? sprintf("%.1f", rows / batches) : "-",
        (batches > 0) ? sprintf("%.2f", fsec * 1000 / batches) : "-",
        (acks > 0) ? sprintf("%.2f", asec * 1000 / acks) : "-", slow_flush, slow_ack,
        delta("roost_worker_flush_failures_total"), delta("roost_worker_fenced_writes_total"), settle, wall, ws * 1e6 / hz / n
    }' "$out")
  printf '%s\n' "$row" >>"$RUNS"
  local f
  IFS=$'\t' read -r -a f <<<"$row"
  # Columns (0-based): 5 rps, 6 p50, 7 p99, 12 not_in_cart, 13 errors,
  # 16 worker µs, 17 proxy µs, 18 postgres µs, 19 wrk %, 20 server %,
  # 21 postgres %, 22 foreign %, 23 steal %, 35 worker kernel µs.
  log "rep $rep $mode $line (try $attempt): ${f[5]} req/s, p50 ${f[6]} ms, p99 ${f[7]} ms, errors ${f[13]}, 404 ${f[12]};" \
    "CPU µs/req worker ${f[16]} (kernel ${f[35]}) proxy ${f[17]} postgres ${f[18]}; wrk ${f[19]}%, servers ${f[20]}%, postgres ${f[21]}%, other ${f[22]}%, steal ${f[23]}%"
  DISTURBED=$(awk -v fo="${f[22]}" -v st="${f[23]}" -v lim="$FOREIGN_LIMIT" 'BEGIN { print (fo > lim || st > lim) ? 1 : 0 }')
  if [ "${f[13]}" != 0 ]; then
    ERRORS_SEEN=1
    log "WARNING: rep $rep $mode $line: ${f[13]} errors (see $out)"
  fi
}

# worker_set LINE: the set of workers LINE runs on.
worker_set() {
  case "$1" in
    stateless) echo stateless ;;
    write-behind-before | durable-before) echo before ;;
    bare-hyper) echo fixed ;;
    *) echo memory ;;
  esac
}

# run_one LINE MODE REP: measure with retries when disturbed.
run_one() {
  local line=$1 mode=$2 rep=$3 attempt
  use_workers "$(worker_set "$line")"
  for attempt in $(seq $((RETRIES + 1))); do
    [ "$mode" = proxy ] && start_proxy "$RESULTS/logs/proxy-$line-$rep-$attempt.log"
    activate "$line" "$mode"
    measure "$line" "$mode" "$rep" "$attempt"
    if [ "$mode" = proxy ]; then
      curl -fsS --max-time 2 "http://127.0.0.1:$PROXY_ADMIN_PORT/metrics" >"$RESULTS/$mode-$line/proxy-metrics-$rep-$attempt.prom" 2>/dev/null || true
      stop_proxy
    fi
    keep_measurement "rep $rep $mode $line" "$attempt" && return 0
  done
}

# Snake order: rep 1 goes through (line, mode) in order, rep 2 backwards, ...
SEQUENCE=()
for line in $LINES; do
  for mode in $MODES; do
    # bare-hyper has no proxy run: the proxy's figures are proxy.sh's.
    [ "$line:$mode" = bare-hyper:proxy ] && continue
    SEQUENCE+=("$line:$mode")
  done
done
ROWS_WRITTEN=1
log "results: ${RESULTS#"$ROOT"/}; $REPS reps x ${#SEQUENCE[@]} runs, ${WARMUP}s warm-up + ${DURATION}s each, $CONNECTIONS connections, $USERS users x 2 devices"
for rep in $(seq "$REPS"); do
  wait_other_bench
  vacuum_table
  order=("${SEQUENCE[@]}")
  if [ $((rep % 2)) -eq 0 ]; then
    order=()
    for ((i = ${#SEQUENCE[@]} - 1; i >= 0; i--)); do order+=("${SEQUENCE[$i]}"); done
  fi
  for item in "${order[@]}"; do
    run_one "${item%%:*}" "${item##*:}" "$rep"
  done
done

# Optional profiles: one extra proxied run per line under perf (not counted).
# Call graphs by DWARF unwinding (the release build keeps line tables), at
# 999 Hz, of everything on SERVER_CPU; the reports go to perf-LINE.txt.
for line in $PERF_LINES; do
  use_workers "$(worker_set "$line")"
  start_proxy "$RESULTS/logs/proxy-perf-$line.log"
  activate "$line" proxy
  wrk_cmd "$line" proxy
  wait_other_bench
  wait_quiet "$LOADGEN_CPU" "$SERVER_CPU" "$QUIET_LIMIT" "$QUIET_WAIT"
  log "profiling $line through the proxy: perf record --call-graph dwarf -C $SERVER_CPU for ${DURATION}s"
  data="$WORK/perf-$line.data"
  "${WRK_ENV[@]}" "${WRK[@]:0:5}" "-d$((DURATION + 2))s" "${WRK[@]:5}" >"$RESULTS/perf-$line-wrk.txt" 2>&1 &
  wrk_pid=$!
  sleep 1
  perf record -q -F 999 --call-graph dwarf,16384 -C "$SERVER_CPU" -o "$data" -- sleep "$DURATION" \
    >/dev/null 2>"$WORK/perf-record.err" || log "WARNING: perf record failed: $(head -c 300 "$WORK/perf-record.err")"
  wait "$wrk_pid" || true
  if [ -s "$data" ]; then
    pids=$(IFS=,; echo "${WORKER_PIDS[*]}")
    report() { perf report -q -i "$data" --stdio "$@" 2>/dev/null; }
    {
      echo "# perf record -F 999 --call-graph dwarf -C $SERVER_CPU during a proxied $line run"
      echo "# ($(awk '/^Requests\/sec:/ {print $2}' "$RESULTS/perf-$line-wrk.txt") req/s under perf)"
      echo "## self time by process:"
      report --no-children -g none --sort comm | head -n 12
      echo "## self time by process and binary:"
      report --no-children -g none --sort comm,dso --percent-limit 0.5 | head -n 20
      echo "## self time by symbol, everything on CPU $SERVER_CPU (>= 0.5%):"
      report --no-children -g none --sort comm,dso,symbol --percent-limit 0.5 | head -n 60
      echo "## the workers only (pids $pids): self time by binary and symbol (>= 0.7% of their samples):"
      report --pid="$pids" --no-children -g none --sort dso,symbol --percent-limit 0.7 | head -n 50
      echo "## the workers only: inclusive time by symbol (>= 3%):"
      report --pid="$pids" --children -g none --sort symbol --percent-limit 3 | head -n 70
    } | sed -e 's/[[:space:]-]*$//' -e '/^$/d' >"$RESULTS/perf-$line.txt" || true
    log "profile of $line: ${RESULTS#"$ROOT"/}/perf-$line.txt"
    if [ "${PERF_KEEP:-0}" = 1 ]; then
      echo "$pids" >"$RESULTS/perf-$line.pids"
      mv "$data" "$RESULTS/perf-$line.data"
    else
      rm -f "$data"
    fi
  fi
  stop_proxy
done

# The throughput workers are done; the memory part runs one worker alone.
for i in "${!WORKER_PIDS[@]}"; do
  stop_server "${WORKER_PIDS[$i]}" TERM 15
done
WORKER_PIDS=()
WORKER_SET=""

# ---------------------------------------------------------------------------
# 5. Memory per active entity.

rss_kb() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
mem_metric() {
  curl -fsS --max-time 5 "http://127.0.0.1:$MEM_ADMIN_PORT/metrics" 2>/dev/null |
    awk -v n="$1" '$1 == n { printf "%d\n", $2; found = 1 } END { if (!found) print -1 }'
}

MEM_SUMMARY=""
if [ "$MEM_ENTITIES" -gt 0 ]; then
  wait_other_bench
  wait_quiet "$LOADGEN_CPU" "$SERVER_CPU" "$QUIET_LIMIT" "$QUIET_WAIT"
  cat >"$RESULTS/memory-worker.yaml" <<EOF
# roost-worker config for the memory part: nothing passivates (idle_ms: a day)
flush_interval_ms: 50
flush_batch_max: 512
idle_ms: 86400000
drain_timeout_ms: 60000
EOF
  mem_dir="$RESULTS/memory"
  mkdir -p "$mem_dir"
  RUST_LOG=info start_server "memory worker m1" "$RESULTS/logs/memory-m1.log" TERM \
    "$BIN/roost-worker" --id m1 --listen "127.0.0.1:$MEM_PORT" --admin-listen "127.0.0.1:$MEM_ADMIN_PORT" \
    --store "$PG_URL" --config "$RESULTS/memory-worker.yaml"
  MEM_PID=$SERVER_PID
  wait_healthy "memory worker" "$MEM_PID" "$MEM_PORT"
  # One request of each kind first, so what a first request sets up once
  # (metric families, the store pool) is in the "before" figure.
  curl -fsS -o /dev/null --max-time 5 -X PUT -H "x-roost-key: $RUN_ID-mem-warm" \
    -d '{"theme":"dark","n":0}' "http://127.0.0.1:$MEM_PORT/v1/session" || die "the memory worker does not take a PUT"
  curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$MEM_ADMIN_PORT/metrics" || true
  sleep 1
  base_active=$(mem_metric roost_worker_active_entities)
  rss_before=$(rss_kb "$MEM_PID")
  log "memory: worker VmRSS before: $rss_before kB ($base_active entity active); activating $MEM_ENTITIES sessions (up to ${MEM_TIMEOUT}s)"

  PIN_CPU=$LOADGEN_CPU start_server "wrk (sessions)" "$mem_dir/wrk.txt" INT \
    wrk -t1 "-c$MEM_CONNECTIONS" "-d${MEM_TIMEOUT}s" --timeout 10s -s "$SESSIONS_LUA" \
    "http://127.0.0.1:$MEM_PORT" -- "$RUN_ID-mem" "$MEM_ENTITIES"
  MEM_WRK=$SERVER_PID
  target=$((MEM_ENTITIES + base_active))
  start=$EPOCHREALTIME
  printf 'elapsed_s\tactive\tdirty\trss_kb\n' >"$mem_dir/progress.tsv"
  last_active=-1
  last_change=$start
  mem_reached=0
  while :; do
    sleep 2
    now=$EPOCHREALTIME
    elapsed=$(awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
    active=$(mem_metric roost_worker_active_entities)
    dirty=$(mem_metric roost_worker_dirty_entities)
    rss=$(rss_kb "$MEM_PID")
    printf '%s\t%s\t%s\t%s\n' "$elapsed" "$active" "$dirty" "$rss" >>"$mem_dir/progress.tsv"
    if [ "$active" -ge "$target" ]; then
      mem_reached=1
      break
    fi
    if [ "$active" != "$last_active" ]; then
      last_active=$active
      last_change=$now
    fi
    group_alive "$MEM_PID" || die "the memory worker died; see ${RESULTS#"$ROOT"/}/logs/memory-m1.log"
    group_alive "$MEM_WRK" || { log "WARNING: wrk (sessions) ended before all entities were active"; break; }
    if awk -v a="$last_change" -v b="$now" 'BEGIN { exit !(b - a > 60) }'; then
      log "WARNING: no new entity for 60 s; stopping the activation at $active"
      break
    fi
    if awk -v e="$elapsed" -v t="$MEM_TIMEOUT" 'BEGIN { exit !(e >= t - 5) }'; then
      log "WARNING: MEM_TIMEOUT (${MEM_TIMEOUT}s) reached at $active entities"
      break
    fi
    case "${elapsed%.*}" in *0 | *1) log "memory: ${elapsed}s: $active active, $dirty dirty, VmRSS $rss kB" ;; esac
  done
  activation_s=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  stop_server "$MEM_WRK" INT 10
  active=$(mem_metric roost_worker_active_entities)
  rss_active=$(rss_kb "$MEM_PID")
  log "memory: $active active after ${activation_s}s; VmRSS $rss_active kB; waiting for the flusher to drain"
  drain_start=$EPOCHREALTIME
  for _ in $(seq 600); do
    dirty=$(mem_metric roost_worker_dirty_entities)
    [ "$dirty" -eq 0 ] && break
    sleep 0.5
  done
  drain_s=$(awk -v a="$drain_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  [ "$dirty" -eq 0 ] || { STUCK_FLUSH=1; log "WARNING: $dirty entities still dirty after 300 s"; }
  sleep 1
  active=$(mem_metric roost_worker_active_entities)
  rss_drained=$(rss_kb "$MEM_PID")
  hwm=$(hwm_kb "$MEM_PID")
  curl -fsS --max-time 10 "http://127.0.0.1:$MEM_ADMIN_PORT/metrics" >"$mem_dir/metrics-end.prom" 2>/dev/null || true
  stop_server "$MEM_PID" TERM 60
  entities=$((active - base_active))
  MEM_SUMMARY=$(awk -v n="$entities" -v want="$MEM_ENTITIES" -v b="$rss_before" -v a="$rss_active" -v d="$rss_drained" \
    -v h="$hwm" -v t="$activation_s" -v ds="$drain_s" -v dirty="$dirty" -v reached="$mem_reached" -v file="$mem_dir/wrk.txt" 'BEGIN {
      while ((getline line < file) > 0) {
        split(line, f, " ")
        if (f[1] == "roost-bench" && f[2] == "status" && f[3] != 200) st = st sprintf("%s%s: %s", (st == "") ? "" : ", ", f[3], f[4])
      }
      if (st == "") st = "none"
      if (n <= 0) { print "- Memory: no entity was activated; see memory/wrk.txt."; exit }
      per_active = (a - b) * 1024 / n; per_drained = (d - b) * 1024 / n
      printf "- Memory per active session entity: **%.0f bytes** ((VmRSS %d kB after the flusher drained − %d kB before) / %d entities; %.0f bytes with changes still queued right after activation, VmRSS %d kB; peak VmHWM %d kB).\n", per_drained, d, b, n, per_active, a, h
      printf "- Activation: %d distinct sessions in %.1f s (%.0f/s: one claim, an INSERT … ON CONFLICT, per entity), flusher drained in %.1f s after that (dirty at the end: %d); non-200 answers: %s.\n", n, t, n / t, ds, dirty, st
      if (n < want) printf "- **Extrapolated:** only %d of %d entities were reached; at %.0f bytes each, %d entities would need about %.0f MB over the %.0f MB baseline (linear extrapolation, not measured).\n", n, want, per_drained, want, per_drained * want / 1048576, b / 1024
    }')
  printf '%s\n' "$MEM_SUMMARY" >"$mem_dir/summary.md"
  log "memory: before $rss_before kB, active $rss_active kB, drained $rss_drained kB, $entities entities"
fi

# ---------------------------------------------------------------------------
# 6. Summary.

column_of() { # column_of LINE MODE COLUMN: that column of every counted run
  awk -F'\t' -v l="$1" -v m="$2" -v c="$3" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) col = i; next }
    $2 == l && $3 == m && $5 == 1 { print $col }' "$RUNS"
}
med() { column_of "$1" "$2" "$3" | awk '$1 != "-"' | median; }

# paired A B MODE COLUMN: "min–max" of A's COLUMN / B's COLUMN over the reps
# both have (each rep's own ratio, so a lucky rep of one line cannot hide).
paired() {
  awk -F'\t' -v a="$1" -v b="$2" -v m="$3" -v c="$4" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == c) col = i; next }
    $3 == m && $5 == 1 && $2 == a { x[$1] = $col }
    $3 == m && $5 == 1 && $2 == b { y[$1] = $col }
    END {
      n = 0
      for (r in x) if ((r in y) && y[r] > 0) { v = x[r] / y[r]; if (n == 0 || v < lo) lo = v; if (n == 0 || v > hi) hi = v; n++ }
      if (n == 0) print "n/a"; else printf "%.2f–%.2f×", lo, hi
    }' "$RUNS"
}

line_name() {
  case "$1" in
    ceiling) echo "ceiling (the same requests to /v1/whoami)" ;;
    ceiling-get) echo "ceiling, GET (\`GET /v1/whoami\`)" ;;
    write-behind) echo "Roost write-behind" ;;
    durable) echo "Roost durable" ;;
    stateless) echo "stateless baseline (--stateless)" ;;
    bare-hyper) echo "bare hyper (roost-fixed-reply), the write-behind requests" ;;
    write-behind-generic) echo "Roost write-behind, generic scheme (\`/v1/cart/add\`, \`/v1/cart/remove\`)" ;;
    write-behind-before) echo "Roost write-behind, workers of BEFORE_WORKER_BIN" ;;
    durable-before) echo "Roost durable, workers of BEFORE_WORKER_BIN" ;;
  esac
}

summary="$RESULTS/summary.md"
{
  echo "Worker benchmark, $DATE (roost $GIT_REV)"
  echo
  echo "| path | line | req/s (median) | req/s min–max | p50 ms | p99 ms | errors | 404 not_in_cart | CPU µs/req: workers (of it, kernel) / proxy / Postgres | flush rows/batch | durable ack ms | flushes > 50 ms (all reps) |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for mode in $MODES; do
    [ "$mode" = proxy ] && path="through roost-proxy" || path="direct to the workers"
    for line in $LINES; do
      rps=$(med "$line" "$mode" req_per_s)
      [ "$rps" = NaN ] && continue
      lo=$(column_of "$line" "$mode" req_per_s | sort -g | awk 'NR == 1')
      hi=$(column_of "$line" "$mode" req_per_s | sort -g | awk 'END { print }')
      errs=$(column_of "$line" "$mode" errors | awk '{ s += $1 } END { print s + 0 }')
      nic=$(column_of "$line" "$mode" not_in_cart | awk '{ s += $1 } END { print s + 0 }')
      rows=$(med "$line" "$mode" flush_rows_per_batch)
      ack=$(med "$line" "$mode" durable_ack_ms)
      slow=$(column_of "$line" "$mode" flush_over_50ms | awk '{ s += $1 } END { print s + 0 }')
      is_ceiling "$line" || [ "$line" = stateless ] && slow="–"
      proxy_cpu=$(med "$line" "$mode" proxy_us_per_req)
      [ "$mode" = direct ] && proxy_cpu="–"
      awk -v path="$path" -v name="$(line_name "$line")" -v rps="$rps" -v lo="$lo" -v hi="$hi" \
        -v p50="$(med "$line" "$mode" p50_ms)" -v p99="$(med "$line" "$mode" p99_ms)" -v errs="$errs" -v nic="$nic" \
        -v wc="$(med "$line" "$mode" worker_us_per_req)" -v wk="$(med "$line" "$mode" worker_sys_us_per_req)" -v pc="$proxy_cpu" -v gc="$(med "$line" "$mode" postgres_us_per_req)" \
        -v rows="$rows" -v ack="$ack" -v slow="$slow" 'BEGIN {
          if (pc != "–") pc = sprintf("%.1f", pc)
          printf "| %s | %s | %.0f | %.0f–%.0f | %.3f | %.3f | %d | %d | %.1f (%.1f) / %s / %.1f | %s | %s | %s |\n",
            path, name, rps, lo, hi, p50, p99, errs, nic, wc, wk, pc, gc,
            (rows == "NaN") ? "–" : sprintf("%.1f", rows), (ack == "NaN") ? "–" : sprintf("%.2f", ack), slow }'
    done
  done
  echo
  for mode in $MODES; do
    [ "$mode" = proxy ] && label="Targets (through roost-proxy)" || label="The same ratios direct to the workers (for reference; the targets are about the proxy path)"
    awk -v label="$label" -v c="$(med ceiling "$mode" req_per_s)" -v wb="$(med write-behind "$mode" req_per_s)" \
      -v du="$(med durable "$mode" req_per_s)" -v sl="$(med stateless "$mode" req_per_s)" -v cg="$(med ceiling-get "$mode" req_per_s)" \
      -v wbp="$(med write-behind "$mode" p99_ms)" -v slp="$(med stateless "$mode" p99_ms)" -v dup="$(med durable "$mode" p99_ms)" \
      -v r1="$(paired write-behind ceiling "$mode" req_per_s)" -v r2="$(paired durable ceiling "$mode" req_per_s)" \
      -v r3="$(paired write-behind stateless "$mode" req_per_s)" -v r4="$(paired write-behind stateless "$mode" p99_ms)" \
      -v r5="$(paired durable write-behind "$mode" p99_ms)" 'BEGIN {
        if (wb == "NaN" || (c == "NaN" && sl == "NaN")) exit
        printf "%s (ratio of the medians; in brackets, each rep paired with the same rep of the other line):\n\n", label
        if (c != "NaN" && wb != "NaN") printf "- write-behind ≥ 0.9× ceiling req/s: %.2f× (%s) → **%s**\n", wb / c, r1, (wb >= 0.9 * c) ? "met" : "not met"
        if (c != "NaN" && du != "NaN") printf "- durable ≥ 0.7× ceiling req/s: %.2f× (%s) → **%s**\n", du / c, r2, (du >= 0.7 * c) ? "met" : "not met"
        if (dup != "NaN" && wbp != "NaN") printf "- durable p99 ≤ 2× write-behind p99: %.3f ms vs %.3f ms, %.2f× (%s) → **%s**\n", dup, wbp, dup / wbp, r5, (dup <= 2 * wbp) ? "met" : "not met"
        if (cg != "NaN" && wb != "NaN") printf "- for reference, against ceiling-get (GET, no body): write-behind %.2f×, durable %s\n", wb / cg, (du == "NaN") ? "n/a" : sprintf("%.2f×", du / cg)
        if (sl != "NaN" && wb != "NaN") printf "- write-behind ≥ 5× stateless req/s: %.2f× (%s) → **%s**\n", wb / sl, r3, (wb >= 5 * sl) ? "met" : "not met"
        if (slp != "NaN" && wbp != "NaN") printf "- write-behind p99 ≤ 1/3 of stateless p99: %.3f ms vs %.3f ms, %.2f× (%s) → **%s**\n", wbp, slp, wbp / slp, r4, (wbp * 3 <= slp) ? "met" : "not met"
        printf "\n"
      }'
  done
  awk -v bh="$(med bare-hyper direct worker_us_per_req)" -v wb="$(med write-behind direct worker_us_per_req)" \
    -v c="$(med ceiling direct worker_us_per_req)" -v rwb="$(paired write-behind bare-hyper direct worker_us_per_req)" \
    -v rc="$(paired ceiling bare-hyper direct worker_us_per_req)" 'BEGIN {
      if (bh == "NaN") exit
      printf "Issue 13, CPU per request direct to the workers against bare hyper (roost-fixed-reply given the same requests):\n\n"
      if (c != "NaN") printf "- no-state route (ceiling) ≤ 1.3× bare hyper: %.1f µs against %.1f µs, %.2f× (%s) → **%s**\n", c, bh, c / bh, rc, (c <= 1.3 * bh) ? "met" : "not met"
      if (wb != "NaN") printf "- write-behind ≤ 1.6× bare hyper: %.1f µs against %.1f µs, %.2f× (%s) → **%s**\n", wb, bh, wb / bh, rwb, (wb <= 1.6 * bh) ? "met" : "not met"
      printf "\n"
    }'
  for mode in $MODES; do
    for other in write-behind-generic write-behind-before; do
      awk -v mode="$mode" -v other="$(line_name "$other")" \
        -v a="$(med "$other" "$mode" req_per_s)" -v b="$(med write-behind "$mode" req_per_s)" \
        -v ca="$(med "$other" "$mode" worker_us_per_req)" -v cb="$(med write-behind "$mode" worker_us_per_req)" \
        -v r="$(paired "$other" write-behind "$mode" req_per_s)" -v rc="$(paired "$other" write-behind "$mode" worker_us_per_req)" 'BEGIN {
          if (a == "NaN" || b == "NaN") exit
          printf "- %s, %s, against Roost write-behind: req/s %.3f× (%s), worker CPU per request %.3f× (%s); within 5%%: **%s**\n",
            mode, other, a / b, r, ca / cb, rc, (a >= 0.95 * b && ca <= 1.05 * cb) ? "met" : "not met"
        }'
    done
    awk -v mode="$mode" -v c="$(med ceiling "$mode" req_per_s)" \
      -v a="$(med durable "$mode" req_per_s)" -v b="$(med durable-before "$mode" req_per_s)" \
      -v pa="$(med durable "$mode" p99_ms)" -v pb="$(med durable-before "$mode" p99_ms)" \
      -v ra="$(paired durable ceiling "$mode" req_per_s)" -v rb="$(paired durable-before ceiling "$mode" req_per_s)" \
      -v r="$(paired durable durable-before "$mode" req_per_s)" 'BEGIN {
        if (a == "NaN" || b == "NaN") exit
        printf "- %s, Roost durable against the same on BEFORE_WORKER_BIN: req/s %.3f× (%s); of the ceiling %s (%s) against %s (%s); p99 %.3f ms against %.3f ms\n",
          mode, a / b, r, (c == "NaN") ? "n/a" : sprintf("%.2f×", a / c), ra, (c == "NaN") ? "n/a" : sprintf("%.2f×", b / c), rb, pa, pb
      }'
  done
  echo
  [ -n "$MEM_SUMMARY" ] && printf '%s\n\n' "$MEM_SUMMARY"
  echo "- Machine: $NPROC CPUs ($CPU_MODEL), $KERNEL; $PINNING."
  echo "- Postgres: $PG_SOURCE, $PG_VERSION ($PG_SETTINGS), shared by every line; roost_entities VACUUMed before each rep."
  echo "- Load: wrk ($WRK_VERSION), $CONNECTIONS connections (proxy: 1 thread; direct: 3 threads, one per worker, $((CONNECTIONS / 3)) connections each, users split by index mod 3); $USERS users × 2 devices, each device adding then removing its own $SKUS SKUs; ${WARMUP} s warm-up then ${DURATION} s measured; $REPS interleaved reps (snake order); medians of the reps."
  echo "- errors: socket errors + non-2xx answers other than 404 not_in_cart (counted apart). CPU µs/req: utime+stime over the measured window / requests (Postgres: every local postgres process)."
  echo "- Raw results: loadtest/results/worker-$STAMP/ (runs.tsv, wrk output, worker metrics before/after each run, configs, logs)."
  echo "- Command: \`$COMMAND\`"
  for mode in $MODES; do
    for line in $LINES; do
      busy=$(med "$line" "$mode" wrk_cpu_pct)
      if awk -v b="$busy" 'BEGIN { exit !(b != "NaN" && b >= 90) }'; then
        echo "- $mode $line: wrk's CPU was ${busy}% busy (median): the load generator may have set this req/s."
      fi
    done
  done
  retried=$(awk -F'\t' 'NR > 1 && $5 == 0' "$RUNS" | wc -l)
  [ "$retried" -gt 0 ] && echo "- $retried measurement(s) disturbed by other load were discarded and repeated (runs.tsv, counted = 0)."
  [ "$DISTURBED_KEPT" -ne 0 ] && echo && echo "**WARNING: $DISTURBED_KEPT counted run(s) were disturbed by other load; the figures are less reliable.**"
  [ "$ERRORS_SEEN" -ne 0 ] && echo && echo "**WARNING: some runs had errors; see runs.tsv and the wrk output.**"
  [ "$STUCK_FLUSH" -ne 0 ] && echo && echo "**WARNING: dirty entities did not drain in time after some run; see the log.**"
  true
} >"$summary"
cat "$summary"
log "done; raw results in ${RESULTS#"$ROOT"/}"
