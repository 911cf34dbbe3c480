#!/usr/bin/env bash
# lint_dashboard.sh -- docs/grafana-dashboard.json is valid JSON (jq), every
# query in it is valid PromQL (promtool check rules, with Grafana's variables
# given plain values), and every fencegate metric it uses is one the README
# documents (a renamed metric must not leave a silently empty panel).
set -euo pipefail
cd "$(dirname "$0")/../.."
DASH=docs/grafana-dashboard.json
for t in jq promtool; do
  command -v "$t" >/dev/null || { echo "$t missing (tools/test.sh installs it)"; exit 1; }
done
jq -e '.panels | length > 0' "$DASH" >/dev/null
SCRATCH=$(mktemp -d /tmp/fencegate-dash.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
# one recording rule per query: promtool parses each expression
jq -r '.panels[].targets[].expr' "$DASH" \
  | sed -e 's/\$__rate_interval/5m/g' -e 's/\$[a-z_]*/.*/g' >"$SCRATCH/exprs"
{
  echo "groups:"
  echo "  - name: dashboard"
  echo "    rules:"
  n=0
  while IFS= read -r e; do
    n=$((n + 1))
    printf '      - record: dashboard:query%d\n        expr: %s\n' "$n" "$(jq -Rn --arg e "$e" '$e')"
  done <"$SCRATCH/exprs"
} >"$SCRATCH/rules.yml"
promtool check rules "$SCRATCH/rules.yml"
# every metric the dashboard reads is in the README's table of names
grep -o 'fencegate_[a-z_]*' "$SCRATCH/exprs" | sed -E 's/_(bucket|sum|count)$//' | sort -u |
  while read -r m; do
    grep -q "^| \`$m\` |" README.md || { echo "$DASH uses $m, which README.md does not list"; exit 1; }
    echo "ok $m"
  done
echo "dashboard ok ($(wc -l <"$SCRATCH/exprs") queries)"
