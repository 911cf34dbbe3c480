#!/usr/bin/env bash
# redlock.sh RESOURCE VALUE -- Redlock on independent Redis nodes, token from one durable counter.
#
# Lock: SET lock:<res> <owner> NX PX <lease> on every node in REDLOCK_PORTS;
# held when a majority answered OK within the lease (minus a drift margin),
# else undone everywhere. Redlock itself hands out no token, so the token
# comes from one durable counter: INCR fencing:<res> on COUNTER_PORT (a Redis
# with appendonly yes + appendfsync always; or a Postgres sequence).
# Environment: REDIS_HOST (127.0.0.1), REDLOCK_PORTS ("7001 7002 7003"),
# COUNTER_PORT (6379), and common.sh's.
set -euo pipefail
. "$(dirname "$0")/common.sh"
RES=$1 VALUE=$2
HOST=${REDIS_HOST:-127.0.0.1}
read -r -a PORTS <<<"${REDLOCK_PORTS:-7001 7002 7003}"
OWNER="$(hostname)-$$-$RANDOM"
UNLOCK="if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"
now_ms() { date +%s%3N; }

release_all() {
  for p in "${PORTS[@]}"; do
    redis-cli -h "$HOST" -p "$p" EVAL "$UNLOCK" 1 "lock:$RES" "$OWNER" >/dev/null 2>&1 || true
  done
}

locked=0
for _ in $(seq 200); do
  start=$(now_ms) ok=0
  for p in "${PORTS[@]}"; do
    [[ $(redis-cli -h "$HOST" -p "$p" SET "lock:$RES" "$OWNER" NX PX "$LEASE_MS" 2>/dev/null) == OK ]] && ok=$((ok + 1))
  done
  elapsed=$(( $(now_ms) - start ))
  drift=$(( LEASE_MS / 100 + 2 ))
  if (( ok > ${#PORTS[@]} / 2 && elapsed < LEASE_MS - drift )); then locked=1; break; fi
  release_all
  sleep 0.05
done
(( locked )) || { echo "lock busy" >&2; exit 1; }
TOKEN=$(redis-cli -h "$HOST" -p "${COUNTER_PORT:-6379}" INCR "fencing:$RES")
echo "locked token=$TOKEN"
do_work "/orders/$RES" "$TOKEN" "$VALUE"
release_all
echo "released"
