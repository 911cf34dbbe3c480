#!/usr/bin/env bash
# test.sh -- the one test command (README; .ci/run calls it).
#
# Installs what a fresh Debian 12 machine lacks, builds a normal and an
# ASan+UBSan tree, starts a throwaway redis-server (AOF, appendfsync always)
# on a free port, runs every test in both trees with ctest, and stops what it
# started whatever happens. Tests that need their own store processes (restart,
# kill) start private ones through tests/harness.
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)

PKGS=(cmake gcc make pkg-config curl jq ca-certificates libmicrohttpd-dev libcurl4-openssl-dev
      libhiredis-dev libpq-dev libsqlite3-dev libinih-dev libjansson-dev libcriterion-dev
      libhttp-parser-dev redis-server redis-tools postgresql etcd-server etcd-client zookeeper
      libzookeeper-mt-dev clang-14 libclang-rt-14-dev clang-format-14 mandoc dpkg-dev libsystemd-dev prometheus)
# prometheus: for promtool (test_metrics checks /metrics with it); libsystemd-dev: sd_notify
. tools/ensure-packages.sh
ensure_packages "${PKGS[@]}"
# the Debian package starts a system redis-server; the tests never use it
command -v redis-server >/dev/null

WORK=$(mktemp -d /tmp/fencegate-test.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  stop_postgres
  rm -rf "$WORK"
  echo "== total $(( $(date +%s) - START ))s"
  exit $rc
}
trap cleanup EXIT INT TERM

# a loopback port nobody answers on (bash only: a fresh machine may lack python)
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

start_redis() {
  local port; port=$(free_port)
  mkdir -p "$WORK/redis"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/redis" --save '' \
    --appendonly yes --appendfsync always --daemonize no >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export FG_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
  echo "== redis-server on :$port"
}

# A throwaway Postgres cluster: initdb into a private folder, run as a
# non-root user (postgres, when we are root), private port and socket dir.
PGDATA_DIR=""
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
start_postgres() {
  local bin; bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  local port; port=$(free_port)
  PGDATA_DIR=$(mktemp -d /tmp/fencegate-pg.XXXXXX)
  [[ $(id -u) -eq 0 ]] && chown postgres: "$PGDATA_DIR"
  as_pg "$bin/initdb" -D "$PGDATA_DIR/data" -A trust -U postgres -N >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log"; exit 1; }
  as_pg "$bin/pg_ctl" -D "$PGDATA_DIR/data" -l "$PGDATA_DIR/postgres.log" -w \
    -o "-p $port -k $PGDATA_DIR -c listen_addresses=127.0.0.1" start >/dev/null
  PG_CTL="$bin/pg_ctl"
  export FG_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "== postgres on :$port ($PGDATA_DIR)"
}
stop_postgres() {
  if [[ -n "$PGDATA_DIR" ]]; then
    as_pg "$PG_CTL" -D "$PGDATA_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PGDATA_DIR"
  fi
}

build() {
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)" 2>&1 | grep -Ev '^\[|^-- ' || true
  test -x "$dir/fencegate"
}

# Own build trees: the quick start configures build/ without tests, and a
# tree without tests must never pass for a test run (--no-tests=error below).
echo "== build (normal)"
build build-test -DFG_TESTS=ON
echo "== build (ASan+UBSan)"
build build-asan -DFG_TESTS=ON -DFG_SANITIZE=ON

start_redis
start_postgres

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== ctest (normal)"
ctest --test-dir build-test --output-on-failure --no-tests=error
echo "== ctest (ASan+UBSan)"
ctest --test-dir build-asan --output-on-failure --no-tests=error

# libFuzzer on the policy/ parsers, about 15 s per harness (tools/fuzz.sh)
echo "== fuzz (tools/fuzz.sh --ci)"
tools/fuzz.sh --ci

echo "== quick start script"
tools/quickstart.sh --once >"$WORK/quickstart.log" 2>&1 || { cat "$WORK/quickstart.log"; exit 1; }
grep -q '"reason": "stale"' "$WORK/quickstart.log" || { cat "$WORK/quickstart.log"; exit 1; }
echo "== all tests passed"
