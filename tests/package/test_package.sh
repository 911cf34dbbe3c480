#!/usr/bin/env bash
# test_package.sh BUILD_DIR CPACK -- build the .deb with CPack, unpack it with
# dpkg -x into a scratch folder (no install on this machine), and run what it
# installed: fencegate -t -c on the installed example config, fencectl --help,
# the man pages through mandoc, and the systemd unit through systemd-analyze
# verify (pointed at the unpacked binary).
set -euo pipefail
BUILD=$1
CPACK=$2
SCRATCH=$(mktemp -d /tmp/fencegate-pkg.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
cd "$BUILD"
"$CPACK" -G DEB -B "$SCRATCH/out" >"$SCRATCH/cpack.log" 2>&1 || { cat "$SCRATCH/cpack.log"; exit 1; }
DEB=$(ls "$SCRATCH"/out/fencegate_*.deb)
echo "package: $(basename "$DEB")"
dpkg-deb --info "$DEB" | grep -E "Package|Version|Depends"
dpkg-deb --contents "$DEB" | awk '{print $6}' | sort >"$SCRATCH/contents"
for f in ./usr/sbin/fencegate ./usr/bin/fencectl ./etc/fencegate/fencegate.conf \
         ./usr/share/man/man8/fencegate.8 ./usr/share/man/man5/fencegate.conf.5 \
         ./usr/share/man/man1/fencectl.1 ./usr/share/doc/fencegate/README.md \
         ./usr/share/doc/fencegate/grafana-dashboard.json ./lib/systemd/system/fencegate.service; do
  grep -qx "$f" "$SCRATCH/contents" || { echo "missing in the package: $f"; cat "$SCRATCH/contents"; exit 1; }
done
dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles | grep -qx /etc/fencegate/fencegate.conf \
  || { echo "/etc/fencegate/fencegate.conf is not a conffile"; exit 1; }
dpkg -x "$DEB" "$SCRATCH/root"
R="$SCRATCH/root"
"$R/usr/sbin/fencegate" -t -c "$R/etc/fencegate/fencegate.conf"
"$R/usr/sbin/fencegate" --version
"$R/usr/bin/fencectl" --help | grep -q "Exit codes"
for page in man8/fencegate.8 man5/fencegate.conf.5 man1/fencectl.1; do
  mandoc -T lint -W warning "$R/usr/share/man/$page"
done
UNIT="$R/lib/systemd/system/fencegate.service"
# the unit starts the binary the package installs, on the config it installs
grep -qx 'ExecStart=/usr/sbin/fencegate -c /etc/fencegate/fencegate.conf' "$UNIT" \
  || { echo "the packaged unit does not start /usr/sbin/fencegate:"; grep ExecStart "$UNIT"; exit 1; }
grep -qx 'Type=notify' "$UNIT"
if command -v systemd-analyze >/dev/null; then
  sed "s|^ExecStart=/usr/sbin/fencegate |ExecStart=$R/usr/sbin/fencegate |" "$UNIT" \
    >"$SCRATCH/fencegate.service"
  systemd-analyze verify --man=no "$SCRATCH/fencegate.service"
  echo "unit ok"
fi
echo "package ok"
