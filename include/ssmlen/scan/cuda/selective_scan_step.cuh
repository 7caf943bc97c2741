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
//! warp touching 32 consecutive channels of one state row (coalesced). A block is 32 channels × 8 rows and shares,
//! in shared memory, what its rows or channels have in common: dt_proj's 32 weight rows and the 8 rows' Δ_low (64
//! columns at a time), A = -exp(A_log) times log2(e) (16 states at a time: every row would compute the same
//! exponentials) and the rows' B, C. The step's time is latency, not bytes or arithmetic, so the kernel is built to
//! wait once: a thread starts the asynchronous copies of its first 16 states into shared memory, loads its x, z and
//! channel values and its share of every tile (from one pointer per tile at fixed steps), stores the tiles, and
//! only then meets the block's one barrier; the states arrive while dt_proj's product (by 16-byte vectors of both
//! tiles) and the softplus run. With N = 16 (Mamba's) the state loop is one pass known at compile time.
//! Registers are capped for 5 blocks per SM (48): more blocks in flight hide more of the states' DRAM latency.
//! At the paper's shape, 256 rows, states in DRAM (bench_rollout_cuda's bm_ssm_step, one H200): 33.4 µs per layer
//! → 20.6 µs against 13.9 µs to copy the state bytes (67 %); each load waited for in turn (the weight tiles, then
//! x and z, then A's, then B and C) had cost a memory latency each, and the 16 states held in registers through
//! all of it had held the registers that more blocks per SM need (docs/perf.md).
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/math.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>

#include <cuda_pipeline_primitives.h>
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

inline constexpr int step_lanes = 32;                        // channels per block (threadIdx.x)
inline constexpr int step_rows = 8;                          // rows per block (threadIdx.y): tiles serve 8 rows
inline constexpr int step_threads = step_lanes * step_rows;  // 256
inline constexpr int step_rank_tile = 64;                    // dt_proj columns staged at a time (R ≤ 64: one tile)
inline constexpr int step_states = 16;                       // states staged at a time (Mamba's N: one group)

//! What a block shares: dt_proj's weight and the rows' Δ_low for one tile of columns, A log2(e) and the rows' B, C
//! for one group of states. The weight and A are kept by quads of columns (states) per channel, so that a thread
//! reads 4 of its channel's values in one 16-byte load (a warp: 32 consecutive vectors, no bank conflicts); Δ_low
//! is read by 16-byte vectors too, B and C one value at a time (the same address across a warp: broadcasts).
struct step_tiles {
  static constexpr int rank_quads = step_rank_tile / 4, state_quads = step_states / 4;
  alignas(16) float w[rank_quads][step_lanes][4];    // [rank / 4, channel, rank % 4]
  alignas(16) float low[step_rows][step_rank_tile];  // [row, rank]: Δ_low
  alignas(16) float a2[state_quads][step_lanes][4];  // [state / 4, channel, state % 4]: A log2(e)
  float b[step_rows][step_states];                   // [row, state]
  float c[step_rows][step_states];                   // [row, state]
  float h[step_states][step_threads];                // [state, thread]: the first 16 states, by asynchronous copies
};

//! A block's loads of one rank tile (dt_proj's weight, Δ_low) or one state group (A_log, B, C) into registers, each
//! thread its share, and their stores into the tiles: a block issues every load of its first tiles (and its states,
//! x, z) before it waits for any, so that it pays one memory latency before its arithmetic, not one per tile.
struct step_staging {
  static constexpr int w_each = step_lanes * step_rank_tile / step_threads;   // 8
  static constexpr int low_each = step_rows * step_rank_tile / step_threads;  // 2
  static constexpr int a_each = step_lanes * step_states / step_threads;      // 2
  static constexpr int bc_threads = 2 * step_rows * step_states;              // B and C: one value per thread
  static_assert(w_each * step_threads == step_lanes * step_rank_tile &&
                low_each * step_threads == step_rows * step_rank_tile &&
                a_each * step_threads == step_lanes * step_states && bc_threads <= step_threads);
  static constexpr int w_step = step_threads / step_lanes;  // 8: a thread's ranks in the weight tile, apart
  float w[w_each], low[low_each], a_log[a_each], bc = 0;

  // Thread tid's place in the weight tile: channel tid / 4 % 32, ranks r_first + 8 k (a warp takes 4 ranks of 8
  // channels: 16-byte runs of each weight row, stored to 32 different banks). Each kind of tile is read from one
  // pointer per thread at fixed steps, so that the loads need no address arithmetic of their own.
  static_assert(w_step % 4 == 0, "a thread's ranks share their place in a quad");
  __device__ static int w_channel(unsigned tid) { return static_cast<int>(tid / 4 % step_lanes); }
  __device__ static int w_first(unsigned tid) { return static_cast<int>(tid % 4 + 4 * (tid / (4 * step_lanes))); }
  // Δ_low: rows low_row + 4 k, rank low_rank. A_log: channels a_channel + 16 k, state a_state. B (kind 0) or C
  // (kind 1) of row bc_row, state a_state, for the first 256 threads.
  static constexpr int low_step = step_threads / step_rank_tile, a_step = step_threads / step_states;
  __device__ static int low_row(unsigned tid) { return static_cast<int>(tid / step_rank_tile); }
  __device__ static int low_rank(unsigned tid) { return static_cast<int>(tid % step_rank_tile); }
  __device__ static int a_channel(unsigned tid) { return static_cast<int>(tid / step_states); }
  __device__ static int a_state(unsigned tid) { return static_cast<int>(tid % step_states); }
  __device__ static int bc_kind(unsigned tid) { return static_cast<int>(tid / (step_rows * step_states)); }
  __device__ static int bc_row(unsigned tid) { return static_cast<int>(tid / step_states % step_rows); }
  //! Columns of the rank tile at r0 that lie in R.
  __device__ static int tile_width(selective_scan_step_args const& p, std::int64_t r0) {
    return static_cast<int>(p.dt_rank - r0 < step_rank_tile ? p.dt_rank - r0 : step_rank_tile);
  }

  __device__ void load_rank(selective_scan_step_args const& p, std::int64_t ch0, std::int64_t row0, unsigned tid,
                            std::int64_t r0) {
    int const width = tile_width(p, r0);
    int const c = w_channel(tid), r = w_first(tid);
    bool const c_ok = ch0 + c < p.channels;
    float const* const wp = p.dt_weight + (ch0 + c) * p.dt_rank + r0 + r;
#pragma unroll
    for (int k = 0; k < w_each; ++k) {
      w[k] = c_ok && r + k * w_step < width ? wp[k * w_step] : 0.0f;
    }
    int const i = low_row(tid), rl = low_rank(tid);
    float const* const lp = p.dt_low + (row0 + i) * p.ld_dt_low + r0 + rl;
#pragma unroll
    for (int k = 0; k < low_each; ++k) {
      low[k] = row0 + i + k * low_step < p.batch && rl < width ? lp[k * low_step * p.ld_dt_low] : 0.0f;
    }
  }
  __device__ void store_rank(step_tiles& t, unsigned tid) const {
    int const c = w_channel(tid), r = w_first(tid);
#pragma unroll
    for (int k = 0; k < w_each; ++k) {
      t.w[r / 4 + k * (w_step / 4)][c][r % 4] = w[k];
    }
    int const i = low_row(tid), rl = low_rank(tid);
#pragma unroll
    for (int k = 0; k < low_each; ++k) {
      t.low[i + k * low_step][rl] = low[k];
    }
  }
  __device__ void load_states(selective_scan_step_args const& p, std::int64_t ch0, std::int64_t row0, unsigned tid,
                              std::int64_t n0) {
    int const c = a_channel(tid), j = a_state(tid);  // rows of A_log
    float const* const ap = p.a_log + (ch0 + c) * p.states + n0 + j;
#pragma unroll
    for (int k = 0; k < a_each; ++k) {
      a_log[k] = ch0 + c + k * a_step < p.channels && n0 + j < p.states ? ap[k * a_step * p.states] : 0.0f;
    }
    if (tid < bc_threads) {
      int const i = bc_row(tid);
      bool const ok = row0 + i < p.batch && n0 + j < p.states;
      float const* const src = bc_kind(tid) == 0 ? p.b : p.c;
      bc = ok ? src[(row0 + i) * p.ld_bc + n0 + j] : 0.0f;
    }
  }
  __device__ void store_states(step_tiles& t, unsigned tid) const {
    int const c = a_channel(tid), j = a_state(tid);
#pragma unroll
    for (int k = 0; k < a_each; ++k) {
      t.a2[j / 4][c + k * a_step][j % 4] = -exp(a_log[k]) * ops::cuda::log2e;  // masked entries: never read
    }
    if (tid < bc_threads) {
      (bc_kind(tid) == 0 ? t.b : t.c)[bc_row(tid)][j] = bc;
    }
  }
};

//! Whole: N is exactly one group of 16 (Mamba's): the state loop is one pass known at compile time.
template <bool Whole>
__global__ void __launch_bounds__(step_threads, 5) selective_scan_step_kernel(selective_scan_step_args p) {
  __shared__ step_tiles tiles;
  std::int64_t const ed = p.channels, ch0 = blockIdx.x * std::int64_t{step_lanes};
  std::int64_t const row0 = blockIdx.y * std::int64_t{step_rows};
  int const tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  unsigned const tid = threadIdx.y * step_lanes + threadIdx.x;
  std::int64_t const ch = ch0 + tx, row = row0 + ty;
  bool const live = ch < ed && row < p.batch;
  bool const fused_dt = p.dt_pre == nullptr;
  float* h = p.state + row * p.states * ed + ch;  // column ch of [N, ED]
  std::int64_t const states = Whole ? step_states : p.states;
  // Every load the first tiles need, before any is waited for: the first 16 states (copied into shared memory
  // without passing through registers, which the rest of the step then has to itself), this thread's x, z and
  // per-channel values, and its share of the shared tiles.
  if (live) {
#pragma unroll
    for (int j = 0; j < step_states; ++j) {
      if (j < states) {
        __pipeline_memcpy_async(&tiles.h[j][tid], h + j * ed, sizeof(float));
      }
    }
  }
  __pipeline_commit();
  float x = 0, zv = 0, bias = 0, dskip = 0, pre = 0;
  if (live) {
    x = p.x[row * ed + ch];
    zv = p.z[row * p.ld_z + ch];
    bias = p.dt_bias[ch];
    dskip = p.d[ch];
    if (!fused_dt) {
      pre = p.dt_pre[row * ed + ch];
    }
  }
  step_staging st;
  if (fused_dt) {
    st.load_rank(p, ch0, row0, tid, 0);
  }
  st.load_states(p, ch0, row0, tid, 0);
  if (fused_dt) {
    st.store_rank(tiles, tid);
  }
  st.store_states(tiles, tid);
  __syncthreads();
  // dt_pre = dt_proj(Δ_low): a dot product of length R in order (one rank tile per pass; every thread joins the
  // barriers of later tiles).
  for (std::int64_t r0 = 0; fused_dt && r0 < p.dt_rank; r0 += step_rank_tile) {
    if (r0 > 0) {
      __syncthreads();  // the previous tile's readers are done
      st.load_rank(p, ch0, row0, tid, r0);
      st.store_rank(tiles, tid);
      __syncthreads();
    }
    if (live) {  // columns past R are zeros in both tiles: a quad's tail adds +0
      int const width = step_staging::tile_width(p, r0);
#pragma unroll 2
      for (int q = 0; q < (width + 3) / 4; ++q) {
        float4 const l = *reinterpret_cast<float4 const*>(&tiles.low[ty][4 * q]);
        float4 const wq = *reinterpret_cast<float4 const*>(&tiles.w[q][tx][0]);
        pre += l.x * wq.x;
        pre += l.y * wq.y;
        pre += l.z * wq.z;
        pre += l.w * wq.w;
      }
    }
  }
  float dt = 0, y = 0, gate = 0;
  if (live) {
    dt = p.delta_min + softplus(pre + bias);
    y = dskip * x;
    gate = silu(zv);
  }
  float const dtx = dt * x;
  __pipeline_wait_prior(0);                                    // this thread's states are in (it reads only its own)
  for (std::int64_t n0 = 0; n0 < states; n0 += step_states) {  // every thread joins the barriers
    if (n0 > 0) {
      __syncthreads();  // the previous group's readers are done
      st.load_states(p, ch0, row0, tid, n0);
      st.store_states(tiles, tid);
      __syncthreads();
    }
    if (live) {
      int const count = static_cast<int>(states - n0 < step_states ? states - n0 : step_states);
#pragma unroll
      for (int q = 0; q < step_states / 4; ++q) {
        float4 const a4 = *reinterpret_cast<float4 const*>(&tiles.a2[q][tx][0]);
        float const av[4] = {a4.x, a4.y, a4.z, a4.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          int const j = 4 * q + i;
          if (j < count) {
            std::int64_t const n = n0 + j;
            float const hn =
                ops::cuda::exp2_approx(dt * av[i]) * (n0 == 0 ? tiles.h[j][tid] : h[n * ed]) + dtx * tiles.b[ty][j];
            h[n * ed] = hn;
            y += hn * tiles.c[ty][j];  // states in order: the host's sum
          }
        }
      }
    }
  }
  float const gated = y * gate;
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
  auto const kernel = a.states == detail::step_states ? &detail::selective_scan_step_kernel<true>
                                                      : &detail::selective_scan_step_kernel<false>;
  kernel<<<grid, dim3(detail::step_lanes, detail::step_rows), 0, be.stream>>>(a);
  backends::cuda_check_launch("selective_scan_step_kernel");
}

}  // namespace ssmlen::scan::cuda
