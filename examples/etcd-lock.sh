#!/usr/bin/env bash
# etcd-lock.sh RESOURCE VALUE -- the etcd v3 lock (etcdctl lock), token = the lock key's revision.
#
# `etcdctl lock --ttl` takes the lock with a lease and runs the protected
# section while holding it; the lease expires TTL seconds after the client
# stops keeping it alive (paused, partitioned, dead). The fencing token is
# the create revision of our lock key (ETCD_LOCK_KEY): lock grants are served
# in create-revision order, so it grows with every grant and is the same
# number however long we waited. (etcdctl also exports ETCD_LOCK_REV, the
# revision of the acquire response's header: it grows too, but it names a
# moment, not our lock; use the key's create revision.)
# Environment: ETCD_ENDPOINTS (127.0.0.1:2379), and common.sh's; the lease
# TTL is LEASE_MS rounded up to whole seconds (etcd's unit).
set -euo pipefail
. "$(dirname "$0")/common.sh"
RES=$1 VALUE=$2
export ETCDCTL_API=3
EP=${ETCD_ENDPOINTS:-127.0.0.1:2379}
TTL=$(( (LEASE_MS + 999) / 1000 ))
export RES VALUE EP
exec etcdctl --endpoints="$EP" lock --ttl="$TTL" "locks/$RES" -- bash -c '
  set -euo pipefail
  . "'"$(dirname "$0")"'/common.sh"
  TOKEN=$(etcdctl --endpoints="$EP" get "$ETCD_LOCK_KEY" -w json |
          sed -n "s/.*\"create_revision\":\([0-9]*\).*/\1/p")
  [[ -n "$TOKEN" ]] || { echo "lock key vanished" >&2; exit 1; }
  echo "locked token=$TOKEN"
  do_work "/orders/$RES" "$TOKEN" "$VALUE"
  echo "released"'
