#!/usr/bin/env bash
# Builds cbloss's libFuzzer targets (fuzz/) with clang, ASan and UBSan in
# build-fuzz/, replays the seed corpora and past crashes (ctest -L fuzz), then
# fuzzes each target for a bounded time and fails if any of them crashed.
#
# Usage: scripts/fuzz.sh [target...]
#   (default: compute_request_fuzzer shm_refs_fuzzer store_fuzzer
#    arrays_fuzzer)
#
#   FUZZ_SECONDS  seconds per target (default 60)
#   JOBS          build parallelism (default: nproc)
#
# Fuzzing runs on a copy of fuzz/corpus/<target>/ in build-fuzz/fuzz-work/,
# so the committed seed corpus never grows. Crashing inputs go to
# build-fuzz/artifacts/<target>/. To keep one as a regression test:
#   cp build-fuzz/artifacts/<target>/crash-... fuzz/regressions/<target>/
# and reproduce it with build-fuzz/bin/<target> <file>.
#
# Needs clang and libFuzzer's runtime (Debian 12: clang libclang-rt-14-dev).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
BUILD=$ROOT/build-fuzz
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
JOBS=${JOBS:-$(nproc)}
if [[ $# -gt 0 ]]; then
  targets=("$@")
else
  targets=(compute_request_fuzzer shm_refs_fuzzer store_fuzzer arrays_fuzzer)
fi
# Large enough for a few rows of logits, a long call sequence, a .npy header
# plus data; small enough to keep executions fast.
declare -A max_len=(
  [compute_request_fuzzer]=4096
  [shm_refs_fuzzer]=1024
  [store_fuzzer]=512
  [arrays_fuzzer]=2048
)

if ! grep -q 'add_subdirectory(fuzz)' CMakeLists.txt; then
  echo "fuzz.sh: the top-level CMakeLists.txt does not add fuzz/; it needs:" >&2
  echo "  if(CBLOSS_FUZZ) enable_testing() add_subdirectory(fuzz) endif()" >&2
  exit 2
fi
for tool in clang clang++; do
  command -v "$tool" >/dev/null || { echo "fuzz.sh: $tool not found" >&2; exit 2; }
done

echo "=== configure + build ($BUILD)"
cmake -S . -B "$BUILD" -G Ninja \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCBLOSS_FUZZ=ON -DCBLOSS_SANITIZE=address,undefined \
  -DCBLOSS_BUILD_TESTS=OFF >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; exit 2; }
cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}" || exit 2

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "=== replay: seed corpora and fuzz/regressions"
regex=$(IFS='|'; echo "${targets[*]}")
ctest --test-dir "$BUILD" -L fuzz -R "$regex" --output-on-failure
replay_rc=$?

failed=()
summary=()
for t in "${targets[@]}"; do
  work=$BUILD/fuzz-work/$t
  artifacts=$BUILD/artifacts/$t
  log=$BUILD/fuzz-logs/$t.log
  rm -rf "$work"
  mkdir -p "$work/corpus" "$artifacts" "$(dirname "$log")"
  if compgen -G "fuzz/corpus/$t/*" >/dev/null; then
    cp fuzz/corpus/"$t"/* "$work/corpus/"
  fi
  echo "=== $t: ${FUZZ_SECONDS}s, -max_len=${max_len[$t]:-4096} (log: $log)"
  (cd "$work" && "$BUILD/bin/$t" corpus \
    -max_total_time="$FUZZ_SECONDS" -max_len="${max_len[$t]:-4096}" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/") >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
  line=$(printf '%-24s rc=%-3d execs=%-9s exec/s=%-6s %s' \
    "$t" "$rc" "${execs:-?}" "${rate:-?}" "${cov:-}")
  summary+=("$line")
  if [[ $rc -ne 0 ]]; then
    failed+=("$t")
    echo "!!! $t failed (rc=$rc); the report:"
    grep -E -A60 '^==[0-9]+==ERROR|runtime error|divergence|compute_request_fuzzer:|arrays_fuzzer:|ALARM|out-of-memory' \
      "$log" | head -120
    ls -l "$artifacts"
  fi
done

echo "=== summary (${FUZZ_SECONDS}s per target)"
printf '%s\n' "${summary[@]}"
if [[ $replay_rc -ne 0 ]]; then
  echo "fuzz.sh: a seed or regression input fails (ctest -L fuzz above)"
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: crashes in: ${failed[*]}; inputs in $BUILD/artifacts/"
fi
[[ $replay_rc -eq 0 && ${#failed[@]} -eq 0 ]]
