#!/usr/bin/env bash
# Builds cbloss with sanitizers, each in a build directory of its own, and runs
# the tests against the instrumented binaries:
#
#   build-asan  AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer:
#               every test (C++ gtest, and the Python end-to-end tests, which
#               start the instrumented cbloss-server and cbloss CLI)
#   build-tsan  ThreadSanitizer: the tests of cbloss's own synchronisation
#               (thread pool, engine chunking, store, registry, in-flight
#               counter). Code whose threads are handed over by gRPC (the
#               server's reactors, the client's streams) cannot be checked:
#               Debian's gRPC is not instrumented, so every hand-over through
#               its completion queues looks like a race (thousands of reports
#               in grpcpp's inlined headers, none in cbloss's code; see
#               docs/RELIABILITY.md).
#
# Usage: scripts/sanitize.sh [asan|tsan|all]      (default: asan)
#
# Both run in CI (.ci/run). cbloss synchronises only with std::mutex,
# std::condition_variable and atomics, which TSan sees; Debian's Abseil is
# not instrumented, so absl::Mutex would give TSan no happens-before edges.
#
# Every sanitizer report, from the test binaries and from every server or CLI
# process the Python tests start, is written to $SANITIZER_LOG_DIR
# (default build-sanitizer-logs/<asan|tsan>/) by the sanitizers' log_path
# option: a fixture that ignores the server's exit code cannot hide a report.
# The script prints every report and fails if there is one, or if a test
# fails. Times of each step are printed at the end (for CI budgeting).
#
# Notes:
# - gRPC, protobuf and Abseil come from Debian and are not instrumented.
#   For TSan this means gRPC's own locking is invisible: see scripts/tsan.supp
#   for what is suppressed and why.
# - UBSan includes float-cast-overflow (not part of GCC's "undefined"): the
#   engine's float64 -> float32 casts must saturate, never overflow.
# - The sanitizers slow the server down 2-10x; a Python test that fails only
#   on a timeout is sanitizer slowness, not necessarily a bug: look at the
#   report directory first.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
MODE=${1:-asan}
JOBS=${JOBS:-$(nproc)}
LOG_ROOT=${SANITIZER_LOG_DIR:-$ROOT/build-sanitizer-logs}
failed=0
declare -a timings

now() { date +%s; }
step() {  # step NAME COMMAND...: runs and times COMMAND
  local name=$1 start rc
  shift
  echo "=== $name"
  start=$(now)
  "$@"
  rc=$?
  timings+=("$(printf '%-28s %5ds  rc=%d' "$name" $(($(now) - start)) "$rc")")
  [[ $rc -eq 0 ]] || failed=1
  return $rc
}

# Prints the reports under $1; returns 1 if there is any. (Called via step.)
# shellcheck disable=SC2317
check_reports() {
  local dir=$1 files
  files=$(find "$dir" -type f -size +0 2>/dev/null | sort)
  if [[ -z $files ]]; then
    echo "no sanitizer reports in $dir"
    return 0
  fi
  echo "!!! sanitizer reports in $dir:"
  for f in $files; do
    echo "----- $f"
    cat "$f"
  done
  return 1
}

run_asan() {
  local logs=$LOG_ROOT/asan
  rm -rf "$logs" && mkdir -p "$logs"
  step "asan+ubsan configure" cmake -S . -B build-asan -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCBLOSS_SANITIZE=address,undefined,float-cast-overflow \
    || return
  step "asan+ubsan build" cmake --build build-asan -j "$JOBS" || return
  # quarantine_size_mb: ASan keeps freed memory in a quarantine (256 MiB by
  # default) before reusing it, which the load test's "RSS flat from wave to
  # wave" check would otherwise measure instead of the server.
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:quarantine_size_mb=16:log_path=$logs/asan" \
  LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan.supp:print_suppressions=0" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan" \
    step "asan+ubsan tests" ctest --test-dir build-asan --output-on-failure \
    -j "$JOBS"
  step "asan+ubsan reports" check_reports "$logs"
}

run_tsan() {
  local logs=$LOG_ROOT/tsan
  rm -rf "$logs" && mkdir -p "$logs"
  step "tsan configure" cmake -S . -B build-tsan -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCBLOSS_SANITIZE=thread || return
  # Only the tests whose threads synchronise through cbloss's own code (see
  # the note at the top): the pool and the engine on it, the store, the
  # registry, the runs' registry (group commit) and the in-flight counter.
  step "tsan build" cmake --build build-tsan -j "$JOBS" --target \
    cbloss_core_test sqlite_dataset_store_test cbloss_concurrency_test \
    sqlite_store_conformance_test postgres_store_conformance_test \
    postgres_dataset_store_test cbloss_service_test ||
    return
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$logs/tsan:suppressions=$ROOT/scripts/tsan.supp" \
    step "tsan tests" ctest --test-dir build-tsan --output-on-failure \
    -j "$JOBS" -R "^(ThreadPool|ThreadCountInvariance|Cancellation|store|concurrency|server\.RunRegistryTest|server\.SharedMemory(Registry|View|Concurrency))\."
  step "tsan reports" check_reports "$logs"
}

case $MODE in
  asan) run_asan ;;
  tsan) run_tsan ;;
  all) run_asan; run_tsan ;;
  *) echo "usage: $0 [asan|tsan|all]" >&2; exit 2 ;;
esac

echo "=== timings"
printf '%s\n' "${timings[@]}"
exit $failed
