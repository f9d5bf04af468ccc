#!/usr/bin/env bash
# The systemd unit as the package installs it, in the tree deb_test.sh unpacked: systemd-analyze
# verify loads it from ROOT/usr/lib/systemd/system and checks that its ExecStart binary exists
# under ROOT, so the unit and the package must agree on where the daemon is. Then
# systemd-analyze security rates its hardening: the test fails when the exposure rises above 1.0
# (docs/install.md has the score).
#
#   installed_unit_test.sh ROOT
set -euo pipefail
root=$1
fail() { echo "FAIL: $*" >&2; exit 1; }
# 77: ctest's SKIP_RETURN_CODE.
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is not installed (package systemd)"; exit 77; }
[ -f "$root/usr/lib/systemd/system/inference-sidecar@.service" ] || fail "no unit in $root"

# No systemd runs as PID 1 here: --man=no and --generators=no keep verify to loading unit files;
# --recursive-errors=no keeps failures of the units ours pulls in (tmp.mount, ...) out of it.
verify=(systemd-analyze verify --man=no --generators=no --root="$root")
if systemd-analyze --help | grep -q -- --recursive-errors; then verify+=(--recursive-errors=no); fi
output=$("${verify[@]}" inference-sidecar@test.service 2>&1) || fail "${verify[*]} inference-sidecar@test.service:"$'\n'"$output"
# verify warns and still exits 0 for an unknown key or a value it cannot parse.
complaints=$(echo "$output" | grep 'inference-sidecar@' | grep -E 'Unknown|Invalid|Failed to parse|ignoring' || true)
[ -z "$complaints" ] || fail "systemd-analyze verify complains:"$'\n'"$complaints"

security=(systemd-analyze security --offline=yes --root="$root" --threshold=10)
output=$("${security[@]}" inference-sidecar@test.service 2>&1) || {
  echo "$output"
  fail "the unit's exposure is above 1.0"
}
echo "$output" | grep 'Overall exposure level'
echo "PASS"
