#!/usr/bin/env bash
# verify_unit.sh FENCEGATE_BINARY -- conf/fencegate.service is a unit systemd
# accepts (systemd-analyze verify) and stays hardened (systemd-analyze
# security: overall exposure at most 2.0 (--threshold is in tenths), printed). verify needs ExecStart's
# binary to exist, so it checks a copy that points at the built one.
set -euo pipefail
BIN=$(readlink -f "$1")
UNIT="$(dirname "$0")/../../conf/fencegate.service"
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing"; exit 1; }
SCRATCH=$(mktemp -d /tmp/fencegate-unit.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
grep -qx 'ExecStart=/usr/sbin/fencegate -c /etc/fencegate/fencegate.conf' "$UNIT" \
  || { echo "ExecStart is not the packaged binary and config"; exit 1; }
sed "s|^ExecStart=/usr/sbin/fencegate |ExecStart=$BIN |" "$UNIT" >"$SCRATCH/fencegate.service"
# --man=no: the man pages are installed by the package, not on this machine
systemd-analyze verify --man=no "$SCRATCH/fencegate.service"
echo "verify ok"
# --offline: reads the file, needs no running systemd
systemd-analyze security --offline=true --threshold=20 "$SCRATCH/fencegate.service" \
  | tee "$SCRATCH/security" | grep -v '^✓'
grep -q 'Overall exposure level for fencegate.service' "$SCRATCH/security"
echo "security ok"
