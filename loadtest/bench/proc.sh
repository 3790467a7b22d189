# shellcheck shell=bash
# Helpers the benchmark scripts share (sourced by common.sh and proxy.sh):
# starting servers in their own session, reading CPU time from /proc, and
# small number formatting. Pure functions of their arguments and /proc,
# except start_server, which uses the caller's log/die and STARTED.

# start_server NAME LOGFILE SIGNAL CMD...: start CMD in its own session,
# pinned to PIN_CPU (default SERVER_CPU); sets SERVER_PID. SIGNAL is what
# stop_server sends first (TERM lets a worker drain; INT stops a proxy).
start_server() {
  local name=$1 logfile=$2 signal=$3
  shift 3
  setsid taskset -c "${PIN_CPU:-$SERVER_CPU}" "$@" >"$logfile" 2>&1 </dev/null &
  SERVER_PID=$!
  STARTED+=("$SERVER_PID:$signal")
  log "started $name (pid $SERVER_PID)"
}

# session_pids SID: every process in session SID (a server and its children).
session_pids() {
  local stat f
  for stat in /proc/[0-9]*/stat; do
    { read -r stat <"$stat"; } 2>/dev/null || continue
    read -r -a f <<<"${stat##*) }"
    [ "${f[3]}" = "$1" ] && echo "${stat%% *}"
  done
  return 0
}

# cpu_ticks PID...: utime + stime of the processes (all their threads), in
# clock ticks.
cpu_ticks() { stat_ticks all "$@"; }

# sys_ticks PID...: stime alone: the part of cpu_ticks spent in the kernel.
sys_ticks() { stat_ticks sys "$@"; }

# stat_ticks all|sys PID...: what cpu_ticks and sys_ticks read.
stat_ticks() {
  local which=$1 pid stat f total=0
  shift
  for pid in "$@"; do
    { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || continue
    read -r -a f <<<"${stat##*) }"
    if [ "$which" = sys ]; then
      total=$((total + f[12]))
    else
      total=$((total + f[11] + f[12]))
    fi
  done
  echo "$total"
}

# children_ticks: CPU ticks of this shell's reaped children (wrk, among others).
children_ticks() {
  local stat f
  read -r stat <"/proc/$$/stat"
  read -r -a f <<<"${stat##*) }"
  echo $((f[13] + f[14]))
}

# to_ms VALUE: wrk's "635.00us" / "1.23ms" / "2.00s" / "1.00m" in ms.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
    else if (u != "ms") { print "NaN"; exit }
    printf "%.3f", n }'
}

# median: of the numbers on stdin, one a line.
median() {
  sort -g | awk '{ a[NR] = $1 } END {
    if (NR == 0) { print "NaN"; exit }
    if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# first_line CMD...: the first line CMD prints (no pipe into head: the
# producer could die of SIGPIPE, which pipefail would turn into an exit).
first_line() {
  local out
  out=$("$@" 2>&1 || true)
  printf '%s\n' "${out%%$'\n'*}"
}

# mark_last COUNTED: set the counted column (5) of the last row of $RUNS.
mark_last() {
  local last
  last=$(tail -n1 "$RUNS")
  sed -i '$d' "$RUNS"
  awk -F'\t' -v OFS='\t' -v c="$1" '{ $5 = c; print }' <<<"$last" >>"$RUNS"
}

# keep_measurement WHAT ATTEMPT: after a measurement of WHAT, whether to
# keep it (status 0) or measure again (status 1, when DISTURBED is set and
# RETRIES allow another attempt); marks the row in $RUNS counted or not and
# counts a disturbed run kept in DISTURBED_KEPT. Uses the caller's log.
keep_measurement() {
  local what=$1 attempt=$2
  if [ "$DISTURBED" -eq 0 ]; then
    mark_last 1
    return 0
  fi
  if [ "$attempt" -le "$RETRIES" ]; then
    mark_last 0
    log "WARNING: $what was disturbed by other load (over ${FOREIGN_LIMIT}% of a CPU); measuring again"
    return 1
  fi
  mark_last 1
  DISTURBED_KEPT=$((DISTURBED_KEPT + 1))
  log "WARNING: $what was still disturbed after $RETRIES retries; keeping it, flagged"
}
