#!/usr/bin/env bash
# Runs every cargo-fuzz target of the workspace (proxy/fuzz, builtins/fuzz)
# for SECONDS each (default 60) and prints executions and findings per
# target. A crashing input is copied to <crate>/fuzz/regressions/<target>/,
# where the crate's fuzz_regressions test replays it on every `cargo test`:
# commit it with the fix.
#
#   deploy/local/fuzz.sh            # 60 s per target
#   deploy/local/fuzz.sh 300        # 5 minutes per target
#   deploy/local/fuzz.sh 30 jwt     # only targets whose name contains "jwt"
#
# cargo-fuzz needs sanitizer flags that only nightly rustc accepts; the one
# stable toolchain here accepts them with RUSTC_BOOTSTRAP=1 (set below).
set -euo pipefail
source "$(dirname "$0")/common.sh"
cd "$ROOT"
ensure_build_deps
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

seconds=${1:-60}
filter=${2:-}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
total=0
found=0
printf '%-28s %14s  %s\n' target executions result
for crate in proxy builtins; do
  dir="$ROOT/$crate/fuzz"
  [ -d "$dir" ] || continue
  for target in $(cd "$dir" && cargo fuzz list); do
    [[ "$target" == *"$filter"* ]] || continue
    mkdir -p "$dir/corpus/$target" "$dir/seeds/$target"
    log="$logs/$crate-$target.log"
    result=ok
    if ! (cd "$dir" && cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1) >"$log" 2>&1; then
      result="CRASH (log: $crate/fuzz/artifacts/$target/)"
      found=$((found + 1))
      mkdir -p "$dir/regressions/$target"
      cp "$dir/artifacts/$target"/* "$dir/regressions/$target/" 2>/dev/null || true
      cp "$log" "$dir/artifacts/$target/last-run.log" 2>/dev/null || true
    fi
    runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -n 1)
    runs=${runs:-0}
    total=$((total + runs))
    printf '%-28s %14s  %s\n' "$crate/$target" "$runs" "$result"
  done
done
printf '%-28s %14s  %s\n' total "$total" "$found crashing target(s)"
[ "$found" -eq 0 ]
