# bench/lib.sh -- sourced by the bench/*.sh scripts: logging, processes started
# and stopped by PID (never by name), ports, CPU accounting and the "is the
# machine quiet" check that ../shared/peers/run-peers.sh uses, so that figures
# measured here and there are taken the same way.
#
#   bg_start NAME LOGFILE CMD...   start CMD in the background (exec'd: $! is CMD's PID)
#   bg_stop NAME                   TERM, up to 10 s, then KILL -- that PID only
#   bg_stop_all                    every process started here, newest first
#   bench_trap                     EXIT/INT/TERM -> bg_stop_all (+ the caller's on_exit, if defined)

BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO_DIR=${REPO_DIR:-$(cd "$BENCH_DIR/.." && pwd)}
PEERS_DIR=${PEERS_DIR:-$(cd "$REPO_DIR/.." && pwd)/shared/peers}
PEERS_WORK=${PEERS_WORK:-/tmp/fencegate-peers}
BUILD_DIR=${BUILD_DIR:-$REPO_DIR/build-bench}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- processes (by PID)
declare -A BG_PID=()
BG_ORDER=()

alive() {                 # running, and not a zombie awaiting reaping
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  [ "${s%% *}" != Z ]
}

bg_start() {              # name logfile cmd...
  local name=$1 logf=$2; shift 2
  ( exec "$@" ) >>"$logf" 2>&1 &
  BG_PID[$name]=$!
  BG_ORDER+=("$name")
}

bg_stop() {               # name
  local name=$1 pid=${BG_PID[$1]:-} i
  [ -n "$pid" ] || return 0
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then log "$name ($pid) did not exit on TERM, sending KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
  unset "BG_PID[$name]"
}

bg_stop_all() {
  local i
  for (( i=${#BG_ORDER[@]}-1; i>=0; i-- )); do bg_stop "${BG_ORDER[$i]}"; done
  BG_ORDER=()
}

bench_trap() {
  trap '__rc=$?; trap - EXIT INT TERM; bg_stop_all; if declare -F on_exit >/dev/null; then on_exit || true; fi; exit $__rc' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# ---------------------------------------------------------------- ports
port_in_use() { ss -ltnH "( sport = :$1 )" 2>/dev/null | grep -q .; }

ports_free() {            # port... -> dies naming the first one in use
  local p
  for p in "$@"; do
    port_in_use "$p" && die "port $p is already in use (ss -ltnp 'sport = :$p'); free it or change the *_PORT variable"
  done
  return 0
}

wait_port() {             # port name [pid]
  local i
  for i in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if [ -n "${3:-}" ] && ! alive "$3"; then break; fi
    sleep 0.1
  done
  die "$2 did not start listening on 127.0.0.1:$1"
}

# ---------------------------------------------------------------- the peers' configs
# run-peers.sh writes conf/{redis,upstream,peer-a,peer-b}.conf under $PEERS_WORK; the
# stale and allocation benches start the same Redis, upstream and peer-b from them.
gw_conf_write() {         # file listen-port upstream-port state-url admin-port [max_connections]
  # the one fencegate config every bench uses (the `orders` policy of ../shared/peers' loads),
  # checked with fencegate -t ($GW) before anything starts
  cat > "$1" <<EOF
[gateway]
listen = 127.0.0.1:$2
upstream = http://127.0.0.1:$3
state = $4
admin_listen = 127.0.0.1:$5
access_log = off
max_connections = ${6:-4096}
state_pool = ${STATE_POOL:-4}
workers = ${WORKERS:-0}

[policy orders]
match = /orders/{id}
key = order:{id}
EOF
  "$GW" -t -c "$1" >/dev/null
}

peers_conf_ensure() {
  local c=$PEERS_WORK/conf
  if [ -s "$c/redis.conf" ] && [ -s "$c/upstream.conf" ] && [ -s "$c/peer-b.conf" ]; then return 0; fi
  log "no peer configs in $c: running run-peers.sh once (peer-b only, 1 s) to write them"
  TARGETS=peer-b REPS=0 WARMUP=1 REDIS_BENCH_N=1000 QUIET_WAIT=1 GATEWAY_URL= GATEWAY_CMD= \
    bash "$PEERS_DIR/run-peers.sh" >"${TMPDIR:-/tmp}/fencegate-bench-peers-init.log" 2>&1 \
    || die "run-peers.sh failed (see ${TMPDIR:-/tmp}/fencegate-bench-peers-init.log)"
  [ -s "$c/peer-b.conf" ] || die "run-peers.sh wrote no configs to $c"
}
conf_port() {             # file -> the port it listens on (nginx "listen 127.0.0.1:N", redis "port N")
  sed -nE 's/^\s*listen 127\.0\.0\.1:([0-9]+).*/\1/p; s/^port ([0-9]+)$/\1/p' "$1" | head -1
}
peer_audit_key() { sed -nE 's/.*audit_key = "([^"]+)".*/\1/p' "$PEERS_WORK/conf/peer-b.conf" | head -1; }

start_peer_redis() {      # logdir
  mkdir -p "$PEERS_WORK/run/redis"
  bg_start redis "$1/redis.stdout.log" redis-server "$PEERS_WORK/conf/redis.conf"
  local i
  for i in $(seq 1 100); do redis-cli -p "$REDIS_PORT" PING 2>/dev/null | grep -q PONG && return 0; sleep 0.1; done
  die "redis did not answer PING on $REDIS_PORT"
}
start_peer_nginx() {      # name port logdir
  local name=$1 port=$2 run=$PEERS_WORK/run
  mkdir -p "$run/tmp/$name"
  nginx -t -q -c "$PEERS_WORK/conf/$name.conf" -p "$run/" 2>"$3/$name.configtest.log" \
    || { cat "$3/$name.configtest.log" >&2; die "nginx config test failed for $name"; }
  bg_start "$name" "$3/$name.stdout.log" nginx -c "$PEERS_WORK/conf/$name.conf" -p "$run/"
  wait_port "$port" "$name" "${BG_PID[$name]}"
}

# ---------------------------------------------------------------- CPU accounting (as run-peers.sh)
CLK_TCK=$(getconf CLK_TCK)
tree_jiffies() {          # pid -> utime+stime of pid (all threads) and its direct children
  local p total=0 s
  for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    set -- $s
    total=$(( total + ${12} + ${13} ))
  done
  echo "$total"
}
machine_jiffies() {       # "usersys irq total" from /proc/stat
  local _c u n s i w q sq st rest
  read -r _c u n s i w q sq st rest < /proc/stat
  echo "$(( u + n + s )) $(( q + sq + st )) $(( u + n + s + i + w + q + sq + st ))"
}
MYPGRP=$(ps -o pgid= -p $$ | tr -d ' ')
foreign_snapshot() {      # CPU of user-space processes outside our process group (other tenants)
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pg="$MYPGRP" '{
      pid = $1; sub(/^.*\) /, "")
      if ($3 == pg) next
      if (int($7 / 2097152) % 2 == 1) next    # kernel thread
      print pid ":" $20, $12 + $13 + $14 + $15
    }'
}
foreign_delta() {
  awk 'NR == FNR { a[$1] = $2; next } { d = ($1 in a) ? $2 - a[$1] : $2; if (d > 0) s += d } END { print s + 0 }' "$1" "$2"
}
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-120}
wait_quiet() {            # wait up to QUIET_WAIT s for a 1 s sample with machine busy < QUIET_PCT %
  local t0=$SECONDS a b u0 q0 t0j u1 q1 t1j pct
  while :; do
    a=$(machine_jiffies); sleep 1; b=$(machine_jiffies)
    read -r u0 q0 t0j <<<"$a"; read -r u1 q1 t1j <<<"$b"
    pct=$(( t1j > t0j ? 100 * (u1 - u0 + q1 - q0) / (t1j - t0j) : 0 ))
    [ "$pct" -lt "$QUIET_PCT" ] && return 0
    if [ $(( SECONDS - t0 )) -ge "$QUIET_WAIT" ]; then
      log "machine still ${pct}% busy before the run (other tenants?) -- measuring anyway"; return 0
    fi
    sleep 2
  done
}

# ---------------------------------------------------------------- misc
median() {                # numbers... -> median ("NA" if none)
  printf '%s\n' "$@" | awk 'NF { a[++n] = $1 } END {
      if (n == 0) { print "NA"; exit }
      for (i = 2; i <= n; i++) { x = a[i]; j = i - 1; while (j > 0 && a[j] + 0 > x + 0) { a[j+1] = a[j]; j-- } a[j+1] = x }
      print (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2 }'
}
vm_kib() { sed -nE "s/^$2:\s+([0-9]+) kB/\1/p" "/proc/$1/status"; }   # pid field -> KiB
metric() {                # admin-url name label-substring -> sum of the matching series (0 if none)
  curl -s --max-time 5 "$1/metrics" | awk -v n="$2" -v l="$3" 'index($0, n) == 1 && (l == "" || index($0, l)) { v += $NF } END { printf "%d\n", v }'
}
