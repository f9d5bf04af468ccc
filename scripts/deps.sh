#!/usr/bin/env bash
# Installs the Debian packages the build, the demo and the tests need, only those missing.
set -euo pipefail

packages=(
  cmake g++ make pkg-config binutils        # build; readelf checks the client library's dependencies
  libtorch-dev                              # LibTorch 1.13 (CPU): the daemon runs models with it
  libopenblas0-openmp                       # LibTorch's matrix products: the default libblas.so.3 is the unblocked reference BLAS
  libblas3                                  # that reference BLAS: a test checks the sidecar warns when it is the one in use
  libboost-dev                              # Boost.Interprocess maps the segments and allocates in the cache; Boost.Lockfree for the ring comparison
  libxxhash-dev                             # XXH3-128: the result cache's key
  libspdlog-dev                             # the daemon's logging
  libcli11-dev                              # command-line flags of the daemon and sidecarctl
  libtomlplusplus-dev                       # the daemon's TOML config file (--config), with the line of each key for error messages
  libsystemd-dev                            # sd_notify(READY=1) after warm-up
  libgtest-dev                               # tests
  libgrpc++-dev protobuf-compiler-grpc      # sidecar-bench's gRPC peer (grpc_* rows); the rest builds without them
  python3-torch python3-numpy               # models scripted from Python, as users make them
  python3-prometheus-client                 # the tests read the metrics with Prometheus's own parser
  pybind11-dev python3-dev                  # the Python package inference_sidecar binds the client library with pybind11
  python3-pytest                            # the Python package's tests
  python3-matplotlib                        # bench/plot.py: sidecar-bench --plot draws the rows as PNGs
  systemd                                   # systemd-analyze verify on the unit file
  dpkg-dev file                             # cpack -G DEB: dpkg-shlibdeps finds the packages the binaries need (file spots the binaries)
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}"
fi
