#!/usr/bin/env bash
# bench/run.sh -- fenced-write throughput of fencegate against its peers, in one run.
#
# Builds an optimized fencegate, then runs ../shared/peers/run-peers.sh (or
# $PEERS) with fencegate as the extra target: the script starts the upstream
# (nginx answering 200), Redis, a plain nginx proxy (peer-a) and an
# nginx+Lua+Redis fencing proxy (peer-b), measures each with wrk
# (PUT /orders/<n>, 64 connections, tokens above 2^53, every write accepted)
# in rotating order, and prints medians and ratios measured in the same run.
# Run by hand; it takes a few minutes (REPS x targets x (WARMUP+DURATION) s).
#
#   bench/run.sh                 # defaults of run-peers.sh (REPS=3, DURATION=10)
#   REPS=5 DURATION=15 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-$(cd .. && pwd)/shared/peers/run-peers.sh}
[[ -x "$PEERS" || -f "$PEERS" ]] || { echo "peer script not found: $PEERS" >&2; exit 1; }
PORT=${GATEWAY_PORT:-8083}
UPSTREAM_PORT=${UPSTREAM_PORT:-9000}
REDIS_PORT=${REDIS_PORT:-6379}

cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DFG_TESTS=OFF >/dev/null
cmake --build build-bench -j"$(nproc)" >/dev/null
WORK=$(mktemp -d /tmp/fencegate-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/bench.conf" <<CONF
[gateway]
listen = 127.0.0.1:$PORT
upstream = http://127.0.0.1:$UPSTREAM_PORT
state = redis://127.0.0.1:$REDIS_PORT/0
admin_listen = 127.0.0.1:$((PORT + 10))
access_log = off
max_connections = 4096
state_pool = ${STATE_POOL:-4}
workers = ${WORKERS:-0}

[policy orders]
match = /orders/{id}
key = order:{id}
CONF
build-bench/fencegate -t -c "$WORK/bench.conf"
export GATEWAY_URL="http://127.0.0.1:$PORT" GATEWAY_NAME=fencegate
export GATEWAY_CMD="$PWD/build-bench/fencegate -c $WORK/bench.conf"
export UPSTREAM_PORT REDIS_PORT
bash "$PEERS"
