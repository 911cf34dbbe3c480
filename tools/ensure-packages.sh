# ensure-packages.sh -- install the Debian packages that are missing, and only
# those (apt-get update first; sudo when not root). Sourced by quickstart.sh
# and test.sh:  . tools/ensure-packages.sh; ensure_packages pkg1 pkg2 ...
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "== installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
