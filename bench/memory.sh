#!/usr/bin/env bash
# bench/memory.sh -- the gateway's memory, two figures (bench/run.sh target 7):
#   (a) peak RSS (VmHWM) of a fresh gateway after one 256 MiB PUT streamed through it to the
#       demo store (the body must be streamed, never held whole); the demo store's /_fg/log
#       must show the whole body arrived;
#   (b) RSS of a fresh gateway holding HOLD_CONNS (10000) idle keep-alive client connections,
#       each of which has done one GET (bench/holdconns.c), and that all of them are still open.
# Starts, on 127.0.0.1: fencegate-demo-store (:MEM_UPSTREAM_PORT, default 9110) and fencegate
# (:MEM_GW_PORT 8183, admin :MEM_ADMIN_PORT 8193, SQLite state in a temp dir), one after the
# other; stops each by PID whatever happens. Writes key=value lines to $OUT/memory.result.
#   OUT=/tmp/x bench/memory.sh          (BUILD_DIR defaults to build-bench, built by bench/run.sh)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

OUT=${OUT:-/tmp/fencegate-bench/memory}
MEM_UPSTREAM_PORT=${MEM_UPSTREAM_PORT:-9110}
MEM_GW_PORT=${MEM_GW_PORT:-8183}
MEM_ADMIN_PORT=${MEM_ADMIN_PORT:-8193}
HOLD_CONNS=${HOLD_CONNS:-10000}
BODY_MIB=${BODY_MIB:-256}
GW=$BUILD_DIR/fencegate
DEMO=$BUILD_DIR/fencegate-demo-store
HOLD=$BUILD_DIR/bench/holdconns

[ -x "$GW" ] && [ -x "$DEMO" ] || die "build first: $GW and $DEMO (bench/run.sh builds them)"
mkdir -p "$OUT" "$BUILD_DIR/bench"
gcc -O2 -Wall -Wextra -Werror -o "$HOLD" "$BENCH_DIR/holdconns.c"
ports_free "$MEM_UPSTREAM_PORT" "$MEM_GW_PORT" "$MEM_ADMIN_PORT"
# 10000 client sockets here, 10000 accepted ones in the gateway: raise the soft fd limit to
# the hard one (fencegate raises its own too; holdconns inherits this one)
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $(( HOLD_CONNS + 64 )) ] || die "ulimit -Hn $(ulimit -Hn) is too low for $HOLD_CONNS connections"

WORK=$(mktemp -d /tmp/fencegate-bench-mem.XXXXXX)
on_exit() { rm -rf "$WORK"; }
bench_trap
RES=$OUT/memory.result
: > "$RES"
res() { echo "$1=$2" >> "$RES"; }

gw_conf_write "$WORK/gw.conf" "$MEM_GW_PORT" "$MEM_UPSTREAM_PORT" "sqlite:$WORK/state.db" "$MEM_ADMIN_PORT" \
  $(( HOLD_CONNS * 3 / 2 + 1024 ))
log "gateway config ($WORK/gw.conf):"; sed 's/^/    /' "$WORK/gw.conf" >&2

bg_start upstream "$WORK/demo.log" "$DEMO" --listen "127.0.0.1:$MEM_UPSTREAM_PORT"
wait_port "$MEM_UPSTREAM_PORT" demo-store "${BG_PID[upstream]}"
log "started: $DEMO --listen 127.0.0.1:$MEM_UPSTREAM_PORT"

start_gw() {
  bg_start gateway "$WORK/gateway.log" "$GW" -c "$WORK/gw.conf"
  wait_port "$MEM_GW_PORT" fencegate "${BG_PID[gateway]}"
  log "started: $GW -c $WORK/gw.conf (pid ${BG_PID[gateway]})"
}

# ---- (a) one big PUT, streamed
start_gw
pid=${BG_PID[gateway]}
res put_hwm_before_kib "$(vm_kib "$pid" VmHWM)"
truncate -s "${BODY_MIB}M" "$WORK/body.bin"        # sparse: zeros, costs no disk
bytes=$(( BODY_MIB * 1024 * 1024 ))
cmd="curl -sS -o /dev/null -w '%{http_code}' -X PUT -H 'Fencing-Token: 1' -H 'Content-Type: application/octet-stream' -H 'Expect:' -T $WORK/body.bin http://127.0.0.1:$MEM_GW_PORT/orders/big"
log "(a) $cmd"
t0=$(date +%s.%N)
status=$(eval "$cmd") || status="curl-failed"
t1=$(date +%s.%N)
got=$(curl -s --max-time 30 "http://127.0.0.1:$MEM_UPSTREAM_PORT/_fg/log" | grep -o '"size":[0-9]*' | tail -1 | cut -d: -f2)
res put_status "$status"
res put_bytes "$bytes"
res put_upstream_size "${got:-none}"
res put_seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
res put_hwm_kib "$(vm_kib "$pid" VmHWM)"
log "(a) status $status, upstream got ${got:-nothing} of $bytes bytes, gateway VmHWM $(vm_kib "$pid" VmHWM) KiB"
bg_stop gateway

# ---- (b) HOLD_CONNS idle keep-alive connections
start_gw
pid=${BG_PID[gateway]}
res idle_rss_before_kib "$(vm_kib "$pid" VmRSS)"
log "(b) $HOLD 127.0.0.1 $MEM_GW_PORT $HOLD_CONNS   (then SIGTERM)"
bg_start holdconns "$WORK/hold.out" "$HOLD" 127.0.0.1 "$MEM_GW_PORT" "$HOLD_CONNS"
for _ in $(seq 1 1200); do
  grep -q '^held' "$WORK/hold.out" && break
  alive "${BG_PID[holdconns]}" || break
  sleep 0.1
done
grep -q '^held' "$WORK/hold.out" || { cat "$WORK/hold.out" >&2; die "holdconns did not get its $HOLD_CONNS connections"; }
sleep 2                                             # let the gateway settle (nothing should move)
res idle_rss_kib "$(vm_kib "$pid" VmRSS)"
res idle_hwm_kib "$(vm_kib "$pid" VmHWM)"
res idle_gauge "$(metric "http://127.0.0.1:$MEM_ADMIN_PORT" fencegate_client_connections '')"
res idle_established "$(ss -tnH state established "( sport = :$MEM_GW_PORT )" | wc -l)"
bg_stop holdconns
res idle_held "$(sed -n 's/^held \([0-9]*\).*/\1/p' "$WORK/hold.out")"
res idle_statuses "$(sed -n 's/^held [0-9]* statuses //p' "$WORK/hold.out" | tr ' ' ',')"
res idle_open "$(sed -n 's/^open \([0-9]*\) of.*/\1/p' "$WORK/hold.out")"
res idle_conns "$HOLD_CONNS"
bg_stop gateway
bg_stop upstream
log "memory results ($RES):"; sed 's/^/    /' "$RES" >&2
