#!/usr/bin/env bash
# `cmake --install` into a scratch prefix, then what a user of the installed tree does: builds
# examples/installed with find_package(InferenceSidecar) (shared and static) and infer.c with
# pkg-config, and runs all three against the installed inference-sidecar serving the tiny model.
# Also: the installed headers include nothing outside the installed tree (nor xxHash, Boost or
# CLI11), the installed package and .pc name no path of the build machine, the library has a
# SONAME and exports only the public API, and no configuration lands in etc/.
#
#   install_test.sh SOURCE_DIR BUILD_DIR MODELS_DIR LIBDIR
set -euo pipefail
source_dir=$1 build_dir=$2 models_dir=$3 libdir=$4

# shellcheck source-path=SCRIPTDIR source=tiny_sidecar.sh
source "$(dirname "$0")/tiny_sidecar.sh"

scratch=$(mktemp -d /tmp/sidecar-install-XXXXXX)
cleanup() {
  kill_tiny_sidecar
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

prefix=$scratch/prefix
cmake --install "$build_dir" --prefix "$prefix" >"$scratch/install.log" || { cat "$scratch/install.log"; fail "cmake --install"; }

# What goes where.
for file in bin/inference-sidecar bin/sidecarctl \
    "$libdir/libsidecar-client.so" "$libdir/libsidecar-client.a" \
    include/sidecar/client.hpp include/sidecar/sidecar_client.h include/sidecar/tensor.hpp include/sidecar/export.h \
    "$libdir/cmake/InferenceSidecar/InferenceSidecarConfig.cmake" \
    "$libdir/cmake/InferenceSidecar/InferenceSidecarConfigVersion.cmake" \
    "$libdir/pkgconfig/sidecar-client.pc" \
    lib/systemd/system/inference-sidecar@.service lib/sysusers.d/inference-sidecar.conf; do
  [ -e "$prefix/$file" ] || fail "not installed: $file"
done
[ ! -e "$prefix/etc" ] || fail "the install populated etc/: $(find "$prefix/etc")"
ls "$prefix/share/doc/inference-sidecar/examples/"* >/dev/null 2>&1 || fail "no example configuration installed"
# The installed documents link to one another (and to their pictures) as in the source tree.
/usr/bin/python3 "$source_dir/tests/docs/check_links.py" "$prefix/share/doc/inference-sidecar" ||
  fail "links in the installed documents point nowhere"

# The library: a SONAME, resolved by the installed link, and only the public API exported.
soname=$(readelf -d "$prefix/$libdir/libsidecar-client.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ "$soname" =~ ^libsidecar-client\.so\.[0-9]+$ ]] || fail "SONAME is '$soname'"
[ -e "$prefix/$libdir/$soname" ] || fail "$soname is not installed"
exported=$(nm -D --defined-only "$prefix/$libdir/$soname" | awk '{print $3}' | c++filt)
echo "$exported" | grep -qx 'sidecar_connect' || fail "sidecar_connect is not exported"
echo "$exported" | grep -q '^sidecar::Client::connect(' || fail "sidecar::Client::connect is not exported"
internal=$(echo "$exported" | grep -v -e '^sidecar_' -e '^sidecar::' || true)
[ -z "$internal" ] || fail "exported beyond the public API:"$'\n'"$internal"
internal=$(echo "$exported" | grep -e '^sidecar::detail' -e '^sidecar::Connection' -e '^sidecar::Client::Impl' || true)
[ -z "$internal" ] || fail "internals exported:"$'\n'"$internal"

# Every header the installed ones include is installed too, and none is a private dependency's.
while read -r header; do
  while read -r included; do
    [ -e "$prefix/include/$included" ] || fail "$header includes \"$included\", which is not installed"
  done < <(sed -n 's/^#include "\(.*\)"/\1/p' "$header")
  if grep -nE '^#include <(xxhash|xxh_|boost/|CLI/)' "$header"; then fail "$header includes a private dependency"; fi
done < <(find "$prefix/include" -type f)

# The package and the .pc work from wherever the tree is installed: no path of this machine in them.
for file in "$prefix/$libdir/cmake/InferenceSidecar/"*.cmake "$prefix/$libdir/pkgconfig/sidecar-client.pc"; do
  if grep -nF -e "$source_dir" -e "$build_dir" -e "/usr/include" "$file"; then fail "$file names a build path"; fi
  if grep -v '^ *#' "$file" | grep -iE 'boost|cli11|xxhash\.h'; then fail "$file requires a private dependency"; fi
done

# A CMake project outside the tree: find_package(InferenceSidecar) from the prefix, both targets.
cmake -S "$source_dir/examples/installed" -B "$scratch/cpp" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_CXX_FLAGS="${SIDECAR_CONSUMER_CXXFLAGS:-}" \
  -DCMAKE_EXE_LINKER_FLAGS="${SIDECAR_CONSUMER_LDFLAGS:-}" >"$scratch/cpp.log" 2>&1 || { cat "$scratch/cpp.log"; fail "configuring examples/installed"; }
found=$(sed -n 's/^InferenceSidecar_DIR:PATH=//p' "$scratch/cpp/CMakeCache.txt")
[ "$found" = "$prefix/$libdir/cmake/InferenceSidecar" ] || fail "find_package found '$found'"
cmake --build "$scratch/cpp" >>"$scratch/cpp.log" 2>&1 || { cat "$scratch/cpp.log"; fail "building examples/installed"; }
ldd "$scratch/cpp/infer_cpp" | grep -q "$soname" || fail "infer_cpp (sidecar::client) does not link $soname"
if ldd "$scratch/cpp/infer_cpp_static" | grep -q libsidecar-client; then fail "sidecar::client_static links the shared library"; fi

# The C program with pkg-config, from the prefix's .pc only.
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
cflags=$(pkg-config --cflags sidecar-client) || fail "pkg-config --cflags"
libs=$(pkg-config --libs sidecar-client) || fail "pkg-config --libs"
# shellcheck disable=SC2086
cc -std=c99 -Wall -Wextra -Werror ${SIDECAR_CONSUMER_CFLAGS:-} $cflags "$source_dir/examples/installed/infer.c" $libs \
  ${SIDECAR_CONSUMER_LDFLAGS:-} -o "$scratch/infer_c" \
  || fail "cc infer.c with pkg-config's flags: $cflags $libs"

# The installed daemon, and the three programs built above as its clients.
export LD_LIBRARY_PATH=$prefix/$libdir
start_tiny_sidecar "$prefix/bin/inference-sidecar" "$prefix/bin/sidecarctl" "$models_dir" "$scratch" "install-test-$$"
outputs=()
for program in "$scratch/cpp/infer_cpp" "$scratch/cpp/infer_cpp_static" "$scratch/infer_c"; do
  output=$("$program" "install-test-$$") || { cat "$scratch/sidecar.log"; fail "$program"; }
  echo "$(basename "$program"): $output"
  check_inference_output "$program" "$output"
  outputs+=("$output")
done
if [ "${outputs[0]}" != "${outputs[1]}" ] || [ "${outputs[0]}" != "${outputs[2]}" ]; then fail "the three programs disagree"; fi
# The Python package, when it was built: from the installed tree only, exporting only its entry point.
if [ -d "$build_dir/python/inference_sidecar" ]; then
  package=$(find "$prefix" -path '*/inference_sidecar/__init__.py' -printf '%h\n')
  [ "$(echo "$package" | wc -l)" = 1 ] && [ -n "$package" ] || fail "the Python package is installed as '$package'"
  exported=$(nm -D --defined-only "$package"/_native*.so | awk '{print $3}')
  [ "$exported" = PyInit__native ] || fail "the Python extension exports more than PyInit__native:"$'\n'"$exported"
  output=$(cd "$scratch" && PYTHONPATH=$(dirname "$package") PYTHONNOUSERSITE=1 /usr/bin/python3 -c \
    'import sys, runpy, inference_sidecar; assert inference_sidecar.__file__.startswith(sys.argv[1]), inference_sidecar.__file__
sys.argv = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name="__main__")' \
    "$prefix" "$source_dir/examples/installed/infer.py" "install-test-$$") || { cat "$scratch/sidecar.log"; fail "infer.py"; }
  echo "infer.py: $output"
  [ "$output" = "${outputs[0]}" ] || fail "infer.py printed '$output', infer_c '${outputs[0]}'"
fi
stop_tiny_sidecar || fail "the sidecar exited with $? on SIGTERM"
echo "PASS"
