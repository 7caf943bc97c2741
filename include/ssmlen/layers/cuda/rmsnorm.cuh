// SPDX-License-Identifier: Apache-2.0
//! @file rmsnorm.cuh
//! RMSNorm on a CUDA device, float32, with the semantics of layers/rmsnorm.hpp: y = x · rsqrt(mean(x²) + eps) · w
//! per row, the per-row rsqrt kept for the backward. The forward can fuse the residual add of a pre-norm block:
//! h = x + residual is written out and normalized from the registers that hold it.
//!
//! One warp per row: lane l holds the row's groups of V columns starting at (k · 32 + l) · V, so that each k is one
//! coalesced warp access; V = 4 moves 16-byte vectors (D a multiple of 4 and every pointer aligned; V = 1 otherwise).
//! A row of up to 1024 columns stays in registers (32 floats a lane) from its loads to the output, read once from
//! memory; a longer one is walked in windows of 1024 columns, re-read for the output. Within a window every load is
//! issued before the first store, so that the loads overlap: outputs may alias inputs (in place), and the compiler
//! may not move a load above a store. The sum of squares and the backward's dot product are summed per lane in a
//! fixed order (window, group, element), then as warp sums (the same bits in every lane and every run). dweight is
//! deterministic without atomics: each block of 64 rows writes one partial row of Σ dy · x̂, and a second kernel adds
//! the partials to dweight in a fixed order.
//!
//! For a bf16 GEMM that reads y (forward) or dx (backward), the kernel can also write its bf16 rounding from the
//! registers that hold the fp32 values, so that no separate pass re-reads the [rows, D] tensor to round it. The
//! forward may write the rounding alone (y null) when no one reads y in fp32.
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

using ops::cuda::aligned16;
using ops::cuda::aligned8;
using ops::cuda::float_vec;  // V consecutive columns of one row
using ops::cuda::load_floats;
using ops::cuda::store_floats;
using ops::cuda::store_rounded;
using ops::cuda::warp_lanes;
inline constexpr int rmsnorm_threads = 256;
inline constexpr std::int64_t rmsnorm_block_rows = 64;  // rows per dweight partial: fixed, so the sum order is too

//! Floats of a row that a lane holds in registers at once, and the columns the warp holds: the window.
inline constexpr int rmsnorm_lane_floats = 32;
inline constexpr std::int64_t rmsnorm_window = std::int64_t{rmsnorm_lane_floats} * warp_lanes;

//! Groups of V columns a lane holds of one window.
template <int V>
inline constexpr int rmsnorm_groups = rmsnorm_lane_floats / V;

//! f(k, c) for this lane's groups inside the row, of the window that starts at column w0: group k holds columns
//! [c, c + V), c = w0 + (k · 32 + lane) · V. Unrolled, so that arrays indexed by k stay in registers; comparing k
//! with a count of groups, rather than each c with dim, leaves the addresses fixed offsets from one base (the
//! backward took 146 registers instead of 100).
template <int V, class F>
__device__ inline void for_each_window_group(std::int64_t w0, std::int64_t dim, int lane, F const& f) {
  constexpr std::int64_t stride = std::int64_t{warp_lanes} * V;  // columns from one group to the next
  std::int64_t const first = w0 + std::int64_t{lane} * V;
  int const inside =
      first < dim ? static_cast<int>(min((dim - first + stride - 1) / stride, std::int64_t{rmsnorm_groups<V>})) : 0;
#pragma unroll
  for (int k = 0; k < rmsnorm_groups<V>; ++k) {
    if (k < inside) {
      f(k, first + k * stride);
    }
  }
}

template <class T>
struct rmsnorm_forward_params {
  std::int64_t rows, dim;
  T eps;
  T const *x, *residual, *weight;  // residual may be null
  T *residual_out, *y, *rstd;      // residual_out is set when residual is; y and rstd may be null
  bfloat16* y16;                   // y rounded, or null (not both y and y16)
};

//! y = h · s · w with h = x (+ residual), s = rsqrt(mean(h²) + eps), one warp per row, V columns per access.
template <int V>
__global__ void __launch_bounds__(rmsnorm_threads) rmsnorm_forward_kernel(rmsnorm_forward_params<float> p) {
  constexpr int groups = rmsnorm_groups<V>;
  int const lane = static_cast<int>(threadIdx.x) % warp_lanes;
  std::int64_t const warps = std::int64_t{gridDim.x} * (rmsnorm_threads / warp_lanes);
  bool const row_held = p.dim <= rmsnorm_window;  // else the output pass re-reads each window
  auto const each = [&](std::int64_t w0, auto const& f) { for_each_window_group<V>(w0, p.dim, lane, f); };
  for (std::int64_t r = (blockIdx.x * std::int64_t{rmsnorm_threads} + threadIdx.x) / warp_lanes; r < p.rows;
       r += warps) {
    std::int64_t const at = r * p.dim;  // the row's first element
    float_vec<V> h[groups] = {};        // this lane's groups of the window: x, or x + residual, then y
    float ss = 0;
    for (std::int64_t w0 = 0; w0 < p.dim; w0 += rmsnorm_window) {
      each(w0, [&](int k, std::int64_t c) { h[k] = load_floats<V>(p.x + at + c); });
      if (p.residual != nullptr) {
        float_vec<V> res[groups] = {};
        each(w0, [&](int k, std::int64_t c) { res[k] = load_floats<V>(p.residual + at + c); });
        each(w0, [&](int k, std::int64_t c) {
#pragma unroll
          for (int j = 0; j < V; ++j) {
            h[k].v[j] += res[k].v[j];
          }
          store_floats<V>(p.residual_out + at + c, h[k]);  // in place (residual_out == x or residual) is safe
        });
      }
      each(w0, [&](int k, std::int64_t) {
#pragma unroll
        for (int j = 0; j < V; ++j) {
          ss += h[k].v[j] * h[k].v[j];
        }
      });
    }
    float const s = 1.0f / sqrtf(ops::cuda::warp_sum(ss) / static_cast<float>(p.dim) + p.eps);
    float const* const src = p.residual != nullptr ? p.residual_out : p.x;  // h, for rows not held
    for (std::int64_t w0 = 0; w0 < p.dim; w0 += rmsnorm_window) {
      if (!row_held) {
        each(w0, [&](int k, std::int64_t c) { h[k] = load_floats<V>(src + at + c); });
      }
      each(w0, [&](int k, std::int64_t c) {
        auto const w = load_floats<V>(p.weight + c);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          h[k].v[j] = h[k].v[j] * s * w.v[j];
        }
      });
      each(w0, [&](int k, std::int64_t c) {
        if (p.y != nullptr) {
          store_floats<V>(p.y + at + c, h[k]);
        }
        if (p.y16 != nullptr) {
          store_rounded<V>(p.y16 + at + c, h[k]);
        }
      });
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

__host__ __device__ inline std::int64_t rmsnorm_row_blocks(std::int64_t rows) {
  return (rows + rmsnorm_block_rows - 1) / rmsnorm_block_rows;
}

//! dx (+)= s (dy·w − x̂ · mean(dy·w·x̂)), one warp per row, V columns per access. With Partials (a row fits one
//! window) the kernel also writes dweight's partials, from the registers that hold dy and x: block b of the grid
//! stride takes the rows [64 b, 64 b + 64), warp w of them rows 64 b + w, + 8, ..., adding dy · x̂ to its own row
//! of shared memory in that order; the eight rows are then added in warp order into partial[b, :]. (A separate
//! kernel re-reading x and dy took a quarter of the RMSNorm time; sums held in registers spilled.)
template <int V, bool Partials>
__global__ void __launch_bounds__(rmsnorm_threads, 2) rmsnorm_backward_dx_kernel(rmsnorm_backward_params<float> p) {
  constexpr int groups = rmsnorm_groups<V>, block_warps = rmsnorm_threads / warp_lanes;
  int const lane = static_cast<int>(threadIdx.x) % warp_lanes, warp = static_cast<int>(threadIdx.x) / warp_lanes;
  bool const row_held = p.dim <= rmsnorm_window;  // else the output pass re-reads each window
  auto const each = [&](std::int64_t w0, auto const& f) { for_each_window_group<V>(w0, p.dim, lane, f); };
  __shared__ float sums[Partials ? block_warps : 1][Partials ? rmsnorm_window : 1];  // [warp, column]: Σ dy · x̂
  auto const backward_row = [&](std::int64_t r) {
    std::int64_t const at = r * p.dim;  // the row's first element
    float const s = p.rstd[r];
    float_vec<V> x[groups] = {}, g[groups] = {};  // this lane's groups of the window: x, dy, then dx
    auto const load_window = [&](std::int64_t w0) {
      each(w0, [&](int k, std::int64_t c) {
        x[k] = load_floats<V>(p.x + at + c);
        g[k] = load_floats<V>(p.dy + at + c);
      });
    };
    float dot = 0;
    for (std::int64_t w0 = 0; w0 < p.dim; w0 += rmsnorm_window) {
      load_window(w0);
      each(w0, [&](int k, std::int64_t c) {
        auto const w = load_floats<V>(p.weight + c);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          dot += g[k].v[j] * w.v[j] * x[k].v[j] * s;
        }
        if constexpr (Partials) {  // w0 = 0: the one window
          auto sum = load_floats<V>(&sums[warp][c]);
#pragma unroll
          for (int j = 0; j < V; ++j) {
            sum.v[j] += g[k].v[j] * (x[k].v[j] * s);
          }
          store_floats<V>(&sums[warp][c], sum);
        }
      });
    }
    float const mean_dot = ops::cuda::warp_sum(dot) / static_cast<float>(p.dim);
    for (std::int64_t w0 = 0; w0 < p.dim; w0 += rmsnorm_window) {
      if (!row_held) {
        load_window(w0);
      }
      each(w0, [&](int k, std::int64_t c) {
        auto const w = load_floats<V>(p.weight + c);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          g[k].v[j] = s * (g[k].v[j] * w.v[j] - x[k].v[j] * s * mean_dot);
        }
      });
      if (p.accumulate) {  // the old dx into x's registers, all loaded before the first store
        each(w0, [&](int k, std::int64_t c) { x[k] = load_floats<V>(p.dx + at + c); });
      }
      each(w0, [&](int k, std::int64_t c) {
        if (p.accumulate) {
#pragma unroll
          for (int j = 0; j < V; ++j) {
            g[k].v[j] = x[k].v[j] + g[k].v[j];
          }
        }
        store_floats<V>(p.dx + at + c, g[k]);
        if (p.dx16 != nullptr) {
          store_rounded<V>(p.dx16 + at + c, g[k]);
        }
      });
    }
  };
  if constexpr (Partials) {
    std::int64_t const blocks = rmsnorm_row_blocks(p.rows);
    for (std::int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
      each(0, [&](int, std::int64_t c) { store_floats<V>(&sums[warp][c], float_vec<V>{}); });  // its own lanes' columns
      for (std::int64_t r = b * rmsnorm_block_rows + warp; r < min((b + 1) * rmsnorm_block_rows, p.rows);
           r += block_warps) {
        backward_row(r);
      }
      __syncthreads();
      for (std::int64_t c = threadIdx.x; c < p.dim; c += rmsnorm_threads) {
        float total = 0;
#pragma unroll
        for (int w = 0; w < block_warps; ++w) {
          total += sums[w][c];  // a warp without rows left its zeros
        }
        p.partial[b * p.dim + c] = total;
      }
      __syncthreads();  // the sums are read before the next block's stores
    }
  } else {
    std::int64_t const warps = std::int64_t{gridDim.x} * block_warps;
    for (std::int64_t r = blockIdx.x * std::int64_t{block_warps} + warp; r < p.rows; r += warps) {
      backward_row(r);
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

}  // namespace detail

//! Forward on `be.stream`; device pointers. x: [rows, D], weight: [D] -> y: [rows, D]; rstd: [rows] or null.
//! With `residual` ([rows, D], or null for a plain norm): h = x + residual is written to residual_out ([rows, D],
//! required then; it may be x or residual itself) and y = rmsnorm(h); the backward then takes h as its x.
//! y16 ([rows, D], or null) also receives y rounded to bf16 (nearest even, as backends::round_to_bf16 of y); y may
//! then be null, for a y that only bf16 GEMMs read.
inline void rmsnorm_forward(backends::cuda const& be, std::int64_t rows, std::int64_t dim, double eps, float const* x,
                            float const* residual, float* residual_out, float const* weight, float* y, float* rstd,
                            bfloat16* y16 = nullptr) {
  detail::check_rmsnorm_shape(rows, dim);
  check_arg(eps > 0, "rmsnorm eps", eps, "must be positive");
  check(rows == 0 || (x != nullptr && weight != nullptr),
        "rmsnorm forward (cuda): x and weight must be device pointers, not null");
  check(rows == 0 || y != nullptr || y16 != nullptr,
        "rmsnorm forward (cuda): y and y16 are both null: give y, its bf16 rounding y16, or both");
  check(residual == nullptr || residual_out != nullptr,
        "rmsnorm forward (cuda): residual_out must be given with residual (the backward needs x + residual)");
  void const* const q = y16;
  check(q == nullptr || (q != x && q != residual && q != residual_out && q != y),
        "rmsnorm forward (cuda): y16 must not overwrite x, residual, residual_out or y");
  if (rows == 0) {
    return;
  }
  detail::rmsnorm_forward_params<float> const p{
      rows, dim, static_cast<float>(eps), x, residual, weight, residual_out, y, rstd, y16};
  constexpr int rows_per_block = detail::rmsnorm_threads / detail::warp_lanes;
  unsigned const blocks = ops::cuda::grid_blocks(rows, rows_per_block);
  if (dim % 4 == 0 && detail::aligned16(x) && detail::aligned16(residual) && detail::aligned16(residual_out) &&
      detail::aligned16(weight) && detail::aligned16(y) && detail::aligned8(y16)) {
    detail::rmsnorm_forward_kernel<4><<<blocks, detail::rmsnorm_threads, 0, be.stream>>>(p);
  } else {
    detail::rmsnorm_forward_kernel<1><<<blocks, detail::rmsnorm_threads, 0, be.stream>>>(p);
  }
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
  bool const vectors = dim % 4 == 0 && detail::aligned16(x) && detail::aligned16(weight) && detail::aligned16(dy) &&
                       detail::aligned16(dx) && detail::aligned8(dx16);
  if (dim <= detail::rmsnorm_window) {  // the rows fit the registers: the dx kernel writes the partials too
    unsigned const grid = ops::cuda::grid_blocks(blocks, 1);
    if (vectors) {
      detail::rmsnorm_backward_dx_kernel<4, true><<<grid, detail::rmsnorm_threads, 0, be.stream>>>(p);
    } else {
      detail::rmsnorm_backward_dx_kernel<1, true><<<grid, detail::rmsnorm_threads, 0, be.stream>>>(p);
    }
    backends::cuda_check_launch("rmsnorm_backward_dx_kernel");
  } else {
    unsigned const row_grid = ops::cuda::grid_blocks(rows, rows_per_block);
    if (vectors) {
      detail::rmsnorm_backward_dx_kernel<4, false><<<row_grid, detail::rmsnorm_threads, 0, be.stream>>>(p);
    } else {
      detail::rmsnorm_backward_dx_kernel<1, false><<<row_grid, detail::rmsnorm_threads, 0, be.stream>>>(p);
    }
    backends::cuda_check_launch("rmsnorm_backward_dx_kernel");
    dim3 const grid(static_cast<unsigned>(blocks), ops::cuda::grid_blocks(dim, detail::rmsnorm_threads, 64));
    detail::rmsnorm_dweight_partial_kernel<float><<<grid, detail::rmsnorm_threads, 0, be.stream>>>(p);
    backends::cuda_check_launch("rmsnorm_dweight_partial_kernel");
  }
  detail::rmsnorm_dweight_reduce_kernel<float>
      <<<static_cast<unsigned>((dim + detail::warp_lanes - 1) / detail::warp_lanes), detail::rmsnorm_threads, 0,
         be.stream>>>(p, blocks);
  backends::cuda_check_launch("rmsnorm_dweight_reduce_kernel");
}

}  // namespace ssmlen::layers::cuda
