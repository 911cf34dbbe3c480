#!/usr/bin/env bash
# quickstart.sh -- install, build, and run fencegate in front of the demo store
# with the embedded SQLite state, then show a write accepted, a stale write
# refused with 409, and the refusal in the audit trail.
#
#   tools/quickstart.sh          # demo, then keep running until Ctrl-C
#   tools/quickstart.sh --once   # demo, then stop (used by CI to check this script)
set -euo pipefail
cd "$(dirname "$0")/.."
ONCE=0
[[ "${1:-}" == "--once" ]] && ONCE=1

PKGS=(cmake gcc make pkg-config curl jq libmicrohttpd-dev libcurl4-openssl-dev libhiredis-dev
      libpq-dev libsqlite3-dev libinih-dev libjansson-dev libsystemd-dev)
. tools/ensure-packages.sh
ensure_packages "${PKGS[@]}"

echo "== building"
cmake -S . -B build -DFG_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

RUN=$(mktemp -d /tmp/fencegate-quickstart.XXXXXX)
cleanup() {
  [[ -n "${GW:-}" ]] && kill "$GW" 2>/dev/null && wait "$GW" 2>/dev/null || true
  [[ -n "${STORE:-}" ]] && kill "$STORE" 2>/dev/null && wait "$STORE" 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT INT TERM
sed "s#^state = sqlite:fencegate.db#state = sqlite:$RUN/fencegate.db#" conf/fencegate.conf >"$RUN/fencegate.conf"
build/fencegate-demo-store --listen 127.0.0.1:9000 2>"$RUN/store.log" & STORE=$!
build/fencegate -c "$RUN/fencegate.conf" 2>"$RUN/gateway.log" & GW=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:8081/healthz >/dev/null && break; sleep 0.1; done

show() { echo; echo "\$ $*"; "$@"; echo; }
echo "== fencegate on :8080 -> demo store on :9000, state in $RUN/fencegate.db"
show curl -s -i -X PUT -H 'Fencing-Token: 34' --data 'paid by client A' http://127.0.0.1:8080/orders/42
show curl -s -i -X PUT -H 'Fencing-Token: 33' --data 'stale write by paused client B' http://127.0.0.1:8080/orders/42
show curl -s http://127.0.0.1:8080/orders/42
echo "\$ curl -s 'http://127.0.0.1:8081/v1/audit?resource=order:42' | jq ."
curl -s 'http://127.0.0.1:8081/v1/audit?resource=order:42' | jq .
if ((ONCE)); then exit 0; fi
echo; echo "== running; logs in $RUN/*.log; press Ctrl-C to stop"
wait "$GW"
