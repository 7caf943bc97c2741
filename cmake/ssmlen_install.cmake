# Installs the headers and the CMake package ssmlen (find_package(ssmlen) -> ssmlen::ssmlen [+ ssmlen::cuda]).
# Headers and package files form the component ssmlen_development; programs form ssmlen_runtime.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SSMLEN_INSTALL_CMAKEDIR ${CMAKE_INSTALL_DATADIR}/cmake/ssmlen)  # header-only: architecture-independent
set(_ssmlen_targets ssmlen)
if(TARGET ssmlen_cuda)
  list(APPEND _ssmlen_targets ssmlen_cuda)
endif()
install(TARGETS ${_ssmlen_targets} EXPORT ssmlen-targets
  FILE_SET HEADERS COMPONENT ssmlen_development
  FILE_SET cuda_headers COMPONENT ssmlen_development)
install(EXPORT ssmlen-targets NAMESPACE ssmlen:: DESTINATION ${SSMLEN_INSTALL_CMAKEDIR} COMPONENT ssmlen_development)

# Read by ssmlen-config.cmake.in: which optional dependencies this build used.
set(SSMLEN_PACKAGE_WITH_CBLAS ${OpenBLAS_FOUND})
set(SSMLEN_PACKAGE_WITH_CUDA ${SSMLEN_ENABLE_CUDA})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/ssmlen-config.cmake.in
  ${PROJECT_BINARY_DIR}/ssmlen-config.cmake INSTALL_DESTINATION ${SSMLEN_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/ssmlen-config-version.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)  # 0.x: a minor version may break the API
install(FILES ${PROJECT_BINARY_DIR}/ssmlen-config.cmake ${PROJECT_BINARY_DIR}/ssmlen-config-version.cmake
  DESTINATION ${SSMLEN_INSTALL_CMAKEDIR} COMPONENT ssmlen_development)
