#!/usr/bin/env bash
# bench/allocs.sh -- heap allocations per proxied request in steady state (bench/run.sh target 8).
#
# Runs fencegate (Redis state, like the PUT benchmark) under LD_PRELOAD=bench/malloc_count.c,
# which counts malloc/calloc/realloc/posix_memalign/aligned_alloc/memalign per calling object
# and rewrites a file every 100 ms. For each load (ALLOC_LOADS, default "put get": the peers'
# fence-put.lua / fence-get.lua): WARMUP s of wrk, 0.5 s idle, read the counts, DURATION s of
# wrk, 0.5 s idle, read them again; allocations in the window / requests wrk reports.
# The gateway is idle at both readings, so the window holds exactly the measured run (plus the
# connection set-up of wrk's CONNS connections and any timer work, both included honestly).
# Starts Redis and the upstream nginx from the peers' configs ($PEERS_WORK/conf, written by
# run-peers.sh; run once if missing) and fencegate on :GATEWAY_PORT (8083), admin 8093;
# stops each by PID whatever happens. Writes key=value lines to $OUT/allocs.result.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

OUT=${OUT:-/tmp/fencegate-bench/allocs}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
RESOURCES=${RESOURCES:-10000}
GATEWAY_PORT=${GATEWAY_PORT:-8083}
ADMIN_PORT=${ADMIN_PORT:-$(( GATEWAY_PORT + 10 ))}
ALLOC_LOADS=${ALLOC_LOADS:-put get}
GW=$BUILD_DIR/fencegate
SO=$BUILD_DIR/bench/malloc_count.so

[ -x "$GW" ] || die "build first: $GW (bench/run.sh builds it)"
mkdir -p "$OUT" "$BUILD_DIR/bench"
gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$SO" "$BENCH_DIR/malloc_count.c" -lpthread
peers_conf_ensure
REDIS_PORT=$(conf_port "$PEERS_WORK/conf/redis.conf")
UPSTREAM_PORT=$(conf_port "$PEERS_WORK/conf/upstream.conf")
ports_free "$REDIS_PORT" "$UPSTREAM_PORT" "$GATEWAY_PORT" "$ADMIN_PORT"

WORK=$(mktemp -d /tmp/fencegate-bench-allocs.XXXXXX)
on_exit() { rm -rf "$WORK"; }
bench_trap
RES=$OUT/allocs.result
: > "$RES"
res() { echo "$1=$2" >> "$RES"; }

gw_conf_write "$WORK/gw.conf" "$GATEWAY_PORT" "$UPSTREAM_PORT" "redis://127.0.0.1:$REDIS_PORT/0" "$ADMIN_PORT"

start_peer_redis "$WORK"
start_peer_nginx upstream "$UPSTREAM_PORT" "$WORK"
MC=$WORK/malloc-count.txt
bg_start gateway "$WORK/gateway.log" env MALLOC_COUNT_FILE="$MC" LD_PRELOAD="$SO" "$GW" -c "$WORK/gw.conf"
wait_port "$GATEWAY_PORT" fencegate "${BG_PID[gateway]}"
log "started: MALLOC_COUNT_FILE=$MC LD_PRELOAD=$SO $GW -c $WORK/gw.conf"
sleep 0.3
[ -s "$MC" ] || die "the malloc counter wrote nothing to $MC (is LD_PRELOAD honoured?)"

snap() { sleep 0.5; cp "$MC" "$1"; }   # idle: the file is at most 100 ms old and nothing moves
wrk_run() {                            # load seconds logfile
  local cmd="wrk -t$THREADS -c$CONNS -d${2}s --timeout 5s --latency -s $PEERS_DIR/fence-$1.lua http://127.0.0.1:$GATEWAY_PORT -- $RESOURCES $THREADS"
  [ "$3" = /dev/null ] || log "$cmd"
  timeout $(( $2 + 30 )) $cmd > "$3" 2>&1 || log "wrk exited non-zero (see $3)"
}

for load in $ALLOC_LOADS; do
  wrk_run "$load" "$WARMUP" /dev/null
  snap "$WORK/c0"
  wrk_run "$load" "$DURATION" "$OUT/allocs-wrk-$load.txt"
  snap "$WORK/c1"
  line=$(grep '^WRKSUM' "$OUT/allocs-wrk-$load.txt") || { cat "$OUT/allocs-wrk-$load.txt" >&2; die "no WRKSUM from wrk"; }
  req=$(echo "$line" | sed -E 's/.* requests=([0-9]+).*/\1/')
  non2xx=$(echo "$line" | sed -E 's/.* non2xx=([0-9]+).*/\1/')
  allocs=$(( $(awk '$1 == "total" { print $2 }' "$WORK/c1") - $(awk '$1 == "total" { print $2 }' "$WORK/c0") ))
  res "${load}_requests" "$req"
  res "${load}_non2xx" "$non2xx"
  res "${load}_allocs" "$allocs"
  res "${load}_per_request" "$(awk -v a="$allocs" -v r="$req" 'BEGIN { printf "%.2f", (r > 0) ? a / r : -1 }')"
  # per calling object, per request, largest first
  res "${load}_by_object" "$(awk -v r="$req" 'NR == FNR { a[$1] = $2; next } $1 != "total" && $2 - a[$1] > 0 {
        printf "%s %.2f\n", $1, ($2 - a[$1]) / r }' "$WORK/c0" "$WORK/c1" | sort -k2,2 -rn | awk '{ printf "%s%s=%s", (NR > 1) ? "," : "", $1, $2 }')"
  log "$load: $allocs allocations / $req requests (non-2xx $non2xx) = $(awk -v a="$allocs" -v r="$req" 'BEGIN { printf "%.2f", a / r }') per request"
done

# libmicrohttpd 0.9.75 allocates once per response (MHD_create_response_*: calloc) and three
# times per MHD_add_response_header (calloc of the entry here, two strdup()s that libc charges
# to itself; objdump -d of libmicrohttpd.so.12.60.0 shows calloc, strdup, strdup in the helper
# behind it). Count the headers the gateway adds (all but the ones MHD writes itself) to show
# how much of the figure that is.
hdrs() { curl -s --max-time 5 -D - -o /dev/null "$@" | tr -d '\r' |
           awk 'NR > 1 && NF && tolower($1) !~ /^(content-length|transfer-encoding|connection):$/' | wc -l; }
h_get=$(hdrs "http://127.0.0.1:$GATEWAY_PORT/orders/0")
h_put=$(hdrs -X PUT -H "Fencing-Token: 18446744073709551615" -H 'Content-Type: application/json' \
          --data-binary '{"status":"paid"}' "http://127.0.0.1:$GATEWAY_PORT/orders/0")
res get_response_headers "$h_get"
res put_response_headers "$h_put"
res get_mhd_expected "$(( 1 + 3 * h_get ))"
res put_mhd_expected "$(( 1 + 3 * h_put ))"
bg_stop_all
log "allocation results ($RES):"; sed 's/^/    /' "$RES" >&2
