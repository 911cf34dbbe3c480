#!/usr/bin/env bash
# faults.sh -- run the randomized fault checker (tests/faults) for as long as asked.
#
#   tools/faults.sh [--minutes M] [--store all|sqlite|redis|postgres] [--nemesis LIST]
#                   [--seed N] [--clients N] [--verbose]
#
# --minutes is per store (default 1; fractions such as 0.5 work). Builds the
# normal tree (build/) when needed, then runs build/tests/faultcheck once per
# store. The checker starts and stops everything itself through tests/harness:
# the gateway, the demo store, a private redis-server and a private Postgres
# cluster (initdb as the postgres user when run as root), each on free loopback
# ports, and removes them whatever happens. Each run prints its seed, the counts
# and every violation; this script prints one line per store at the end and
# exits non-zero when any run found a violation. Ctrl-C ends the faults early;
# the run in progress still checks what it did.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=1
STORE=all
ARGS=()
usage() { sed -n '3,5p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --minutes) MINUTES=${2:?--minutes needs a value}; shift 2 ;;
    --store) STORE=${2:?--store needs a value}; shift 2 ;;
    --nemesis|--seed|--clients|--resources|--stale|--think-ms) ARGS+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --verbose) ARGS+=("$1"); shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "faults.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "faults.sh: --minutes takes a number" >&2; exit 2; }
SECONDS_PER_STORE=$(awk -v m="$MINUTES" 'BEGIN { s = int(m * 60 + 0.5); print (s < 1 ? 1 : s) }')
case "$STORE" in
  all) STORES=(sqlite redis postgres) ;;
  sqlite|redis|postgres) STORES=("$STORE") ;;
  *) echo "faults.sh: --store takes all, sqlite, redis or postgres" >&2; exit 2 ;;
esac

PKGS=(cmake gcc make pkg-config libmicrohttpd-dev libcurl4-openssl-dev libhiredis-dev libpq-dev
      libsqlite3-dev libinih-dev libjansson-dev libcriterion-dev redis-server postgresql)
. tools/ensure-packages.sh
ensure_packages "${PKGS[@]}"

if [[ ! -f build/CMakeCache.txt ]]; then
  cmake -S . -B build -DFG_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build build -j"$(nproc)" --target faultcheck 2>&1 | grep -Ev '^\[|^-- ' || true
test -x build/tests/faultcheck

# Ctrl-C: tell the checker (it ends the faults early, checks, stops what it started)
# and run no further store
STOP=0
FC=""
trap 'STOP=1; [[ -n "$FC" ]] && kill -INT "$FC" 2>/dev/null || true' INT TERM
RESULTS=()
RC=0
for store in "${STORES[@]}"; do
  ((STOP)) && break
  echo "== faults: $store for ${SECONDS_PER_STORE}s"
  build/tests/faultcheck --store "$store" --seconds "$SECONDS_PER_STORE" "${ARGS[@]}" &
  FC=$!
  while kill -0 "$FC" 2>/dev/null; do wait "$FC" || true; done
  set +e
  wait "$FC"
  rc=$?
  set -e
  FC=""
  RESULTS+=("$store: $([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit $rc)")")
  ((rc == 0)) || RC=1
done
echo "== faults summary"
printf '   %s\n' "${RESULTS[@]}"
exit $RC
