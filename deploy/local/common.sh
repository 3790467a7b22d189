# Shared by the local scripts: find the repo and install build prerequisites.
# Source it; do not run it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export ROOT

# apt_install PKG...: install Debian packages that are missing, as root; as
# anyone else, say exactly what to install and stop.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "== installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing packages: ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

# Pingora's zlib-ng build needs cmake and a C compiler.
ensure_build_deps() {
  command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (rustup)" >&2; exit 1; }
  if ! command -v cmake >/dev/null || ! command -v cc >/dev/null; then
    apt_install cmake build-essential
  fi
}

# The worker tests start a throwaway PostgreSQL cluster unless DATABASE_URL
# answers: make initdb and pg_ctl reachable on PATH (Debian keeps them in
# /usr/lib/postgresql/VERSION/bin), installing PostgreSQL if needed.
ensure_postgres_binaries() {
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null && return 0
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ]; then
    apt_install postgresql
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  fi
  [ -n "$bin" ] || { echo "cannot find initdb/pg_ctl after installing postgresql" >&2; exit 1; }
  export PATH="$bin:$PATH"
}
