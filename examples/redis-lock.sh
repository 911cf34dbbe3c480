#!/usr/bin/env bash
# redis-lock.sh RESOURCE VALUE -- lock with a single Redis, write through fencegate.
#
# Lock: SET lock:<res> <owner> NX PX <lease>. Token: INCR fencing:<res>, a
# counter that never expires (a counter with a TTL can vanish and restart at
# 1: the token would go backwards). Release: compare-and-delete, so a client
# whose lease expired never deletes the next holder's lock.
# Environment: REDIS_HOST (127.0.0.1), REDIS_PORT (6379), and common.sh's.
set -euo pipefail
. "$(dirname "$0")/common.sh"
RES=$1 VALUE=$2
R=(redis-cli -h "${REDIS_HOST:-127.0.0.1}" -p "${REDIS_PORT:-6379}")
OWNER="$(hostname)-$$-$RANDOM"

for _ in $(seq 200); do # bounded wait for the lock
  [[ $("${R[@]}" SET "lock:$RES" "$OWNER" NX PX "$LEASE_MS") == OK ]] && break
  sleep 0.05
done
[[ $("${R[@]}" GET "lock:$RES") == "$OWNER" ]] || { echo "lock busy" >&2; exit 1; }
TOKEN=$("${R[@]}" INCR "fencing:$RES")
echo "locked token=$TOKEN"
do_work "/orders/$RES" "$TOKEN" "$VALUE"
"${R[@]}" EVAL "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end" \
  1 "lock:$RES" "$OWNER" >/dev/null
echo "released"
