#!/usr/bin/env bash
# bench/run.sh -- fencegate's performance targets, measured in one run on this machine against
# the peers of ../shared/peers (peer-a: plain nginx proxy; peer-b: nginx + Lua + Redis fencing),
# printed as ONE table at the end: target, what was measured, fencegate, baseline, ratio, target,
# met or not.
#
#   bench/run.sh                                   # every section, in this order:
#   bench/run.sh put get sqlite postgres stale memory allocs
#     put       run-peers.sh LOAD=put, fencegate with Redis state vs peer-b: req/s ratio (1),
#               gateway CPU us per request (1), p99 (6)
#     get       run-peers.sh LOAD=get (GET /orders/<n>, through the `orders` policy) vs peer-a (2)
#     sqlite    run-peers.sh LOAD=put, fencegate with SQLite state on local disk vs peer-b (3)
#     postgres  run-peers.sh LOAD=put, fencegate on a private Postgres cluster vs peer-b (4)
#     stale     bench/stale.sh: every write 409 + audit record, vs peer-b (5)
#     memory    bench/memory.sh: VmHWM of a 256 MiB PUT; RSS with 10,000 idle connections (7)
#     allocs    bench/allocs.sh: heap allocations per proxied request, steady state (8)
#
# Knobs (environment): REPS [3] rounds and DURATION [10] s per measured run (as run-peers.sh),
# WARMUP [3], QUIET_WAIT, QUIET_PCT, FOREIGN_MAX, RETRIES, CONNS, THREADS, RESOURCES (passed to
# run-peers.sh and the bench/*.sh scripts), REDIS_BENCH_N [50000] (run-peers.sh's Redis ceiling),
# GATEWAY_PORT [8083] (admin = +10), PG_PORT [15432], STATE_POOL [4], WORKERS [0],
# PEERS_DIR [../shared/peers], PEERS_WORK [/tmp/fencegate-peers], BENCH_OUT [results dir].
# A quick try on a busy machine: REPS=1 DURATION=2 WARMUP=1 QUIET_WAIT=5 bench/run.sh put
#
# Everything runs on 127.0.0.1: run-peers.sh uses 6379/9000/8081/8082, fencegate 8083/8093,
# bench/memory.sh 9110/8183/8193, Postgres PG_PORT. Every process is stopped by PID when a
# section ends, or when this script is interrupted; the exact commands are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

ALL=(put get sqlite postgres stale memory allocs)
SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=("${ALL[@]}")
for s in "${SECTIONS[@]}"; do
  case " ${ALL[*]} " in *" $s "*) ;; *) die "unknown section '$s' (sections: ${ALL[*]})" ;; esac
done
want() { case " ${SECTIONS[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

export REPS=${REPS:-3} DURATION=${DURATION:-10} WARMUP=${WARMUP:-3}
export REDIS_BENCH_N=${REDIS_BENCH_N:-50000}
export PEERS_DIR PEERS_WORK BUILD_DIR
GATEWAY_PORT=${GATEWAY_PORT:-8083}
ADMIN_PORT=$(( GATEWAY_PORT + 10 ))
PG_PORT=${PG_PORT:-15432}   # below the ephemeral range (32768+), where a client socket could hold it
PEERS=$PEERS_DIR/run-peers.sh
[ -f "$PEERS" ] || die "peer script not found: $PEERS (set PEERS_DIR)"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${BENCH_OUT:-/tmp/fencegate-bench/results/$STAMP}
mkdir -p "$OUT"
CMDS=$OUT/commands.txt
echo "cd $PWD" > "$CMDS"
# the knobs in effect, written into every command line below so that each can be re-run alone
KNOBS=()
for k in REPS DURATION WARMUP QUIET_WAIT QUIET_PCT FOREIGN_MAX RETRIES CONNS THREADS RESOURCES \
         REDIS_BENCH_N NGINX_WORKERS WRK_CPUS SERVER_CPUS PEERS_WORK; do
  if [ -n "${!k:-}" ]; then KNOBS+=("$k=${!k}"); fi
done
echo "load_start=$(uptime | sed 's/.*load average: //')" > "$OUT/machine.result"

# ---------------------------------------------------------------- packages, build
. tools/ensure-packages.sh
ensure_packages cmake gcc make pkg-config curl libmicrohttpd-dev libcurl4-openssl-dev libhiredis-dev \
  libpq-dev libsqlite3-dev libinih-dev libjansson-dev libhttp-parser-dev \
  nginx libnginx-mod-http-lua lua-nginx-redis redis-server redis-tools wrk util-linux \
  $(want postgres && echo postgresql)
export SKIP_INSTALL=1     # run-peers.sh: everything is there now

cmd_log() { printf '%s\n' "$*" >> "$CMDS"; }
build_cmd="cmake -S . -B $BUILD_DIR -DCMAKE_BUILD_TYPE=Release -DFG_TESTS=OFF && cmake --build $BUILD_DIR -j2"
log "build: $build_cmd"
cmd_log "# build"; cmd_log "$build_cmd"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DFG_TESTS=OFF >/dev/null
cmake --build "$BUILD_DIR" -j2 >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log" >&2; die "build failed"; }
GW=$BUILD_DIR/fencegate

# ---------------------------------------------------------------- cleanup
WORK=$(mktemp -d /tmp/fencegate-bench-run.XXXXXX)
PGDIR=""
PG_BIN=""
on_exit() {
  if [ -n "$PGDIR" ]; then stop_postgres; fi
  rm -rf "$WORK"
}
bench_trap

# A step runs in the background and is waited for, so that an interrupt reaches the trap at
# once, which stops the step by PID (each step cleans up its own processes on TERM).
step() {                  # name logfile cmd...
  local name=$1 logf=$2 rc=0; shift 2
  cmd_log "# $name"; cmd_log "$(printf '%q ' "$@")"
  log "$name: $(printf '%q ' "$@")"
  ( exec "$@" ) > >(tee -a "$logf" >&2) 2>&1 &
  BG_PID[$name]=$!; BG_ORDER+=("$name")
  wait "${BG_PID[$name]}" || rc=$?
  unset "BG_PID[$name]"
  return $rc
}

# ---------------------------------------------------------------- fencegate configs
gw_conf() {               # name state-url
  gw_conf_write "$WORK/$1.conf" "$GATEWAY_PORT" "${UPSTREAM_PORT:-9000}" "$2" "$ADMIN_PORT"
  if ! grep -qF "# $WORK/$1.conf:" "$CMDS"; then cmd_log "# $WORK/$1.conf:"; sed "s/^/#   /" "$WORK/$1.conf" >> "$CMDS"; fi
}

# ---------------------------------------------------------------- run-peers.sh sections
# peers_section SECTION LOAD "TARGETS" CONF [VAR=VALUE...]: runs run-peers.sh with fencegate as
# the gateway target, then writes medians per target to $OUT/SECTION.result from its runs.tsv.
peers_section() {
  local sec=$1 load=$2 targets=$3 conf=$4 logf=$OUT/$1.log rc=0 dir
  shift 4
  : > "$logf"
  step "$sec" "$logf" env "${KNOBS[@]}" "$@" LOAD="$load" TARGETS="$targets" GATEWAY_NAME=fencegate \
    GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT" GATEWAY_CMD="$GW -c $WORK/$conf.conf" \
    bash "$PEERS" || rc=$?
  dir=$(sed -n 's/^raw: \(.*\)\/runs\.tsv,.*/\1/p' "$logf" | tail -1)
  { echo "rc=$rc"; echo "runs_dir=$dir"; } > "$OUT/$sec.result"
  [ -n "$dir" ] && [ -s "$dir/runs.tsv" ] || { log "$sec: run-peers.sh gave no results (status $rc)"; return 0; }
  cp "$dir/runs.tsv" "$OUT/$sec-runs.tsv"
  awk -F'\t' '
    function med(s,   a, n, i, j, x) {
      n = split(s, a, " "); if (n == 0 || a[1] == "NA") return "NA"
      for (i = 2; i <= n; i++) { x = a[i]; j = i - 1; while (j > 0 && a[j] + 0 > x + 0) { a[j+1] = a[j]; j-- } a[j+1] = x }
      return (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }
    NR == 1 { next }
    { t = $2; seen[t] = 1; rps[t] = rps[t] " " $4; p50[t] = p50[t] " " $5; p99[t] = p99[t] " " $7
      cpu[t] = cpu[t] " " $13; rcpu[t] = rcpu[t] " " $15; fo[t] = fo[t] " " $20
      req[t] += $3; bad[t] += $9; err[t] += $10; runs[t]++ }
    END { for (t in seen) {
      printf "%s_rps=%s\n%s_p50_us=%s\n%s_p99_us=%s\n%s_cpu_us=%s\n%s_redis_cpu_us=%s\n", t, med(rps[t]), t, med(p50[t]), t, med(p99[t]), t, med(cpu[t]), t, med(rcpu[t])
      printf "%s_foreign_pct=%s\n%s_requests=%d\n%s_non2xx=%d\n%s_sock_errors=%d\n%s_runs=%d\n", t, med(fo[t]), t, req[t], t, bad[t], t, err[t], t, runs[t] } }' \
    "$dir/runs.tsv" >> "$OUT/$sec.result"
  if [ -s "$dir/runs-discarded.tsv" ]; then echo "discarded=$(wc -l < "$dir/runs-discarded.tsv")" >> "$OUT/$sec.result"; fi
  # what the gateway said about its store at start-up (durability settings)
  grep -h '"msg":"state store"' "$PEERS_WORK/run/gateway.stdout.log" 2>/dev/null | grep -m1 -E '"event":"(durability|not durable)"' |
    sed -n 's/.*"detail":"\([^"]*\)".*/store_settings=\1/p' >> "$OUT/$sec.result" || true
}

# ---------------------------------------------------------------- Postgres (private cluster)
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }
start_postgres() {
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  ports_free "$PG_PORT"
  PGDIR=$(mktemp -d /tmp/fencegate-bench-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then chown postgres: "$PGDIR"; fi
  as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -A trust -U postgres -N >"$OUT/postgres-initdb.log" 2>&1 \
    || { cat "$OUT/postgres-initdb.log" >&2; die "initdb failed"; }
  # postgres itself, not pg_ctl: pg_ctl puts the server in a session of its own, and run-peers.sh
  # would then count its CPU as another tenant's and discard every run. The defaults stand:
  # fsync = on, synchronous_commit = on (a committed check is on disk).
  cmd_log "# postgres: $PG_BIN/initdb -D $PGDIR/data -A trust -U postgres -N; $PG_BIN/postgres -D $PGDIR/data -p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1 (as postgres)"
  local pg=("$PG_BIN/postgres" -D "$PGDIR/data" -p "$PG_PORT" -k "$PGDIR" -c listen_addresses=127.0.0.1)
  if [ "$(id -u)" = 0 ]; then pg=(setpriv --reuid=postgres --regid=postgres --init-groups -- "${pg[@]}"); fi
  bg_start postgres "$OUT/postgres.log" "${pg[@]}"
  wait_port "$PG_PORT" postgres "${BG_PID[postgres]}"
  local i
  for i in $(seq 1 50); do psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc 'select 1' postgres >/dev/null 2>&1 && break; sleep 0.2; done
  echo "pg_settings=$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc "select string_agg(name || '=' || setting, ' ' order by name) from pg_settings where name in ('fsync','synchronous_commit','server_version','shared_buffers')" postgres)" > "$OUT/postgres-settings.result"
}
stop_postgres() {         # SIGINT = fast shutdown, by PID
  local pid=${BG_PID[postgres]:-}
  if [ -n "$pid" ] && alive "$pid"; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
  fi
  bg_stop postgres
  rm -rf "$PGDIR"; PGDIR=""
}

# ---------------------------------------------------------------- the sections
if want put; then
  gw_conf redis "redis://127.0.0.1:${REDIS_PORT:-6379}/0"
  peers_section put put "peer-b gateway" redis
fi
if want get; then
  gw_conf redis "redis://127.0.0.1:${REDIS_PORT:-6379}/0"
  peers_section get get "peer-a gateway" redis
fi
if want sqlite; then
  # on local disk (not tmpfs), with the store's own pragmas: storage/sqlite.c sets
  grep -o 'PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;' storage/sqlite.c | head -1 |
    sed 's/^/code=/' > "$OUT/sqlite-code.result" || true
  echo "fs=$(df -T "$WORK" | awk 'NR == 2 { print $2 " " $1 }')" >> "$OUT/sqlite-code.result"
  gw_conf sqlite "sqlite:$WORK/state.db"
  peers_section sqlite put "peer-b gateway" sqlite
fi
if want postgres; then
  start_postgres
  gw_conf postgres "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  # Postgres puts each backend in a session of its own (setsid), so run-peers.sh would count
  # the store's CPU as another tenant's and discard the gateway's runs. It leaves GATEWAY_PID
  # and that PID's children out of the other tenants; with GATEWAY_CMD set, it does not use it
  # for anything else. The postmaster's children are exactly the backends.
  peers_section postgres put "peer-b gateway" postgres GATEWAY_PID="${BG_PID[postgres]}"
  stop_postgres
fi
if want stale; then
  step stale "$OUT/stale.log" env "${KNOBS[@]}" OUT="$OUT" GATEWAY_PORT="$GATEWAY_PORT" bash bench/stale.sh || log "stale: exit status $?"
fi
if want memory; then
  step memory "$OUT/memory.log" env "${KNOBS[@]}" OUT="$OUT" bash bench/memory.sh || log "memory: exit status $?"
fi
if want allocs; then
  step allocs "$OUT/allocs.log" env "${KNOBS[@]}" OUT="$OUT" GATEWAY_PORT="$GATEWAY_PORT" bash bench/allocs.sh || log "allocs: exit status $?"
fi
echo "load_end=$(uptime | sed 's/.*load average: //')" >> "$OUT/machine.result"

# ---------------------------------------------------------------- the table
R() {                     # file key -> value ("" if absent)
  [ -f "$OUT/$1.result" ] || return 0
  awk -v k="$2" 'index($0, k "=") == 1 { v = substr($0, length(k) + 2) } END { printf "%s", v }' "$OUT/$1.result"
}
fmt_k() { [ -n "$1" ] && [ "$1" != NA ] && awk -v x="$1" 'BEGIN { printf "%.0f", x }' || echo "-"; }
fmt_ms() { [ -n "$1" ] && [ "$1" != NA ] && awk -v x="$1" 'BEGIN { printf "%.2f ms", x / 1000 }' || echo "-"; }
fmt_mib() { [ -n "$1" ] && awk -v x="$1" 'BEGIN { printf "%.1f MiB", x / 1024 }' || echo "-"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "NA" || b == "NA" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a != "NA" && a + 0 >= b + 0) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a != "NA" && a + 0 < b + 0) }'; }
okif() { if "$@"; then echo 0; else echo 1; fi; }
verdict() {               # okif-status invalid-reason
  if [ "$2" = "not run" ]; then echo "not run"; elif [ -n "$2" ]; then echo "INVALID: $2"; elif [ "$1" = 0 ]; then echo "met"; else echo "NOT met"; fi
}
peers_invalid() {         # section -> why its runs do not count ("" = fine)
  local s=$1 why="" t
  [ -f "$OUT/$s.result" ] || { echo "not run"; return; }
  [ -n "$(R "$s" gateway_rps)" ] || { echo "no results (see $OUT/$s.log)"; return; }
  for t in gateway peer-a peer-b; do
    [ -n "$(R "$s" "${t}_rps")" ] || continue
    [ "$(R "$s" "${t}_non2xx")" = 0 ] || why="$why$t: $(R "$s" "${t}_non2xx") non-2xx of $(R "$s" "${t}_requests"); "
    [ "$(R "$s" "${t}_sock_errors")" = 0 ] || why="$why$t: $(R "$s" "${t}_sock_errors") socket errors; "
  done
  echo "$why"
}
rowp() { printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
{
  echo
  echo "## fencegate performance targets -- $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, REPS=$REPS DURATION=${DURATION}s WARMUP=${WARMUP}s"
  echo "load average at start: $(R machine load_start); at end: $(R machine load_end)"
  echo
  echo "| # | target: what was measured | fencegate | baseline | ratio | target | met |"
  echo "|---|---|---:|---:|---:|---|---|"
  bad=$(peers_invalid put)
  a=$(R put gateway_rps); b=$(R put peer-b_rps)
  ok=$(okif ge "$(ratio "$a" "$b" | tr -d x)" 1.5)
  rowp 1 "Redis-fenced PUT, req/s (median)" "$(fmt_k "$a")" "peer-b $(fmt_k "$b")" "$(ratio "$a" "$b")" ">= 1.5x" "$(verdict $ok "$bad")"
  a=$(R put gateway_cpu_us); b=$(R put peer-b_cpu_us)
  ok=$(okif lt "$a" 25.0001)
  rowp 1 "Redis-fenced PUT, gateway CPU us/request (utime+stime)" "${a:--}" "peer-b nginx ${b:--}" "$(ratio "$a" "$b")" "<= 25 us" "$(verdict $ok "$bad")"
  bad=$(peers_invalid get)
  a=$(R get gateway_rps); b=$(R get peer-a_rps)
  ok=$(okif ge "$(ratio "$a" "$b" | tr -d x)" 0.9)
  rowp 2 "GET /orders/<n> through the orders policy, req/s" "$(fmt_k "$a")" "peer-a $(fmt_k "$b")" "$(ratio "$a" "$b")" ">= 0.9x" "$(verdict $ok "$bad")"
  bad=$(peers_invalid sqlite)
  SQLITE_SETTINGS=$(R sqlite store_settings)
  a=$(R sqlite gateway_rps); b=$(R sqlite peer-b_rps)
  ok=$(okif ge "$(ratio "$a" "$b" | tr -d x)" 1.0)
  rowp 3 "SQLite-fenced PUT (${SQLITE_SETTINGS:-synchronous=FULL}), req/s" "$(fmt_k "$a")" "peer-b $(fmt_k "$b")" "$(ratio "$a" "$b")" ">= 1.0x" "$(verdict $ok "$bad")"
  bad=$(peers_invalid postgres)
  a=$(R postgres gateway_rps); b=$(R postgres peer-b_rps)
  if [ "$bad" = "not run" ]; then met="not run"; elif [ -n "$bad" ]; then met="INVALID: $bad"; else met="(no target)"; fi
  rowp 4 "Postgres-fenced PUT (private cluster, fsync on), req/s" "$(fmt_k "$a")" "peer-b $(fmt_k "$b")" "$(ratio "$a" "$b")" "-" "$met"
  a=$(R stale fencegate_rps); b=$(R stale peer-b_rps)
  chk=$(R stale checks); bad=""
  [ -f "$OUT/stale.result" ] || bad="not run"
  [ -z "$bad" ] && [ "$chk" != ok ] && bad="checks: ${chk:-none}"
  ok=$(okif ge "$(ratio "$a" "$b" | tr -d x)" 1.5)
  rowp 5 "stale path: every PUT 409 + audit record, req/s" "$(fmt_k "$a")" "peer-b $(fmt_k "$b")" "$(ratio "$a" "$b")" ">= 1.5x" "$(verdict $ok "$bad")"
  a=$(R put gateway_p99_us); b=$(R put peer-b_p99_us)
  bad=$(peers_invalid put)
  if [ "$bad" = "not run" ]; then met="not run"; elif [ -n "$bad" ]; then met="INVALID: $bad"; elif lt "$a" "$b"; then met="lower than peer-b (no number given)"; else met="not lower than peer-b (no number given)"; fi
  rowp 6 "p99 latency at the load of 1 (64 connections)" "$(fmt_ms "$a")" "peer-b $(fmt_ms "$b")" "$(ratio "$a" "$b")" "-" "$met"
  a=$(R memory put_hwm_kib); bad=""
  [ -f "$OUT/memory.result" ] || bad="not run"
  [ -z "$bad" ] && { [ "$(R memory put_status)" = 200 ] && [ "$(R memory put_upstream_size)" = "$(R memory put_bytes)" ]; } \
    || bad="${bad:-PUT answered $(R memory put_status), upstream got $(R memory put_upstream_size) of $(R memory put_bytes) bytes}"
  ok=$(okif lt "$a" $(( 32 * 1024 )))
  rowp 7a "peak RSS (VmHWM) of a fresh gateway after one 256 MiB PUT to the demo store" "$(fmt_mib "$a")" "at start $(fmt_mib "$(R memory put_hwm_before_kib)")" "-" "< 32 MiB" "$(verdict $ok "$bad")"
  a=$(R memory idle_rss_kib); bad=""
  [ -f "$OUT/memory.result" ] || bad="not run"
  [ -z "$bad" ] && [ "$(R memory idle_open)" != "$(R memory idle_conns)" ] && bad="only $(R memory idle_open) of $(R memory idle_conns) connections still open"
  ok=$(okif lt "$a" $(( 200 * 1024 )))
  rowp 7b "RSS with ${HOLD_CONNS:-10000} idle keep-alive connections (one GET each)" "$(fmt_mib "$a")" "before $(fmt_mib "$(R memory idle_rss_before_kib)")" "-" "< 200 MiB" "$(verdict $ok "$bad")"
  a=$(R allocs put_per_request); bad=""
  [ -f "$OUT/allocs.result" ] || bad="not run"
  [ -z "$bad" ] && [ "$(R allocs put_non2xx)" != 0 ] && bad="$(R allocs put_non2xx) non-2xx answers"
  ok=$(okif lt "$a" 2.0001)
  rowp 8 "heap allocations per proxied PUT, steady state (LD_PRELOAD counter)" "${a:--}" "-" "-" "<= 2" "$(verdict $ok "$bad")"
  echo
  echo "Notes:"
  [ -f "$OUT/put.result" ] && echo "- 1/6: Redis state (no persistence, as peer-b's Redis); gateway CPU is fencegate's utime+stime per request (Redis and upstream excluded; peer-b's figure is its nginx alone). Redis CPU us/req: fencegate $(R put gateway_redis_cpu_us), peer-b $(R put peer-b_redis_cpu_us). p50: fencegate $(fmt_ms "$(R put gateway_p50_us)"), peer-b $(fmt_ms "$(R put peer-b_p50_us)")."
  [ -f "$OUT/sqlite-code.result" ] && echo "- 3: storage/sqlite.c: '$(R sqlite-code code)'; the gateway logged at start: '$(R sqlite store_settings)'; database on $(R sqlite-code fs)."
  [ -f "$OUT/postgres-settings.result" ] && echo "- 4: $(R postgres-settings pg_settings); the gateway logged: '$(R postgres store_settings)'."
  [ -f "$OUT/stale.result" ] && echo "- 5: refused/requests fencegate $(R stale fencegate_refused)/$(R stale fencegate_requests), audit records +$(R stale fencegate_audited); peer-b $(R stale peer-b_refused)/$(R stale peer-b_requests), +$(R stale peer-b_audited) (in-flight at wrk's end may add up to CONNS). Proxy CPU us/req fencegate $(R stale fencegate_cpu_us), peer-b $(R stale peer-b_cpu_us); p99 fencegate $(fmt_ms "$(R stale fencegate_p99_us)"), peer-b $(fmt_ms "$(R stale peer-b_p99_us)"). Checks: $(R stale checks)."
  [ -f "$OUT/memory.result" ] && echo "- 7: the 256 MiB PUT answered $(R memory put_status) in $(R memory put_seconds) s, the demo store logged $(R memory put_upstream_size) bytes; $(R memory idle_held) connections held (answers $(R memory idle_statuses); the demo store has no /orders/<n>, 404 is its answer), gateway gauge $(R memory idle_gauge), $(R memory idle_open) still open at the end; VmHWM then $(fmt_mib "$(R memory idle_hwm_kib)")."
  [ -f "$OUT/allocs.result" ] && echo "- 8: PUT $(R allocs put_allocs) allocations / $(R allocs put_requests) requests; by calling object per request: $(R allocs put_by_object). GET: $(R allocs get_per_request) per request ($(R allocs get_by_object)). libmicrohttpd 0.9.75 allocates 1 per response + 3 per MHD_add_response_header (1 calloc + 2 strdup, charged to libc): with the $(R allocs put_response_headers) headers fencegate adds that is $(R allocs put_mhd_expected) per request."
  for s in put get sqlite postgres; do
    [ -n "$(R "$s" discarded)" ] && echo "- $s: run-peers.sh discarded and redid $(R "$s" discarded) runs for other tenants' CPU (> ${FOREIGN_MAX:-3}% of the machine); median foreign CPU of the kept gateway runs: $(R "$s" gateway_foreign_pct)%."
  done
  [ -s "$OUT/stale-runs-discarded.tsv" ] && echo "- stale: $(wc -l < "$OUT/stale-runs-discarded.tsv") runs discarded and redone for other tenants' CPU."
  echo
  echo "Commands (exact; also in $CMDS):"
  sed 's/^/    /' "$CMDS"
  echo
  echo "Results and logs: $OUT"
} > "$OUT/summary.md"
cat "$OUT/summary.md"
