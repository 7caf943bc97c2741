// SPDX-License-Identifier: Apache-2.0
//! @file rmsnorm.cuh
//! RMSNorm on a CUDA device, float32, with the semantics of layers/rmsnorm.hpp: y = x · rsqrt(mean(x²) + eps) · w
//! per row, the per-row rsqrt kept for the backward. The forward can fuse the residual add of a pre-norm block:
//! h = x + residual is written out and normalized, so the sum is read once more from cache instead of memory.
//!
//! One warp per row: lanes stride over the row, the sum of squares and the backward's dot product are warp sums
//! (the same bits in every lane). dweight is deterministic without atomics: each block of 64 rows writes one
//! partial row of Σ dy · x̂, and a second kernel adds the partials to dweight in a fixed order.
//!
//! For a bf16 GEMM that reads y (forward) or dx (backward), the kernel can also write its bf16 rounding from the
//! register that holds the fp32 value, so that no separate pass re-reads the [rows, D] tensor to round it.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>

#include <cuda_runtime.h>

#include <climits>
#include <cstddef>
#include <cstdint>

namespace ssmlen::layers::cuda {

namespace detail {

using ops::cuda::warp_lanes;
inline constexpr int rmsnorm_threads = 256;
inline constexpr std::int64_t rmsnorm_block_rows = 64;  // rows per dweight partial: fixed, so the sum order is too

template <class T>
struct rmsnorm_forward_params {
  std::int64_t rows, dim;
  T eps;
  T const *x, *residual, *weight;  // residual may be null
  T *residual_out, *y, *rstd;      // residual_out is set when residual is; rstd may be null
  bfloat16* y16;                   // y rounded, or null
};

template <class T>
__global__ void __launch_bounds__(rmsnorm_threads) rmsnorm_forward_kernel(rmsnorm_forward_params<T> p) {
  int const lane = static_cast<int>(threadIdx.x) % warp_lanes;
  std::int64_t const warps = std::int64_t{gridDim.x} * (rmsnorm_threads / warp_lanes);
  for (std::int64_t r = (blockIdx.x * std::int64_t{rmsnorm_threads} + threadIdx.x) / warp_lanes; r < p.rows;
       r += warps) {
    T const* xr = p.x + r * p.dim;  // [D]
    T const* src = xr;              // what is normalized: x, or h = x + residual
    T ss = 0;
    if (p.residual != nullptr) {
      T const* rr = p.residual + r * p.dim;
      T* hr = p.residual_out + r * p.dim;
      for (std::int64_t d = lane; d < p.dim; d += warp_lanes) {
        T const h = xr[d] + rr[d];
        hr[d] = h;  // the same lane reads it back below: no barrier needed, and in-place (hr == rr) is safe
        ss += h * h;
      }
      src = hr;
    } else {
      for (std::int64_t d = lane; d < p.dim; d += warp_lanes) {
        ss += xr[d] * xr[d];
      }
    }
    ss = ops::cuda::warp_sum(ss);
    T const s = T(1) / sqrt(ss / static_cast<T>(p.dim) + p.eps);
    T* yr = p.y + r * p.dim;
    for (std::int64_t d = lane; d < p.dim; d += warp_lanes) {
      T const v = src[d] * s * p.weight[d];
      yr[d] = v;
      if (p.y16 != nullptr) {
        p.y16[r * p.dim + d] = bfloat16(static_cast<float>(v));
      }
    }
    if (lane == 0 && p.rstd != nullptr) {
      p.rstd[r] = s;
    }
  }
}

template <class T>
struct rmsnorm_backward_params {
  std::int64_t rows, dim;
  T const *x, *rstd, *weight, *dy;
  T* dx;
  bfloat16* dx16;  // dx rounded (its final value, after any accumulation), or null
  T* partial;      // [ceil(rows / 64), D]
  T* dweight;
  bool accumulate;
};

//! dx (+)= s (dy·w − x̂ · mean(dy·w·x̂)), one warp per row.
template <class T>
__global__ void __launch_bounds__(rmsnorm_threads) rmsnorm_backward_dx_kernel(rmsnorm_backward_params<T> p) {
  int const lane = static_cast<int>(threadIdx.x) % warp_lanes;
  std::int64_t const warps = std::int64_t{gridDim.x} * (rmsnorm_threads / warp_lanes);
  for (std::int64_t r = (blockIdx.x * std::int64_t{rmsnorm_threads} + threadIdx.x) / warp_lanes; r < p.rows;
       r += warps) {
    T const* xr = p.x + r * p.dim;  // [D]
    T const* g = p.dy + r * p.dim;  // [D]
    T const s = p.rstd[r];
    T dot = 0;
    for (std::int64_t d = lane; d < p.dim; d += warp_lanes) {
      dot += g[d] * p.weight[d] * xr[d] * s;
    }
    T const mean_dot = ops::cuda::warp_sum(dot) / static_cast<T>(p.dim);
    T* dxr = p.dx + r * p.dim;
    for (std::int64_t d = lane; d < p.dim; d += warp_lanes) {
      T const v = s * (g[d] * p.weight[d] - xr[d] * s * mean_dot);
      T const out = p.accumulate ? dxr[d] + v : v;
      dxr[d] = out;
      if (p.dx16 != nullptr) {
        p.dx16[r * p.dim + d] = bfloat16(static_cast<float>(out));
      }
    }
  }
}

//! partial[b, d] = Σ over rows of block b (in order) of dy · x̂; blockIdx.x = row block, threads over columns.
template <class T>
__global__ void __launch_bounds__(rmsnorm_threads) rmsnorm_dweight_partial_kernel(rmsnorm_backward_params<T> p) {
  std::int64_t const r0 = blockIdx.x * rmsnorm_block_rows;
  std::int64_t const r1 = r0 + rmsnorm_block_rows < p.rows ? r0 + rmsnorm_block_rows : p.rows;
  for (std::int64_t d = blockIdx.y * std::int64_t{rmsnorm_threads} + threadIdx.x; d < p.dim;
       d += std::int64_t{gridDim.y} * rmsnorm_threads) {
    T acc = 0;
    for (std::int64_t r = r0; r < r1; ++r) {
      acc += p.dy[r * p.dim + d] * (p.x[r * p.dim + d] * p.rstd[r]);
    }
    p.partial[blockIdx.x * p.dim + d] = acc;
  }
}

//! dweight[d] += Σ_b partial[b, d] in a fixed order: warp k of a block sums partials k, k + 8, ... of its 32
//! columns, then the eight sums are added in warp order. (One thread per column walking all the partials ran
//! 256 dependent loads on 3 blocks at 16k rows: 28 µs for a few hundred kilobytes.)
template <class T>
__global__ void __launch_bounds__(rmsnorm_threads)
    rmsnorm_dweight_reduce_kernel(rmsnorm_backward_params<T> p, std::int64_t blocks) {
  constexpr int slices = rmsnorm_threads / warp_lanes;
  __shared__ T sums[slices][warp_lanes];  // [slice, column]
  int const lane = static_cast<int>(threadIdx.x) % warp_lanes, slice = static_cast<int>(threadIdx.x) / warp_lanes;
  std::int64_t const d = blockIdx.x * std::int64_t{warp_lanes} + lane;
  T sum = 0;
  if (d < p.dim) {
    for (std::int64_t b = slice; b < blocks; b += slices) {
      sum += p.partial[b * p.dim + d];
    }
  }
  sums[slice][lane] = sum;
  __syncthreads();
  if (slice == 0 && d < p.dim) {
    T total = 0;
#pragma unroll
    for (int k = 0; k < slices; ++k) {
      total += sums[k][lane];
    }
    p.dweight[d] += total;
  }
}

inline void check_rmsnorm_shape(std::int64_t rows, std::int64_t dim) {
  check_arg(rows >= 0, "rmsnorm rows", rows, "must be non-negative");
  check_arg(dim >= 1, "rmsnorm dim", dim, "must be positive");
}

inline std::int64_t rmsnorm_row_blocks(std::int64_t rows) {
  return (rows + rmsnorm_block_rows - 1) / rmsnorm_block_rows;
}

}  // namespace detail

//! Forward on `be.stream`; device pointers. x: [rows, D], weight: [D] -> y: [rows, D]; rstd: [rows] or null.
//! With `residual` ([rows, D], or null for a plain norm): h = x + residual is written to residual_out ([rows, D],
//! required then; it may be x or residual itself) and y = rmsnorm(h); the backward then takes h as its x.
//! y16 ([rows, D], or null) also receives y rounded to bf16 (nearest even, as backends::round_to_bf16 of y).
inline void rmsnorm_forward(backends::cuda const& be, std::int64_t rows, std::int64_t dim, double eps, float const* x,
                            float const* residual, float* residual_out, float const* weight, float* y, float* rstd,
                            bfloat16* y16 = nullptr) {
  detail::check_rmsnorm_shape(rows, dim);
  check_arg(eps > 0, "rmsnorm eps", eps, "must be positive");
  check(rows == 0 || (x != nullptr && weight != nullptr && y != nullptr),
        "rmsnorm forward (cuda): x, weight and y must be device pointers, not null");
  check(residual == nullptr || residual_out != nullptr,
        "rmsnorm forward (cuda): residual_out must be given with residual (the backward needs x + residual)");
  auto const overwrites = [&](void const* q) { return q != nullptr && (q == x || q == residual || q == y); };
  check(!overwrites(y16) && (y16 == nullptr || static_cast<void const*>(y16) != residual_out),
        "rmsnorm forward (cuda): y16 must not overwrite x, residual, residual_out or y");
  if (rows == 0) {
    return;
  }
  detail::rmsnorm_forward_params<float> const p{
      rows, dim, static_cast<float>(eps), x, residual, weight, residual_out, y, rstd, y16};
  constexpr int rows_per_block = detail::rmsnorm_threads / detail::warp_lanes;
  detail::rmsnorm_forward_kernel<float>
      <<<ops::cuda::grid_blocks(rows, rows_per_block), detail::rmsnorm_threads, 0, be.stream>>>(p);
  backends::cuda_check_launch("rmsnorm_forward_kernel");
}

//! Device workspace bytes the backward needs (pass at least this much, or null to allocate per call).
inline std::size_t rmsnorm_backward_workspace_bytes(std::int64_t rows, std::int64_t dim) {
  return static_cast<std::size_t>(detail::rmsnorm_row_blocks(rows) * dim) * sizeof(float);
}

//! Backward on `be.stream`: dx (+= when `accumulate`) = ∂L/∂x and dweight += Σ_rows dy · x̂, given the forward's x
//! (h when the residual was fused), rstd and dy, all [rows, D] / [rows] / [D] device pointers. dx16 ([rows, D], or
//! null) also receives dx rounded to bf16: the final dx, after the accumulation, as backends::round_to_bf16 of it.
inline void rmsnorm_backward(backends::cuda const& be, std::int64_t rows, std::int64_t dim, float const* x,
                             float const* rstd, float const* weight, float const* dy, float* dx, float* dweight,
                             bool accumulate, void* workspace = nullptr, bfloat16* dx16 = nullptr) {
  detail::check_rmsnorm_shape(rows, dim);
  check(dweight != nullptr, "rmsnorm backward (cuda): dweight must be a device pointer, not null");
  check(rows == 0 || (x != nullptr && rstd != nullptr && weight != nullptr && dy != nullptr && dx != nullptr),
        "rmsnorm backward (cuda): x, rstd, weight, dy and dx must be device pointers, not null");
  check(dx16 == nullptr || (static_cast<void const*>(dx16) != dx && static_cast<void const*>(dx16) != dy &&
                            static_cast<void const*>(dx16) != x),
        "rmsnorm backward (cuda): dx16 must not overwrite x, dy or dx");
  if (rows == 0) {
    return;
  }
  ops::cuda::scratch ws(workspace, rmsnorm_backward_workspace_bytes(rows, dim), be.stream);
  std::int64_t const blocks = detail::rmsnorm_row_blocks(rows);
  check_arg(blocks <= INT_MAX, "rmsnorm rows", rows, "must be at most (2^31 - 1) · 64 (one block per 64 rows)");
  detail::rmsnorm_backward_params<float> const p{rows,    dim,       x, rstd, weight, dy, dx, dx16, ws.at<float>(0),
                                                 dweight, accumulate};
  constexpr int rows_per_block = detail::rmsnorm_threads / detail::warp_lanes;
  detail::rmsnorm_backward_dx_kernel<float>
      <<<ops::cuda::grid_blocks(rows, rows_per_block), detail::rmsnorm_threads, 0, be.stream>>>(p);
  backends::cuda_check_launch("rmsnorm_backward_dx_kernel");
  dim3 const grid(static_cast<unsigned>(blocks), ops::cuda::grid_blocks(dim, detail::rmsnorm_threads, 64));
  detail::rmsnorm_dweight_partial_kernel<float><<<grid, detail::rmsnorm_threads, 0, be.stream>>>(p);
  backends::cuda_check_launch("rmsnorm_dweight_partial_kernel");
  detail::rmsnorm_dweight_reduce_kernel<float>
      <<<static_cast<unsigned>((dim + detail::warp_lanes - 1) / detail::warp_lanes), detail::rmsnorm_threads, 0,
         be.stream>>>(p, blocks);
  backends::cuda_check_launch("rmsnorm_dweight_reduce_kernel");
}

}  // namespace ssmlen::layers::cuda
