#!/usr/bin/env bash
# lint_man.sh -- the man pages are valid mdoc: mandoc -T lint reports nothing
# of level warning or worse (STYLE notes are reported, not fatal).
set -euo pipefail
cd "$(dirname "$0")/../../man"
command -v mandoc >/dev/null || { echo "mandoc missing (apt-get install mandoc)"; exit 1; }
for page in fencegate.8 fencegate.conf.5 fencectl.1; do
  mandoc -T lint -W warning "$page"
  echo "ok $page"
done
