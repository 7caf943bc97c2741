// SPDX-License-Identifier: Apache-2.0
//! @file selective_scan_step.cuh
//! One token of the Mamba-1 selective SSM for each of B independent sequences on a CUDA device, float32, fused with
//! what surrounds the scan in the block's step (layers/mamba_block.hpp, `step_row`):
//!   dt_pre = dt_proj(Δ_low) (given, or computed here from Δ_low and dt_proj's weight: a dot product of length R per
//!            thread, which saves the block's step a GEMM launch and a [B, ED] round trip per layer and token)
//!   Δ = delta_min + softplus(dt_pre + dt_bias), A = -exp(A_log)
//!   h[n] = exp(Δ A[n]) h[n] + Δ B[n] x,   y = (Σ_n C[n] h[n] + D x) · silu(z)
//! with the host's scalar functions (core/math.hpp) and its order of summation over states, except the decay
//! exp(Δ A), one MUFU.EX2 of Δ · A log2(e) as in the training scans: a row matches scan::selective_scan_step_row
//! within a few float roundings.
//!
//! One thread per (row, channel), the states of its channel in a loop: state [B, N, ED] is read and written once, a
//! warp touching 32 consecutive channels of one state row (coalesced); B, C, Δ_low and the row's scalars are the
//! same across a warp (broadcast loads). A block is 32 channels × 8 rows. A = -exp(A_log) times log2(e) is made
//! once per block, 16 states at a time, into shared memory for the 8 rows to read (a thread reading its own
//! channel's row of A_log had a warp touch 32 rows 4·N bytes apart per state, and every row computed the same
//! exponentials). A thread loads its first 16 states before anything else, so that their memory latency hides
//! behind dt_proj and the staging: a loop that loads each state after storing the one before (the pointers may
//! alias) kept one load in flight per thread. At the paper's shape with 256 rows, states in DRAM: 40.1 → 33.1 µs
//! per layer, against 13.9 µs to copy the state. With dt_proj fused, the block stages its 32 rows of dt_proj's
//! weight in shared memory, 32 columns at a time, for its 8 rows to share: a thread reading its own weight row
//! straight from memory had a warp touch 32 rows at a stride of R floats (uncoalesced).
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/math.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>

#include <cuda_runtime.h>

#include <cstdint>

namespace ssmlen::scan::cuda {

//! Device pointers of one fused SSM step; rows with a stride name it.
struct selective_scan_step_args {
  std::int64_t batch = 0, channels = 0, states = 0;  // B, ED, N
  float const* x = nullptr;                          // [B, ED]: the SSM input (after the conv and SiLU)
  float const* dt_pre = nullptr;                     // [B, ED]: dt_proj(Δ_low), the bias not yet added; or null and:
  float const* dt_low = nullptr;                     // [B, R], row stride ld_dt_low: Δ_low
  std::int64_t ld_dt_low = 0, dt_rank = 0;           // R
  float const* dt_weight = nullptr;                  // [ED, R]: dt_proj's weight
  float const* dt_bias = nullptr;                    // [ED]
  float delta_min = 0;                               // the floor of Δ
  float const* a_log = nullptr;                      // [ED, N]: A = -exp(A_log)
  float const* b = nullptr;                          // [B, N], row stride ld_bc
  float const* c = nullptr;                          // [B, N], row stride ld_bc
  std::int64_t ld_bc = 0;
  float const* d = nullptr;  // [ED]: the skip connection
  float const* z = nullptr;  // [B, ED], row stride ld_z: the gate
  std::int64_t ld_z = 0;
  float* state = nullptr;         // [B, N, ED]: advanced in place
  float* y = nullptr;             // [B, ED]: the gated output, or null with:
  bfloat16* y_rounded = nullptr;  // [B, ED]: the gated output rounded to bf16 (what bf16 GEMMs read), or null
};

namespace detail {

inline constexpr int step_lanes = 32;      // channels per block (threadIdx.x)
inline constexpr int step_rows = 8;        // rows per block (threadIdx.y): each staged weight tile serves 8 rows
inline constexpr int step_rank_tile = 32;  // dt_proj columns staged at a time
inline constexpr int step_states = 16;     // states of A staged at a time (Mamba's N)

template <class T>
__global__ void __launch_bounds__(step_lanes* step_rows) selective_scan_step_kernel(selective_scan_step_args p) {
  __shared__ T w_tile[step_lanes][step_rank_tile + 1];  // [channel, rank]: +1 keeps a warp's reads conflict-free
  __shared__ T a2_tile[step_states][step_lanes + 1];    // [state, channel]: A log2(e), made once for the 8 rows
  std::int64_t const ed = p.channels, ch0 = blockIdx.x * std::int64_t{step_lanes};
  std::int64_t const ch = ch0 + threadIdx.x, row = blockIdx.y * std::int64_t{step_rows} + threadIdx.y;
  bool const live = ch < ed && row < p.batch;
  int const tid = static_cast<int>(threadIdx.y * step_lanes + threadIdx.x);
  T* h = p.state + row * p.states * ed + ch;  // column ch of [N, ED]
  T hv[step_states];  // the first 16 states, loaded first: their latency hides behind dt_proj and the staging
#pragma unroll
  for (int j = 0; j < step_states; ++j) {
    hv[j] = live && j < p.states ? h[j * ed] : T(0);
  }
  T pre = 0;  // dt_proj(Δ_low)
  if (p.dt_pre != nullptr) {
    pre = live ? p.dt_pre[row * ed + ch] : T(0);
  } else {
    for (std::int64_t r0 = 0; r0 < p.dt_rank; r0 += step_rank_tile) {  // every thread joins the barriers
      __syncthreads();                                                 // the previous tile's readers are done
      for (int e = tid; e < step_lanes * step_rank_tile; e += step_lanes * step_rows) {
        int const c = e / step_rank_tile, r = e % step_rank_tile;  // consecutive threads: one weight row's columns
        bool const ok = ch0 + c < ed && r0 + r < p.dt_rank;
        w_tile[c][r] = ok ? p.dt_weight[(ch0 + c) * p.dt_rank + r0 + r] : T(0);
      }
      __syncthreads();
      if (live) {
        int const width = static_cast<int>(p.dt_rank - r0 < step_rank_tile ? p.dt_rank - r0 : step_rank_tile);
        T const* low = p.dt_low + row * p.ld_dt_low + r0;  // [width]: the same across the warp (broadcast)
        for (int r = 0; r < width; ++r) {
          pre += low[r] * w_tile[threadIdx.x][r];
        }
      }
    }
  }
  T x = 0, dt = 0, y = 0, gate = 0;
  if (live) {
    x = p.x[row * ed + ch];
    dt = T(p.delta_min) + softplus(pre + p.dt_bias[ch]);
    y = p.d[ch] * x;
    gate = silu(p.z[row * p.ld_z + ch]);
  }
  T const dtx = dt * x;
  T const* b = p.b + row * p.ld_bc;                              // [N]
  T const* c = p.c + row * p.ld_bc;                              // [N]
  for (std::int64_t n0 = 0; n0 < p.states; n0 += step_states) {  // every thread joins the barriers
    __syncthreads();                                             // the previous group's readers are done
    for (int e = tid; e < step_lanes * step_states; e += step_lanes * step_rows) {
      int const cl = e / step_states, j = e % step_states;  // consecutive threads: one channel's row of A_log
      bool const ok = ch0 + cl < ed && n0 + j < p.states;
      a2_tile[j][cl] = ok ? -exp(p.a_log[(ch0 + cl) * p.states + n0 + j]) * ops::cuda::log2e : T(0);
    }
    __syncthreads();
    if (live) {
      int const count = static_cast<int>(p.states - n0 < step_states ? p.states - n0 : step_states);
#pragma unroll
      for (int j = 0; j < step_states; ++j) {
        if (j < count) {
          std::int64_t const n = n0 + j;
          T const hn =
              ops::cuda::exp2_approx(dt * a2_tile[j][threadIdx.x]) * (n0 == 0 ? hv[j] : h[n * ed]) + dtx * b[n];
          h[n * ed] = hn;
          y += hn * c[n];  // states in order: the host's sum
        }
      }
    }
  }
  T const gated = y * gate;
  if (live && p.y != nullptr) {
    p.y[row * ed + ch] = gated;
  }
  if (live && p.y_rounded != nullptr) {
    p.y_rounded[row * ed + ch] = bfloat16(static_cast<float>(gated));
  }
}

}  // namespace detail

//! Runs one fused step on `be.stream` (see the file comment); every pointer is a device pointer.
inline void selective_scan_step(backends::cuda const& be, selective_scan_step_args const& a) {
  check_arg(a.batch >= 0 && a.batch <= 65535, "selective scan step batch", a.batch, "must be in [0, 65535]");
  check_arg(a.channels >= 1, "selective scan step channels", a.channels, "must be positive");
  check_arg(a.states >= 1, "selective scan step states", a.states, "must be positive");
  check_arg(a.ld_bc >= a.states, "selective scan step ld_bc", a.ld_bc, "must be at least the state count");
  check_arg(a.ld_z >= a.channels, "selective scan step ld_z", a.ld_z, "must be at least the channel count");
  bool const fused_dt = a.dt_pre == nullptr;
  if (fused_dt) {
    check_arg(a.dt_rank >= 1, "selective scan step dt_rank", a.dt_rank, "must be positive (dt_pre is null)");
    check_arg(a.ld_dt_low >= a.dt_rank, "selective scan step ld_dt_low", a.ld_dt_low, "must be at least dt_rank");
  }
  check(a.batch == 0 ||
            (a.x != nullptr && (!fused_dt || (a.dt_low != nullptr && a.dt_weight != nullptr)) && a.dt_bias != nullptr &&
             a.a_log != nullptr && a.b != nullptr && a.c != nullptr && a.d != nullptr && a.z != nullptr &&
             a.state != nullptr && (a.y != nullptr || a.y_rounded != nullptr)),
        "selective scan step (cuda): every input (dt_pre, or dt_low and dt_weight), the state and y (or y_rounded) "
        "must be device pointers, not null");
  if (a.batch == 0) {
    return;
  }
  dim3 const grid(static_cast<unsigned>((a.channels + detail::step_lanes - 1) / detail::step_lanes),
                  static_cast<unsigned>((a.batch + detail::step_rows - 1) / detail::step_rows));
  detail::selective_scan_step_kernel<float><<<grid, dim3(detail::step_lanes, detail::step_rows), 0, be.stream>>>(a);
  backends::cuda_check_launch("selective_scan_step_kernel");
}

}  // namespace ssmlen::scan::cuda
