#!/usr/bin/env bash
# Builds and tests under sanitizers (incrementally: the build directories are kept):
#  1. everything (daemon with LibTorch, client library, all tests) under ASan + UBSan (GCC) in
#     build/asan, then the whole ctest suite;
#  2. unit_tests under TSan in build/tsan, run directly.
# Exits non-zero on a test failure or on any sanitizer report from any process (test binaries,
# the sidecars and sidecarctl they start, forked children): reports go to files under
# build/*/sanitizer-logs, because a sidecar's stderr goes to its test's log and a report there
# could otherwise go unnoticed. The reports found are printed at the end.
#   scripts/sanitize.sh [CTEST ARGS...]      e.g. -R Batching
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
jobs=2  # two cores, shared

"$root/scripts/deps.sh"

# Every report is a failure: UBSan aborts instead of continuing; every process writes its
# reports to $logs/<tool>.<pid>. Set before the build too: gtest_discover_tests runs the test
# binaries at build time.
sanitizer_env() {
  local logs=$1
  rm -rf "$logs" && mkdir -p "$logs"
  # LeakSanitizer stays on, with no suppressions: what LibTorch 1.13, OpenMP and OpenBLAS keep
  # until exit stays reachable, so the sidecar exits leak-free as it is. Suppress a third-party
  # leak only by its library (leak:libtorch_cpu.so in LSAN_OPTIONS=suppressions=FILE), never ours.
  export ASAN_OPTIONS="log_path=$logs/asan:detect_leaks=1:check_initialization_order=1"
  export UBSAN_OPTIONS="log_path=$logs/ubsan:print_stacktrace=1:halt_on_error=1"
  export TSAN_OPTIONS="log_path=$logs/tsan:halt_on_error=0:second_deadlock_stack=1"
}

# Prints the reports left in $1; fails when there are any.
check_reports() {
  local reports
  reports=$(find "$1" -type f | sort)
  [ -z "$reports" ] && return 0
  echo "!! sanitizer reports in $1:"
  for report in $reports; do echo "== $report"; cat "$report"; done
  return 1
}

status=0

# 1. ASan + UBSan, everything.
asan=$root/build/asan
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
# Without the Python package: an instrumented extension needs the sanitizer's runtime loaded
# first, and /usr/bin/python3 is not built with it.
cmake -S "$root" -B "$asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_BUILD_PYTHON=OFF \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags"
sanitizer_env "$asan/sanitizer-logs"
cmake --build "$asan" -j "$jobs"
# Serial, as in test.sh. A generous timeout: everything runs slower under the sanitizers.
ctest --test-dir "$asan" --output-on-failure --timeout 900 "$@" || status=1
check_reports "$asan/sanitizer-logs" || status=1

# 2. TSan, the unit tests: no LibTorch. Their threads (rings, the result cache) are ours.
tsan=$root/build/tsan
flags="-fsanitize=thread -fno-omit-frame-pointer"
cmake -S "$root" -B "$tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_BUILD_PYTHON=OFF \
  -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags"
sanitizer_env "$tsan/sanitizer-logs"
cmake --build "$tsan" -j "$jobs" --target unit_tests
"$tsan/tests/unit_tests" || status=1
check_reports "$tsan/sanitizer-logs" || status=1

if ((status)); then echo "sanitize: FAILED"; else echo "sanitize: all passed, no sanitizer reports"; fi
exit $status
