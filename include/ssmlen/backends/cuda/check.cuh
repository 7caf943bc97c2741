// SPDX-License-Identifier: Apache-2.0
//! @file check.cuh
//! Turns CUDA runtime failures into ssmlen::error, so a failed allocation, a bad launch or a fault inside a kernel
//! surfaces as an exception that names the call and the place, never as a silently wrong result.
#pragma once

#include <ssmlen/core/error.hpp>

#include <cuda_runtime.h>

#include <string>
#include <string_view>

namespace ssmlen::backends {

//! Throws `error("<what>: <cuda message> (<code>)")` unless `status` is cudaSuccess.
inline void cuda_check(cudaError_t status, std::string_view what) {
  if (status == cudaSuccess) {
    return;
  }
  throw error(std::string(what) + ": " + cudaGetErrorString(status) + " (" + cudaGetErrorName(status) + ")");
}

//! Checks the last launch on this thread (bad configuration, missing kernel image); does not synchronize.
inline void cuda_check_launch(std::string_view kernel) { cuda_check(cudaGetLastError(), kernel); }

//! Whether a usable CUDA device is present (tests and benchmarks skip without one).
inline bool cuda_device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" status
    return false;
  }
  return count > 0;
}

}  // namespace ssmlen::backends

//! Wraps one runtime call: SSMLEN_CUDA_CHECK(cudaMemcpy(...)) throws with the call's text, file and line.
#define SSMLEN_CUDA_CHECK(call)                                                                                        \
  ::ssmlen::backends::cuda_check((call), std::string(#call) + " at " + __FILE__ + ":" + std::to_string(__LINE__))
