#!/usr/bin/env bash
# Fresh machine to passing tests: installs what is missing, builds from scratch, runs ctest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${SIDECAR_TEST_BUILD_DIR:-$root/build/test}

"$root/scripts/deps.sh"
rm -rf "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j "$(nproc)"
# Serial: the integration tests start sidecars that spin, and this machine has two cores.
ctest --test-dir "$build" --output-on-failure --timeout 600 "$@"
