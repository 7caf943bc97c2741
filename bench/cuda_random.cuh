// SPDX-License-Identifier: Apache-2.0
// Shared by the CUDA benchmarks: device buffers of uniform random values, one ssmlen::rng stream per element (the
// values do not depend on the launch's shape).
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/core/rng.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

template <class T>
__global__ void fill_uniform_kernel(T* p, std::int64_t n, std::uint64_t seed, float lo, float hi) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    ssmlen::rng g(seed, static_cast<std::uint64_t>(i));
    p[i] = T(lo + (hi - lo) * g.uniform());
  }
}

//! n values uniform in [lo, hi), as T (float or ssmlen::bfloat16), on the default stream.
template <class T = float>
ssmlen::backends::device_buffer<T> random_buffer(std::int64_t n, std::uint64_t seed, float lo, float hi) {
  ssmlen::backends::device_buffer<T> b(static_cast<std::size_t>(n));
  fill_uniform_kernel<T><<<1024, 256>>>(b.data(), n, seed, lo, hi);
  ssmlen::backends::cuda_check_launch("fill_uniform_kernel");
  return b;
}
