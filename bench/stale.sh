#!/usr/bin/env bash
# bench/stale.sh -- the stale path: every write refused (409) with its audit record, fencegate
# against peer-b (nginx + Lua + Redis), measured in one run (bench/run.sh target 5).
#
# run-peers.sh cannot do this load (it flushes Redis before each run and only knows put/get), so
# this script starts, all on 127.0.0.1 and from the configs run-peers.sh leaves in
# $PEERS_WORK/conf (it runs run-peers.sh once, 1 s, when they are missing): Redis, the upstream
# nginx and peer-b, plus fencegate on the same Redis (:GATEWAY_PORT 8083, admin 8093). Then:
#   1. seeds every resource's high-water mark to 2^64-1 for both (fencegate keeps
#      fencegate:hwm:order:<n>, peer-b fence:{orders:<n>}), so token 1 is stale everywhere;
#   2. smoke: one PUT with token 1 to each must be a 409 problem+json adding one audit record;
#   3. WARMUP s per target, then REPS rounds, target order rotated per round, each run
#      wrk -t$THREADS -c$CONNS -d${DURATION}s -s bench/stale-put.lua (token 1 on every request)
#      after emptying both audit streams; a run during which other tenants used more than
#      FOREIGN_MAX % of the machine is redone (at most RETRIES times), as run-peers.sh does;
#   4. checks every measured run: every answer non-2xx (wrk), the audit stream grew by the
#      requests wrk counted (+ at most CONNS still in flight when wrk stopped), and for
#      fencegate its own counter fencegate_requests_total{outcome="stale"} agrees;
#   5. prints medians (req/s, p50/p99, CPU us per request of the proxy and of Redis) and the
#      ratio, and writes $OUT/stale-runs.tsv and key=value lines to $OUT/stale.result.
# Stops everything it started, by PID, whatever happens. Exit status 1 when a check failed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

OUT=${OUT:-/tmp/fencegate-bench/stale}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
REPS=${REPS:-3}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
RESOURCES=${RESOURCES:-10000}
GATEWAY_PORT=${GATEWAY_PORT:-8083}
ADMIN_PORT=${ADMIN_PORT:-$(( GATEWAY_PORT + 10 ))}
FOREIGN_MAX=${FOREIGN_MAX:-3}
RETRIES=${RETRIES:-3}
GW=$BUILD_DIR/fencegate
U64_MAX=18446744073709551615
GW_AUDIT=fencegate:audit

[ -x "$GW" ] || die "build first: $GW (bench/run.sh builds it)"
for c in nginx redis-server redis-cli wrk curl ss; do command -v "$c" >/dev/null || die "missing command: $c"; done
mkdir -p "$OUT"
peers_conf_ensure
REDIS_PORT=$(conf_port "$PEERS_WORK/conf/redis.conf")
UPSTREAM_PORT=$(conf_port "$PEERS_WORK/conf/upstream.conf")
PEER_B_PORT=$(conf_port "$PEERS_WORK/conf/peer-b.conf")
PEER_AUDIT=$(peer_audit_key)
[ -n "$PEER_AUDIT" ] || die "no audit_key in $PEERS_WORK/conf/peer-b.conf"
ports_free "$REDIS_PORT" "$UPSTREAM_PORT" "$PEER_B_PORT" "$GATEWAY_PORT" "$ADMIN_PORT"
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

WORK=$(mktemp -d /tmp/fencegate-bench-stale.XXXXXX)
on_exit() { rm -rf "$WORK"; }
bench_trap
RES=$OUT/stale.result
: > "$RES"
res() { echo "$1=$2" >> "$RES"; }

gw_conf_write "$WORK/gw.conf" "$GATEWAY_PORT" "$UPSTREAM_PORT" "redis://127.0.0.1:$REDIS_PORT/0" "$ADMIN_PORT"

start_peer_redis "$WORK"
start_peer_nginx upstream "$UPSTREAM_PORT" "$WORK"
start_peer_nginx peer-b "$PEER_B_PORT" "$WORK"
# refusals are always logged (one JSON line each, even with access_log = off): that is part of
# the stale path's cost, so the log goes to a file as in run-peers.sh (truncated between runs)
bg_start gateway "$WORK/gateway.log" "$GW" -c "$WORK/gw.conf"
wait_port "$GATEWAY_PORT" fencegate "${BG_PID[gateway]}"
log "started redis :$REDIS_PORT, upstream :$UPSTREAM_PORT, peer-b :$PEER_B_PORT ($PEERS_WORK/conf), fencegate :$GATEWAY_PORT ($GW -c $WORK/gw.conf)"
declare -A URL=([fencegate]="http://127.0.0.1:$GATEWAY_PORT" [peer-b]="http://127.0.0.1:$PEER_B_PORT")
declare -A AUDIT=([fencegate]="$GW_AUDIT" [peer-b]="$PEER_AUDIT")
declare -A TPID=([fencegate]="${BG_PID[gateway]}" [peer-b]="${BG_PID[peer-b]}")
TARGETS=(fencegate peer-b)

# ---- 1. seed: the hwm of every resource at 2^64-1 (RESP through redis-cli --pipe)
rcli FLUSHDB >/dev/null
awk -v n="$RESOURCES" -v v="$U64_MAX" 'function cmd(k) { printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v }
  BEGIN { for (i = 0; i < n; i++) { cmd("fencegate:hwm:order:" i); cmd("fence:{orders:" i "}") } }' |
  rcli --pipe >"$WORK/seed.log" 2>&1 || { cat "$WORK/seed.log" >&2; die "seeding failed"; }
[ "$(rcli DBSIZE)" -eq $(( 2 * RESOURCES )) ] || die "seeded $(rcli DBSIZE) keys, want $(( 2 * RESOURCES ))"
log "seeded ${RESOURCES} x 2 hwm keys at $U64_MAX (fencegate:hwm:order:<n>, fence:{orders:<n>})"

# ---- 2. smoke
for t in "${TARGETS[@]}"; do
  a0=$(rcli XLEN "${AUDIT[$t]}")
  read -r code ctype < <(curl -s -o /dev/null -w '%{http_code} %{content_type}\n' --max-time 5 -X PUT \
      -H 'Fencing-Token: 1' -H 'Content-Type: application/json' --data-binary '{"v":1}' "${URL[$t]}/orders/0")
  a1=$(rcli XLEN "${AUDIT[$t]}")
  [ "$code" = 409 ] && [ "${ctype%%;*}" = application/problem+json ] && [ $(( a1 - a0 )) -eq 1 ] \
    || die "smoke: $t answered $code $ctype to a stale PUT and its audit stream ${AUDIT[$t]} went $a0 -> $a1 (want 409 problem+json, +1)"
  log "smoke: $t: stale PUT -> 409 $ctype, ${AUDIT[$t]} +1"
done

# ---- 3. runs
WRK_CMD="wrk -t$THREADS -c$CONNS -d<s>s --timeout 5s --latency -s $BENCH_DIR/stale-put.lua <url> -- $RESOURCES $THREADS"
res command "$WRK_CMD"
TSV=$OUT/stale-runs.tsv
printf 'round\ttarget\trequests\trps\tp50_us\tp99_us\tnon2xx\tsock_errors\taudit_added\tfencegate_stale_counted\tproxy_cpu_us_per_req\tredis_cpu_us_per_req\tforeign_cpu_pct\n' > "$TSV"
xlen_settled() {          # key -> XLEN once it stops moving (in-flight refusals land first)
  local a b i
  a=$(rcli XLEN "$1")
  for i in $(seq 1 25); do sleep 0.2; b=$(rcli XLEN "$1"); [ "$a" = "$b" ] && break; a=$b; done
  echo "$b"
}
run_wrk() {               # round target seconds attempt -> 1 if discarded (foreign load)
  local round=$1 t=$2 dur=$3 attempt=${4:-0} logf="$OUT/stale-wrk-r$1-$2.txt"
  rcli DEL "$GW_AUDIT" "$PEER_AUDIT" >/dev/null
  : > "$WORK/gateway.log"
  wait_quiet
  local s0 s1=0 p0 p1 r0 r1 m0 m1 t0j t1j u0 q0 u1 q1
  [ "$t" = fencegate ] && s0=$(metric "http://127.0.0.1:$ADMIN_PORT" fencegate_requests_total 'outcome="stale"')
  p0=$(tree_jiffies "${TPID[$t]}"); r0=$(tree_jiffies "${BG_PID[redis]}")
  foreign_snapshot > "$WORK/f0"; m0=$(machine_jiffies)
  timeout $(( dur + 30 )) wrk -t"$THREADS" -c"$CONNS" -d"${dur}s" --timeout 5s --latency \
    -s "$BENCH_DIR/stale-put.lua" "${URL[$t]}" -- "$RESOURCES" "$THREADS" > "$logf" 2>&1 \
    || log "wrk exited non-zero for $t (see $logf)"
  m1=$(machine_jiffies); foreign_snapshot > "$WORK/f1"
  p1=$(tree_jiffies "${TPID[$t]}"); r1=$(tree_jiffies "${BG_PID[redis]}")
  local added; added=$(xlen_settled "${AUDIT[$t]}")
  [ "$t" = fencegate ] && s1=$(( $(metric "http://127.0.0.1:$ADMIN_PORT" fencegate_requests_total 'outcome="stale"') - s0 ))
  [ "$round" -gt 0 ] || return 0
  local line; line=$(grep '^WRKSUM' "$logf") || { cat "$logf" >&2; die "no WRKSUM line from wrk for $t"; }
  read -r u0 q0 t0j <<<"$m0"; read -r u1 q1 t1j <<<"$m1"
  echo "$line" | awk -v r="$round" -v t="$t" -v added="$added" -v st="$( [ "$t" = fencegate ] && echo "$s1" || echo NA )" \
      -v pc=$(( p1 - p0 )) -v rc=$(( r1 - r0 )) -v hz="$CLK_TCK" -v tot=$(( t1j - t0j )) \
      -v foreign="$(foreign_delta "$WORK/f0" "$WORK/f1")" '
    { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END {
      req = v["requests"]; us = (req > 0) ? 1e6 / hz / req : 0
      printf "%s\t%s\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t%s\t%.1f\t%.1f\t%.1f\n", r, t, req, v["rps"], v["p50_us"],
        v["p99_us"], v["non2xx"], v["connect_err"] + v["read_err"] + v["write_err"] + v["timeout"], added, st,
        pc * us, rc * us, (tot > 0) ? 100 * foreign / tot : 0
    }' >> "$TSV"
  local f; f=$(tail -n1 "$TSV" | cut -f13)
  if [ "$attempt" -lt "$RETRIES" ] && awk -v f="$f" -v m="$FOREIGN_MAX" 'BEGIN { exit !(f > m) }'; then
    tail -n1 "$TSV" >> "$OUT/stale-runs-discarded.tsv"; sed -i '$d' "$TSV"
    mv "$logf" "${logf%.txt}.discarded-$attempt.txt"
    log "round $round $t: other tenants used ${f}% of the machine during the run -- discarded, redoing"
    return 1
  fi
  tail -n1 "$TSV" | awk -F'\t' '{ printf "  round %s %-9s rps=%s p50=%.3fms p99=%.3fms non2xx=%s/%s audit+%s stale-counter+%s cpu_us/req proxy=%s redis=%s foreign=%s%%\n", $1, $2, $4, $5/1000, $6/1000, $7, $3, $9, $10, $11, $12, $13 }' >&2
}

log "warm-up ${WARMUP}s per target; then $REPS rounds of ${DURATION}s: $WRK_CMD"
for t in "${TARGETS[@]}"; do run_wrk 0 "$t" "$WARMUP"; done
n=${#TARGETS[@]}
for (( r=1; r<=REPS; r++ )); do
  for (( i=0; i<n; i++ )); do
    t=${TARGETS[$(( (i + r - 1) % n ))]}
    a=0
    until run_wrk "$r" "$t" "$DURATION" "$a"; do a=$(( a + 1 )); done
  done
done
bg_stop_all

# ---- 4./5. checks and medians
fails=$(awk -F'\t' -v c="$CONNS" 'NR > 1 {
    if ($7 != $3) printf "round %s %s: %s of %s answers non-2xx (want all); ", $1, $2, $7, $3
    if ($9 < $3 || $9 > $3 + c) printf "round %s %s: audit +%s for %s refused requests (want %s..%s); ", $1, $2, $9, $3, $3, $3 + c
    if ($8 > 0) printf "round %s %s: %s socket errors; ", $1, $2, $8
    if ($10 != "NA" && ($10 - $9 > c || $9 - $10 > c)) printf "round %s %s: stale counter +%s vs audit +%s; ", $1, $2, $10, $9
  }' "$TSV")
for t in "${TARGETS[@]}"; do
  col() { awk -F'\t' -v t="$t" -v c="$1" 'NR > 1 && $2 == t { print $c }' "$TSV"; }
  res "${t}_rps" "$(median $(col 4))"
  res "${t}_p50_us" "$(median $(col 5))"
  res "${t}_p99_us" "$(median $(col 6))"
  res "${t}_cpu_us" "$(median $(col 11))"
  res "${t}_redis_cpu_us" "$(median $(col 12))"
  res "${t}_requests" "$(col 3 | awk '{ s += $1 } END { print s + 0 }')"
  res "${t}_refused" "$(col 7 | awk '{ s += $1 } END { print s + 0 }')"
  res "${t}_audited" "$(col 9 | awk '{ s += $1 } END { print s + 0 }')"
done
res runs "$(( $(wc -l < "$TSV") - 1 ))"
res checks "${fails:-ok}"
ratio=$(awk -v a="$(sed -n 's/^fencegate_rps=//p' "$RES")" -v b="$(sed -n 's/^peer-b_rps=//p' "$RES")" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }')
res ratio "$ratio"
{
  echo
  echo "stale path (every write 409 + audit record), medians of $REPS runs: $WRK_CMD"
  echo
  echo "| target | req/s | p50 ms | p99 ms | proxy CPU us/req | redis CPU us/req | refused / requests (all runs) | audit records added |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${TARGETS[@]}"; do
    awk -F= -v t="$t" '{ v[$1] = substr($0, length($1) + 2) } END {
      printf "| %s | %.0f | %.3f | %.3f | %s | %s | %s / %s | %s |\n", t, v[t "_rps"], v[t "_p50_us"] / 1000,
        v[t "_p99_us"] / 1000, v[t "_cpu_us"], v[t "_redis_cpu_us"], v[t "_refused"], v[t "_requests"], v[t "_audited"] }' "$RES"
  done
  echo
  echo "fencegate / peer-b: $ratio    checks: ${fails:-ok}"
} | tee "$OUT/stale-summary.md" >&2
[ -z "$fails" ]
