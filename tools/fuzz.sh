#!/usr/bin/env bash
# fuzz.sh -- build and run the libFuzzer harnesses of tests/fuzz (README "Fuzzing").
#
#   tools/fuzz.sh [--ci] [path|token|pattern|config|front ...]
#
# Installs what is missing (clang-14 and its runtimes), builds build-fuzz with
# CC=clang-14 -DFG_FUZZ=ON, then runs the harnesses one after another (never
# two at once: the machine is small and shared), each for FUZZ_SECONDS
# (default 300; --ci: 15, so CI spends about a minute). The seed corpus in
# tests/fuzz/corpus/NAME is only read; what a run finds goes to a scratch
# folder outside the tree (FUZZ_WORK, default /tmp/fencegate-fuzz, kept between
# local runs so that they build on each other; --ci uses a fresh one). A crash
# or a violated property leaves its input in FUZZ_WORK/crashes and the run
# ends with FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

CI_MODE=0
NAMES=()
for a in "$@"; do
  case $a in
    --ci) CI_MODE=1 ;;
    path | token | pattern | config | front) NAMES+=("$a") ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$a'" >&2; exit 2 ;;
  esac
done
((${#NAMES[@]})) || NAMES=(path token pattern config front)
if ((CI_MODE)); then SECONDS_EACH=${FUZZ_SECONDS:-15}; else SECONDS_EACH=${FUZZ_SECONDS:-300}; fi
BUILD=${FUZZ_BUILD_DIR:-build-fuzz}

# the longest input worth trying, per parser
declare -A MAX_LEN=(
  [path]=8300     # past FG_PATH_MAX (8192), so the length limit is reached too
  [token]=48      # 20 digits is the longest token; a little more shows the refusals
  [pattern]=2200  # past FG_PATTERN_SEG_MAX (1024) for one literal segment
  [config]=4096   # many lines of at most 198 characters
  [front]=4096    # a few pipelined requests, with bodies
)

. tools/ensure-packages.sh
ensure_packages cmake make pkg-config clang-14 libclang-rt-14-dev llvm-14 libmicrohttpd-dev \
  libcurl4-openssl-dev libhiredis-dev libpq-dev libsqlite3-dev libinih-dev libjansson-dev

echo "== build ($BUILD, clang-14, libFuzzer + ASan + UBSan)"
cmake -S . -B "$BUILD" -DCMAKE_C_COMPILER=clang-14 -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DFG_FUZZ=ON -DFG_TESTS=OFF >/dev/null
cmake --build "$BUILD" --target fuzz -j"$(nproc)" 2>&1 | grep -Ev '^\[|^-- ' || true
for n in "${NAMES[@]}"; do test -x "$BUILD/tests/fuzz/fuzz_$n"; done

if ((CI_MODE)); then
  WORK=$(mktemp -d /tmp/fencegate-fuzz.XXXXXX)
else
  WORK=${FUZZ_WORK:-/tmp/fencegate-fuzz}
fi
mkdir -p "$WORK/crashes"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:symbolize=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
[[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]] &&
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer

FAILED=()
SUMMARY=()
for n in "${NAMES[@]}"; do
  mkdir -p "$WORK/corpus/$n"
  log="$WORK/$n.log"
  dict=()
  [[ -f tests/fuzz/$n.dict ]] && dict=(-dict="tests/fuzz/$n.dict")
  echo "== fuzz_$n: ${SECONDS_EACH}s, max_len ${MAX_LEN[$n]}, new inputs in $WORK/corpus/$n"
  touch "$WORK/.start"
  start=$SECONDS
  rc=0
  "$BUILD/tests/fuzz/fuzz_$n" -max_total_time="$SECONDS_EACH" -max_len="${MAX_LEN[$n]}" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$WORK/crashes/$n-" "$WORK/corpus/$n" "tests/fuzz/corpus/$n" \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$((SECONDS - start))
  line="fuzz_$n: ${execs:-?} executions in ${secs}s, corpus $(ls "$WORK/corpus/$n" | wc -l) files"
  if ((rc)); then
    line+=" FAIL (exit $rc)"
    FAILED+=("$n")
    grep -E 'property violated|ERROR: |SUMMARY: |runtime error|deadly signal' "$log" | head -20 || true
    while read -r f; do
      echo "-- input $f ($(wc -c <"$f") bytes):"
      od -c "$f" | head -20 || true
      echo "-- reproduce: $BUILD/tests/fuzz/fuzz_$n $f"
    done < <(find "$WORK/crashes" -name "$n-*" -newer "$WORK/.start")
  fi
  echo "$line"
  SUMMARY+=("$line")
done

echo "== fuzz summary"
printf '%s\n' "${SUMMARY[@]}"
if ((${#FAILED[@]})); then
  echo "== fuzz: FAIL (${FAILED[*]}; logs and inputs in $WORK)"
  exit 1
fi
((CI_MODE)) && rm -rf "$WORK"
echo "== fuzz: OK"
