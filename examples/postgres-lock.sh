#!/usr/bin/env bash
# postgres-lock.sh RESOURCE VALUE -- a lease in a Postgres lock table, token from a sequence.
#
# Lock: one row per lock name; taking it is an upsert that only succeeds when
# the row is free or its lease has expired, and draws the token from a
# sequence in the same statement (sequences never go backwards, even across
# crashes; gaps are harmless). A session advisory lock would not expire when
# a paused client's session stays open, so the lease lives in the row.
# Release: delete the row only if we still own it.
# Environment: PG_URL (postgres://postgres@127.0.0.1:5432/postgres), and common.sh's.
set -euo pipefail
. "$(dirname "$0")/common.sh"
RES=$1 VALUE=$2
PSQL=(psql "${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}" -qAtX -v ON_ERROR_STOP=1)
OWNER="$(hostname)-$$-$RANDOM"

"${PSQL[@]}" >/dev/null <<'SQL'
CREATE TABLE IF NOT EXISTS app_locks(name text PRIMARY KEY, owner text NOT NULL,
  expires timestamptz NOT NULL, token bigint NOT NULL);
CREATE SEQUENCE IF NOT EXISTS app_fencing_tokens;
SQL
TOKEN=""
for _ in $(seq 200); do
  TOKEN=$("${PSQL[@]}" -v name="$RES" -v owner="$OWNER" -v lease="$LEASE_MS" <<'SQL'
INSERT INTO app_locks(name, owner, expires, token)
VALUES (:'name', :'owner', clock_timestamp() + make_interval(secs => :lease / 1000.0),
        nextval('app_fencing_tokens'))
ON CONFLICT (name) DO UPDATE
  SET owner = EXCLUDED.owner, expires = EXCLUDED.expires, token = EXCLUDED.token
  WHERE app_locks.expires < clock_timestamp()
RETURNING token;
SQL
)
  [[ -n "$TOKEN" ]] && break
  sleep 0.05
done
[[ -n "$TOKEN" ]] || { echo "lock busy" >&2; exit 1; }
echo "locked token=$TOKEN"
do_work "/orders/$RES" "$TOKEN" "$VALUE"
"${PSQL[@]}" -v name="$RES" -v owner="$OWNER" >/dev/null <<'SQL'
DELETE FROM app_locks WHERE name = :'name' AND owner = :'owner';
SQL
echo "released"
