# The CUDA side of ssmlen: the INTERFACE target ssmlen::cuda for .cu translation units, an umbrella target
# ssmlen_cuda_targets that builds every CUDA program (CI builds it without running anything), and one generated
# .cu per .cuh header so each CUDA header is checked to compile on its own.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)  # H200; nvcc 13 would default to sm_75
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

add_library(ssmlen_cuda INTERFACE)
add_library(ssmlen::cuda ALIAS ssmlen_cuda)
set_target_properties(ssmlen_cuda PROPERTIES EXPORT_NAME cuda)
target_link_libraries(ssmlen_cuda INTERFACE ssmlen::ssmlen CUDA::cudart CUDA::cublas CUDA::cublasLt)
# -std=c++20 by hand: CMake 3.25 cannot request C++20 from nvcc 13 through compile features. OpenMP's own flags
# are CXX-only, so the host compiler gets -fopenmp here.
target_compile_options(ssmlen_cuda INTERFACE
  "$<$<COMPILE_LANGUAGE:CUDA>:-std=c++20;--extended-lambda;--expt-relaxed-constexpr;-Xcompiler=-fopenmp>")

add_custom_target(ssmlen_cuda_targets)

if(SSMLEN_BUILD_TESTS AND SSMLEN_CUDA_HEADERS)
  set(_header_check_sources)
  foreach(header ${SSMLEN_CUDA_HEADERS})
    file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR}/include ${header})
    set(check ${PROJECT_BINARY_DIR}/cuda_header_checks/${rel}.cu)
    # Included twice: the second inclusion checks the include guard.
    file(CONFIGURE OUTPUT ${check} CONTENT "#include <${rel}>\n#include <${rel}>\n" @ONLY)
    list(APPEND _header_check_sources ${check})
  endforeach()
  add_library(ssmlen_verify_cuda_headers OBJECT EXCLUDE_FROM_ALL ${_header_check_sources})
  target_link_libraries(ssmlen_verify_cuda_headers PRIVATE ssmlen::cuda ssmlen_project_options)
  add_dependencies(ssmlen_cuda_targets ssmlen_verify_cuda_headers)
endif()
