# shellcheck shell=bash
# Shell helpers for the benchmarks in loadtest/bench/ (source it; do not run
# it). The same conventions as proxy.sh, whose helpers these are, factored
# out for worker.sh: every server runs in its own session (setsid) pinned with
# taskset and is remembered in STARTED, so a trap can stop whatever is still
# running; CPU use is read from /proc, not sampled.
#
# The sourcing script sets SERVER_CPU (default CPU of start_server), and may
# set RESULTS and ROOT (for messages) before calling die / wait_ready-style
# helpers. proxy.sh keeps its own variants of the helpers that differ
# (log, die, stop_server, cpu_stat, wait_quiet, ...); the ones both use
# unchanged live in proc.sh.

# shellcheck source=proc.sh
source "$(dirname "${BASH_SOURCE[0]}")/proc.sh"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

STARTED=() # "pid:signal" of every process group started and not yet stopped


# group_alive PID: whether any process of PID's session/group is still there.
group_alive() { kill -0 -- "-$1" 2>/dev/null || kill -0 "$1" 2>/dev/null; }

# stop_server PID SIGNAL [WAIT_S]: signal the group, wait up to WAIT_S
# seconds (default 5), then SIGKILL it.
stop_server() {
  local pid=$1 signal=$2 wait_s=${3:-5} i
  kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
  for i in $(seq $((wait_s * 10))); do
    group_alive "$pid" || break
    sleep 0.1
  done
  if group_alive "$pid"; then
    log "pid $pid did not stop on SIG$signal within ${wait_s}s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  local kept=() entry
  for entry in ${STARTED[@]+"${STARTED[@]}"}; do
    [ "${entry%%:*}" = "$pid" ] || kept+=("$entry")
  done
  STARTED=(${kept[@]+"${kept[@]}"})
}

# stop_all_started: stop every server still in STARTED, newest first.
stop_all_started() {
  local i entry
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    entry=${STARTED[$i]}
    stop_server "${entry%%:*}" "${entry##*:}" 15
  done
}



# comm_ticks NAME: "pid ticks" of every process whose command name is NAME
# (e.g. every postgres backend on this machine), one a line.
comm_ticks() {
  local stat f comm
  for stat in /proc/[0-9]*/stat; do
    { read -r stat <"$stat"; } 2>/dev/null || continue
    comm=${stat#*(}
    comm=${comm%%)*}
    [ "$comm" = "$1" ] || continue
    read -r -a f <<<"${stat##*) }"
    echo "${stat%% *} $((f[11] + f[12]))"
  done
  return 0
}

# ticks_delta BEFORE AFTER: CPU ticks spent between two comm_ticks snapshots
# (processes that appeared count from 0; ones that exited are lost).
ticks_delta() {
  awk 'NR == FNR { before[$1] = $2; next } { total += $2 - (($1 in before) ? before[$1] : 0) }
    END { print total + 0 }' <(printf '%s\n' "$1") <(printf '%s\n' "$2")
}

# cpu_stat CPU: "busy steal total task" jiffies of one CPU from /proc/stat.
# busy: user+nice+system+irq+softirq; steal: time the hypervisor gave to
# others; task: user+nice+system, the part that shows up in processes' own
# utime+stime (irq and softirq time, loopback TCP's included, does not).
cpu_stat() {
  awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $2 + $3 + $4 }' /proc/stat
}


# wait_quiet CPU_A CPU_B LIMIT_PCT MAX_WAIT_S: wait until neither CPU is more
# than LIMIT_PCT % busy over one second (someone else's build or test run
# must not land in a measurement); after MAX_WAIT_S, warn and go on.
wait_quiet() {
  local cpu_a=$1 cpu_b=$2 limit=$3 max_wait=$4 waited=0 a b c d busy
  while :; do
    read -r a _ c _ < <(cpu_stat "$cpu_a")
    read -r b _ d _ < <(cpu_stat "$cpu_b")
    sleep 1
    busy=$(awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" -v l="$cpu_a" -v s="$cpu_b" '
      $1 == "cpu" l { x = ($2 + $3 + $4 + $7 + $8 - a) * 100 / ($2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 - c) }
      $1 == "cpu" s { y = ($2 + $3 + $4 + $7 + $8 - b) * 100 / ($2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 - d) }
      END { printf "%.0f", (x > y) ? x : y }' /proc/stat)
    [ "$busy" -le "$limit" ] && return 0
    if [ "$waited" -ge "$max_wait" ]; then
      log "WARNING: the CPUs are still ${busy}% busy after ${max_wait}s; measuring anyway"
      return 0
    fi
    [ "$waited" -eq 0 ] && log "the CPUs are ${busy}% busy; waiting for quiet (up to ${max_wait}s)"
    waited=$((waited + 1))
  done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port FROM: the first port from FROM up that nothing listens on.
free_port() {
  local port=$1
  while port_in_use "$port"; do port=$((port + 1)); done
  echo "$port"
}




