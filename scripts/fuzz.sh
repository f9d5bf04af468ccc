#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) in build/fuzz with Clang and runs each one for
# SECONDS (default 600), one after the other, then prints each one's final stats.
#   scripts/fuzz.sh [SECONDS] [TARGET...]      targets: handshake admission (default: both)
# Only the fuzzers are configured: no LibTorch, no tests, no benchmarks. A crash leaves its input
# in build/fuzz/artifacts; minimize it (FUZZER -minimize_crash=1 -runs=100000 FILE), and commit
# it to tests/fuzz/corpus/TARGET/ once fixed so that the fuzz_TARGET test keeps replaying it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build/fuzz
seconds=${1:-600}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(handshake admission)

cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSIDECAR_BUILD_FUZZERS=ON \
  -DSIDECAR_BUILD_SIDECAR=OFF -DSIDECAR_BUILD_TESTS=OFF -DSIDECAR_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j 2 --target "${targets[@]/%/_fuzz}"

status=0
mkdir -p "$build/artifacts"
for target in "${targets[@]}"; do
  # New inputs go to build/fuzz/corpus (the first directory is the one libFuzzer writes); the
  # committed seeds are read only. One process, in the foreground: the machine has two cores.
  mkdir -p "$build/corpus/$target"
  log=$build/$target.log
  echo "== $target: ${seconds}s (log: $log)"
  "$build/tests/fuzz/${target}_fuzz" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$target-" "$build/corpus/$target" "$root/tests/fuzz/corpus/$target" \
    >"$log" 2>&1 || { status=1; echo "!! $target found a crash:"; grep -E "ERROR|invariant|Test unit written" "$log" || true; }
  # The last coverage line (execs, cov, ft, corp, exec/s) and the final stats.
  grep -E "^#[0-9]+" "$log" | tail -n 1
  grep -E "^Done |^stat::" "$log" || true
done
exit $status
