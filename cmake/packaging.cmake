# Debian packages, one per install component (cmake/install.cmake): `cpack -G DEB` in the build
# directory. Their dependencies on shared libraries come from dpkg-shlibdeps, so the daemon depends
# on whichever LibTorch package provided the library it was linked against.
set(SIDECAR_PACKAGE_CONTACT "inference-sidecar maintainers <maintainers@users.noreply.r-seed-5074e543.example>"
  CACHE STRING "Maintainer field of the .deb packages")

set(CPACK_PACKAGE_NAME inference-sidecar)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${SIDECAR_PACKAGE_CONTACT}")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# RelWithDebInfo binaries carry their debug information otherwise.
set(CPACK_STRIP_FILES ON)

# Each package's Description: the first line of its component's description is the summary.
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL library development tools)
if(SIDECAR_BUILD_SIDECAR)
  list(APPEND CPACK_COMPONENTS_ALL daemon)
endif()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# sidecarctl links libsidecar-client.so.N, which no installed package provides while building.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS_PRIVATE_DIRS ${PROJECT_BINARY_DIR}/clientlib)
# A shlibs file in libsidecar-client0, so that packages built against it depend on it.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")
# Depends: on the package of each component a component depends on, at the same version.
set(CPACK_DEBIAN_ENABLE_COMPONENT_DEPENDS ON)

set(CPACK_DEBIAN_LIBRARY_PACKAGE_NAME libsidecar-client${PROJECT_VERSION_MAJOR})
set(CPACK_DEBIAN_LIBRARY_PACKAGE_SECTION libs)
set(CPACK_COMPONENT_LIBRARY_DESCRIPTION "client library of inference-sidecar
What a program links to run a model served by inference-sidecar on the same host: it connects
over a Unix socket and exchanges tensors through shared memory. C++ and C APIs. No LibTorch.")

set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_NAME libsidecar-client-dev)
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_SECTION libdevel)
set(CPACK_COMPONENT_DEVELOPMENT_DEPENDS library)
# Only for the static library (sidecar::client_static, pkg-config --static), which links xxHash.
set(CPACK_DEBIAN_DEVELOPMENT_PACKAGE_DEPENDS "libxxhash-dev")
set(CPACK_COMPONENT_DEVELOPMENT_DESCRIPTION "client library of inference-sidecar (development files)
Headers, the static library, the CMake package InferenceSidecar (sidecar::client,
sidecar::client_static) and the pkg-config file sidecar-client.pc.")

# Its own package: the library package holds nothing but the library (so that two SONAMEs can be
# installed side by side), and a client host or container that reaches a sidecar's socket needs
# sidecarctl without the daemon and LibTorch.
set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME sidecarctl)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION utils)
set(CPACK_COMPONENT_TOOLS_DEPENDS library)
set(CPACK_COMPONENT_TOOLS_DESCRIPTION "command-line client of inference-sidecar
sidecarctl: a sidecar's status, health and metrics, a model reload, a model run on .npy files,
the result cache's statistics.")

# The Python package (clientlib/python), when built: the extension links the client library
# statically, so it needs no libsidecar-client package, but it is built for one Python version.
if(TARGET sidecar_python)
  list(APPEND CPACK_COMPONENTS_ALL python)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_NAME python3-inference-sidecar)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_SECTION python)
  set(CPACK_DEBIAN_PYTHON_PACKAGE_DEPENDS "${SIDECAR_PYTHON_DEPENDS}, python3-numpy")
  set(CPACK_COMPONENT_PYTHON_DESCRIPTION "Python client of inference-sidecar
The module inference_sidecar: runs a model served by inference-sidecar on the same host from
Python, NumPy arrays (and torch tensors) in and out through shared memory.")
endif()

set(CPACK_DEBIAN_DAEMON_PACKAGE_NAME inference-sidecar)
set(CPACK_DEBIAN_DAEMON_PACKAGE_SECTION misc)
# OpenBLAS: without it LibTorch's matrix products run on the reference BLAS (README, Dependencies).
set(CPACK_DEBIAN_DAEMON_PACKAGE_RECOMMENDS "libopenblas0-openmp")
# The unit's ExecReload= is `sidecarctl reload`, which waits for the outcome and fails the reload
# with the reason when the new model does not load.
set(CPACK_COMPONENT_DAEMON_DEPENDS tools)
set(CPACK_DEBIAN_DAEMON_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/packaging/deb/inference-sidecar/postinst
  ${PROJECT_SOURCE_DIR}/packaging/deb/inference-sidecar/postrm)
set(CPACK_DEBIAN_DAEMON_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_COMPONENT_DAEMON_DESCRIPTION "serves a TorchScript model to the processes of one host
A long-lived process per model that loads, freezes and warms up a TorchScript model with
LibTorch, then serves it to client processes through shared memory. Ships the systemd unit
inference-sidecar@.service and its user; enables nothing by itself.")

include(CPack)
