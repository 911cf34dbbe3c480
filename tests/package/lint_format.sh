#!/usr/bin/env bash
# lint_format.sh -- every tracked C file follows .clang-format (clang-format-14,
# the version Debian 12 ships, so CI and a developer's machine agree).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v clang-format-14 >/dev/null || { echo "clang-format-14 missing (apt-get install clang-format-14)"; exit 1; }
if git rev-parse --git-dir >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.c' '*.h')
else
  mapfile -t files < <(find gateway policy storage tests tools bench -name '*.[ch]')
fi
clang-format-14 --dry-run -Werror "${files[@]}"
echo "ok ${#files[@]} files"
