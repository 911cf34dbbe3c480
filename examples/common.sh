# common.sh -- shared by the example lock clients: how to write through
# fencegate with a token, and small helpers. Source it; do not run it.
#
# Environment: GATEWAY (default http://127.0.0.1:8080), HOLD_MS (work time
# between taking the lock and writing, default 0), LEASE_MS (default 5000),
# WRITES (writes made with one token, default 1).
GATEWAY=${GATEWAY:-http://127.0.0.1:8080}
HOLD_MS=${HOLD_MS:-0}
LEASE_MS=${LEASE_MS:-5000}
WRITES=${WRITES:-1}

ms_sleep() { sleep "$(awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }')"; }

# fenced_write PATH TOKEN VALUE: PUT through the gateway; prints "write status=NNN".
fenced_write() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Fencing-Token: $2" \
    --data-binary "$3" "$GATEWAY$1")
  echo "write status=$code"
}

# do_work PATH TOKEN VALUE: the protected section -- "work" for HOLD_MS, then WRITES writes.
do_work() {
  ms_sleep "$HOLD_MS"
  for _ in $(seq "$WRITES"); do fenced_write "$1" "$2" "$3"; done
}
