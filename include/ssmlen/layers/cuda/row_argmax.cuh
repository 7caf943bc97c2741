// SPDX-License-Identifier: Apache-2.0
//! @file row_argmax.cuh
//! Greedy decoding's last step on a CUDA device: the index of the largest logit of every row, ties to the lowest
//! index, as agent::detail::argmax on the host (for rows without NaN). One warp per row: each lane scans its
//! strided share of the row in increasing index order, then a butterfly keeps (larger value, or equal value and
//! lower index), so every lane ends with the same answer whatever the order of the pairs.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>

#include <cuda_runtime.h>

#include <cstdint>

namespace ssmlen::layers::cuda {

//! The largest value of a row and its lowest index, by one warp: (best, at) come in as the largest so far (the same
//! in every lane: the row's first value and index, or what earlier pieces of it gave, all at lower indices) and go
//! out as that of the row's piece x[0, cols) too, whose first element has index `first`. Each lane scans its strided
//! share in increasing index order, then a butterfly keeps (larger value, or equal value and lower index), so every
//! lane ends with the same answer whatever the order of the pairs.
template <class T>
__device__ inline void warp_argmax(T const* x, std::int64_t cols, std::int64_t first, T& best, std::int64_t& at) {
  using ops::cuda::warp_lanes;
  int const lane = static_cast<int>(threadIdx.x) % warp_lanes;
  for (std::int64_t i = lane; i < cols; i += warp_lanes) {
    if (x[i] > best) {
      best = x[i];
      at = first + i;
    }
  }
#pragma unroll
  for (int m = warp_lanes / 2; m >= 1; m /= 2) {
    T const other = __shfl_xor_sync(0xffffffffu, best, m);
    std::int64_t const other_at = __shfl_xor_sync(0xffffffffu, at, m);
    if (other > best || (other == best && other_at < at)) {
      best = other;
      at = other_at;
    }
  }
}

namespace detail {

inline constexpr int argmax_threads = 256;

template <class T>
__global__ void __launch_bounds__(argmax_threads)
    row_argmax_kernel(std::int64_t rows, std::int64_t cols, T const* x, std::int32_t* index) {
  using ops::cuda::warp_lanes;
  int const lane = static_cast<int>(threadIdx.x) % warp_lanes;
  std::int64_t const warps = std::int64_t{gridDim.x} * (argmax_threads / warp_lanes);
  for (std::int64_t r = (blockIdx.x * std::int64_t{argmax_threads} + threadIdx.x) / warp_lanes; r < rows; r += warps) {
    T const* xr = x + r * cols;  // [V]
    T best = xr[0];
    std::int64_t at = 0;
    warp_argmax(xr, cols, 0, best, at);
    if (lane == 0) {
      index[r] = static_cast<std::int32_t>(at);
    }
  }
}

}  // namespace detail

//! index[r] = argmax over x[r, :] on `be.stream`: x [rows, cols] (dense), index [rows], device pointers.
inline void row_argmax(backends::cuda const& be, std::int64_t rows, std::int64_t cols, float const* x,
                       std::int32_t* index) {
  check_arg(rows >= 0, "argmax rows", rows, "must be non-negative");
  check_arg(cols >= 1 && cols <= INT32_MAX, "argmax columns", cols, "must be in [1, 2^31)");
  check(rows == 0 || (x != nullptr && index != nullptr), "row argmax (cuda): x and index must be device pointers");
  if (rows == 0) {
    return;
  }
  detail::row_argmax_kernel<float><<<ops::cuda::grid_blocks(rows * ops::cuda::warp_lanes, detail::argmax_threads),
                                     detail::argmax_threads, 0, be.stream>>>(rows, cols, x, index);
  backends::cuda_check_launch("row_argmax_kernel");
}

}  // namespace ssmlen::layers::cuda
