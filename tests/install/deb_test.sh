#!/usr/bin/env bash
# The .deb packages: builds them with CPack from the build directory, checks each one's metadata
# (names, Depends with the LibTorch package the daemon was linked against, Recommends OpenBLAS) and
# contents (what each must hold, and nothing that belongs to another), runs the daemon package's
# postinst against the unpacked tree (it must create the service user there), builds infer.c
# against the unpacked tree with pkg-config, and runs it against the packaged daemon.
# Leaves the unpacked tree in OUT_DIR/root for the installed-unit test.
#
#   deb_test.sh SOURCE_DIR BUILD_DIR MODELS_DIR OUT_DIR
set -euo pipefail
source_dir=$1 build_dir=$2 models_dir=$3 out=$4
# shellcheck source-path=SCRIPTDIR source=tiny_sidecar.sh
source "$(dirname "$0")/tiny_sidecar.sh"
trap kill_tiny_sidecar EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"
cpack --config "$build_dir/CPackConfig.cmake" -G DEB -B "$out" >"$out/cpack.log" 2>&1 || { cat "$out/cpack.log"; fail "cpack"; }

packages=(inference-sidecar libsidecar-client0 libsidecar-client-dev sidecarctl)
# The Python package, when it was built (pybind11-dev and python3-dev installed).
python_built=$([ -d "$build_dir/python/inference_sidecar" ] && echo 1 || true)
[ -z "$python_built" ] || packages+=(python3-inference-sidecar)
declare -A package_file
for package in "${packages[@]}"; do
  files=("$out/${package}_"*.deb)
  if [ "${#files[@]}" -ne 1 ] || [ ! -f "${files[0]}" ]; then fail "no single .deb for $package: ${files[*]}"; fi
  package_file[$package]=${files[0]}
  [ "$(dpkg-deb -f "${files[0]}" Package)" = "$package" ] || fail "${files[0]} is not the package $package"
done
version=$(dpkg-deb -f "${package_file[libsidecar-client0]}" Version)

# The daemon depends on the package that holds the LibTorch it was linked against.
torch_library=$(ldd "$build_dir/sidecar/inference-sidecar" | awk '/libtorch_cpu\.so/ {print $3}')
[ -n "$torch_library" ] || fail "the built daemon links no libtorch_cpu"
torch_package=$(dpkg -S "$(readlink -f "$torch_library")" | cut -d: -f1)
[ -n "$torch_package" ] || fail "no package holds $torch_library"
depends_on() {  # depends_on PACKAGE FIELD DEPENDENCY
  dpkg-deb -f "${package_file[$1]}" "$2" | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -qx "$3"
}
depends_on inference-sidecar Depends "$torch_package" || fail "inference-sidecar does not depend on $torch_package"
depends_on inference-sidecar Recommends libopenblas0-openmp || fail "inference-sidecar does not recommend libopenblas0-openmp"
for package in libsidecar-client0 libsidecar-client-dev sidecarctl; do
  ! dpkg-deb -f "${package_file[$package]}" Depends | grep -q torch || fail "$package depends on LibTorch"
done
dpkg-deb -f "${package_file[libsidecar-client-dev]}" Depends | grep -qF "libsidecar-client0 (= $version)" \
  || fail "libsidecar-client-dev does not depend on libsidecar-client0 (= $version)"
depends_on sidecarctl Depends libsidecar-client0 || fail "sidecarctl does not depend on libsidecar-client0"
# The unit reloads through sidecarctl.
depends_on inference-sidecar Depends sidecarctl || fail "inference-sidecar does not depend on sidecarctl"

if [ -n "$python_built" ]; then
  # The extension links the client library statically: NumPy and this Python version, no libsidecar-client.
  for dependency in python3-numpy python3 libxxhash0; do
    depends_on python3-inference-sidecar Depends "$dependency" || fail "python3-inference-sidecar does not depend on $dependency"
  done
  ! depends_on python3-inference-sidecar Depends libsidecar-client0 || fail "python3-inference-sidecar depends on libsidecar-client0"
fi

# Each package holds its own files and none of another's (directories aside); none writes to /etc.
declare -A allowed=(
  [inference-sidecar]='^\./usr/(bin/inference-sidecar|lib/systemd/system/inference-sidecar@\.service|lib/sysusers\.d/inference-sidecar\.conf|share/doc/inference-sidecar/.+)$'
  [libsidecar-client0]='^\./usr/lib/([^/]+/)?libsidecar-client\.so\.[0-9][0-9.]*$'
  [libsidecar-client-dev]='^\./usr/(include/sidecar/.+|lib/([^/]+/)?(libsidecar-client\.(so|a)|cmake/InferenceSidecar/.+|pkgconfig/sidecar-client\.pc))$'
  [sidecarctl]='^\./usr/bin/sidecarctl$'
  [python3-inference-sidecar]='^\./usr/lib/python3/dist-packages/inference_sidecar/(__init__\.py|_native\.cpython-[^/]+\.so)$'
)
declare -A required=(
  [inference-sidecar]='bin/inference-sidecar lib/systemd/system/inference-sidecar@.service lib/sysusers.d/inference-sidecar.conf share/doc/inference-sidecar/examples/'
  [libsidecar-client0]='libsidecar-client.so.0'
  [libsidecar-client-dev]='include/sidecar/client.hpp include/sidecar/sidecar_client.h include/sidecar/shared/error.hpp libsidecar-client.so libsidecar-client.a InferenceSidecarConfig.cmake InferenceSidecarConfigVersion.cmake pkgconfig/sidecar-client.pc'
  [sidecarctl]='bin/sidecarctl'
  [python3-inference-sidecar]='dist-packages/inference_sidecar/__init__.py dist-packages/inference_sidecar/_native.cpython-'
)
for package in "${packages[@]}"; do
  contents=$(dpkg-deb -c "${package_file[$package]}" | awk '$1 !~ /^d/ {print $6}')
  stray=$(echo "$contents" | grep -vE "${allowed[$package]}" || true)
  [ -z "$stray" ] || fail "$package holds files that are not its own:"$'\n'"$stray"
  for file in ${required[$package]}; do
    echo "$contents" | grep -qF "$file" || fail "$package lacks $file"
  done
done
dpkg-deb --ctrl-tarfile "${package_file[libsidecar-client0]}" | tar -xO ./shlibs | grep -q '^libsidecar-client 0 libsidecar-client0' \
  || fail "libsidecar-client0 has no shlibs entry for libsidecar-client.so.0"

# Unpacked, as dpkg would lay them out; the postinst creates the user and group in that root.
root=$out/root
mkdir -p "$root/etc"
for deb in "${package_file[@]}"; do dpkg-deb -x "$deb" "$root"; done
dpkg-deb --ctrl-tarfile "${package_file[inference-sidecar]}" | tar -xO ./postinst >"$out/postinst"
if command -v systemd-sysusers >/dev/null; then
  DPKG_ROOT=$root sh -e "$out/postinst" configure || fail "postinst configure"
  grep -q '^inference-sidecar:' "$root/etc/passwd" || fail "postinst created no user inference-sidecar"
  grep -q '^inference-sidecar:' "$root/etc/group" || fail "postinst created no group inference-sidecar"
else
  echo "systemd-sysusers is not installed: postinst not run"
fi

# A program built against the unpacked -dev package, run against the packaged daemon.
libdir=$(dirname "$(find "$root/usr/lib" -name 'libsidecar-client.so.0')")
export PKG_CONFIG_PATH=$libdir/pkgconfig
# shellcheck disable=SC2046,SC2086  # the flags are meant to be split into words
cc -std=c99 -Wall -Wextra -Werror ${SIDECAR_CONSUMER_CFLAGS:-} $(pkg-config --cflags sidecar-client) \
  "$source_dir/examples/installed/infer.c" $(pkg-config --libs sidecar-client) ${SIDECAR_CONSUMER_LDFLAGS:-} \
  -o "$out/infer_c" || fail "cc infer.c against the unpacked packages"
export LD_LIBRARY_PATH=$libdir
start_tiny_sidecar "$root/usr/bin/inference-sidecar" "$root/usr/bin/sidecarctl" "$models_dir" "$out" "deb-test-$$"
output=$("$out/infer_c" "deb-test-$$") || { cat "$out/sidecar.log"; fail "infer_c"; }
echo "infer_c: $output"
check_inference_output infer_c "$output"
if [ -n "$python_built" ]; then
  python_output=$(cd "$out" && PYTHONPATH=$root/usr/lib/python3/dist-packages PYTHONNOUSERSITE=1 \
    /usr/bin/python3 "$source_dir/examples/installed/infer.py" "deb-test-$$") || { cat "$out/sidecar.log"; fail "infer.py"; }
  echo "infer.py: $python_output"
  [ "$python_output" = "$output" ] || fail "infer.py printed '$python_output', infer_c '$output'"
fi
stop_tiny_sidecar || fail "the packaged sidecar exited with $? on SIGTERM"
echo "PASS"
