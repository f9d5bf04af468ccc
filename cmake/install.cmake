# What `cmake --install` puts in place, by component; cmake/packaging.cmake makes one .deb of each:
#   daemon       inference-sidecar, its systemd unit, its sysusers.d file, example configuration
#   library      libsidecar-client.so.N, all a program linked against it needs at run time
#   development  headers, the .so link, the static library, the CMake package, sidecar-client.pc
#   tools        sidecarctl
#   python       the Python package inference_sidecar, when built (its rules: clientlib/python)
# Relative destinations are under the prefix, so `cmake --install BUILD --prefix DIR` keeps
# everything inside DIR.
include(CMakePackageConfigHelpers)

set(SIDECAR_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING
  "Where the systemd unit goes: relative to the install prefix, or absolute")
set(SIDECAR_SYSUSERS_DIR "lib/sysusers.d" CACHE STRING
  "Where the sysusers.d file goes: relative to the install prefix, or absolute")
set(SIDECAR_CMAKE_PACKAGE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/InferenceSidecar")
set(SIDECAR_DOC_DIR "${CMAKE_INSTALL_DATAROOTDIR}/doc/inference-sidecar")

# The client library.
install(TARGETS sidecar_client EXPORT InferenceSidecarTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT library NAMELINK_COMPONENT development)
install(TARGETS sidecar_client_static EXPORT InferenceSidecarTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development)
# The public headers and the two of shared/ they include; tests/install checks that nothing they
# include is missing from the installed tree.
install(FILES
    clientlib/include/sidecar/client.hpp
    clientlib/include/sidecar/export.h
    clientlib/include/sidecar/sidecar_client.h
    clientlib/include/sidecar/tensor.hpp
    clientlib/include/sidecar/torch_adapter.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sidecar COMPONENT development)
install(FILES
    shared/include/sidecar/shared/dtype.hpp
    shared/include/sidecar/shared/error.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sidecar/shared COMPONENT development)

# find_package(InferenceSidecar): sidecar::client and sidecar::client_static.
install(EXPORT InferenceSidecarTargets NAMESPACE sidecar:: DESTINATION ${SIDECAR_CMAKE_PACKAGE_DIR}
  COMPONENT development)
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/InferenceSidecarConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/InferenceSidecarConfig.cmake INSTALL_DESTINATION ${SIDECAR_CMAKE_PACKAGE_DIR})
# The SONAME is the major version, so a package of the same major version is a compatible one.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/InferenceSidecarConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/InferenceSidecarConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/InferenceSidecarConfigVersion.cmake
  DESTINATION ${SIDECAR_CMAKE_PACKAGE_DIR} COMPONENT development)

# pkg-config: the prefix is found from the .pc file's own place, because the prefix given at
# install time (--prefix, a package's staging root) need not be the one configured.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(SIDECAR_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH SIDECAR_PC_PREFIX "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
  string(REGEX REPLACE "/$" "" SIDECAR_PC_PREFIX "${SIDECAR_PC_PREFIX}")
  set(SIDECAR_PC_PREFIX "\${pcfiledir}/${SIDECAR_PC_PREFIX}")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/sidecar-client.pc.in ${CMAKE_CURRENT_BINARY_DIR}/sidecar-client.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/sidecar-client.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
  COMPONENT development)

install(TARGETS sidecarctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT tools)

if(SIDECAR_BUILD_SIDECAR)
  # The unit runs /usr/bin/inference-sidecar: a prefix other than /usr needs a drop-in with its own
  # ExecStart (docs/install.md).
  install(TARGETS inference-sidecar RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT daemon)
  install(FILES systemd/inference-sidecar@.service DESTINATION ${SIDECAR_SYSTEMD_UNIT_DIR} COMPONENT daemon)
  install(FILES systemd/inference-sidecar.sysusers.conf DESTINATION ${SIDECAR_SYSUSERS_DIR}
    RENAME inference-sidecar.conf COMPONENT daemon)
  # Examples only, never /etc/inference-sidecar/: an instance's configuration names its model,
  # which only the administrator knows. OPTIONAL: the example configuration may be the .env file,
  # the .toml file, or both, depending on the unit it goes with.
  install(FILES systemd/example.toml systemd/example.env DESTINATION ${SIDECAR_DOC_DIR}/examples
    COMPONENT daemon OPTIONAL)
  # The README and every document, laid out as in the source tree so that their links to one
  # another (and to the pictures) resolve where they are installed.
  install(FILES README.md DESTINATION ${SIDECAR_DOC_DIR} COMPONENT daemon)
  install(DIRECTORY docs/ DESTINATION ${SIDECAR_DOC_DIR}/docs COMPONENT daemon
    FILES_MATCHING PATTERN "*.md" PATTERN "*.png")
endif()
