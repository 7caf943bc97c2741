// SPDX-License-Identifier: Apache-2.0
//! @file selective_scan.cuh
//! The Mamba-1 selective scan on a CUDA device, float32, with the layouts and semantics of the host oracle in
//! scan/selective_scan.hpp: packed variable-length sequences, x/dt [T, ED], A [N, ED], B/C [T, N] with a row stride,
//! optional initial states, final states, checkpoints every `checkpoint_interval` tokens ([Σ chunks, N, ED], the
//! layout of scan::checkpoint_offsets), and the backward with d_final_state -> d_init_state. Two fusions for the
//! Mamba block: Δ made from dt_proj's output as it is read (bias and softplus, selective_scan_args), and the gate
//! y · silu(z), written by the forward (gate_output) and taken back by the backward as it reads dy (gate_gradient);
//! the backward can also sum dt's bias gradient (selective_scan_grads::d_dt_bias).
//!
//! Two policies:
//!   recurrent               one thread per (sequence, channel), a tile of 4, 8 or 16 states in registers, one token
//!                           after another (B, C staged in shared memory per 64 tokens); the plain reference. It has
//!                           sequences × channels threads only, too few to hide latency at training shapes.
//!   block_parallel<W, I>    a block per (sequence, 32 channels): lanes own channels, the W warps own consecutive
//!                           runs of I tokens, so a chunk is W·I tokens. Within a chunk each thread folds its tokens
//!                           into one affine pair (a, b), (a0,b0)∘(a1,b1) = (a1·a0, a1·b0 + b1); a W-term scan of
//!                           those pairs across warps in shared memory gives each thread its entering state, and the
//!                           state carried between chunks enters through warp 0. Only chunk-start states are stored;
//!                           the backward recomputes a chunk's states from them and runs the mirrored scan for dh.
//!                           B, C of a chunk are staged in shared memory 16 states at a time; the forward scans two
//!                           states per barrier; the backward keeps at most 8 tokens per thread (same chunk).
//!
//! Why not cub::BlockScan over time: it orders threads by rank, which puts time on the fast thread axis; with
//! channels contiguous in memory ([T, ED]) that breaks coalescing and makes every lane read different B/C rows.
//! Here lanes read consecutive channels (one 128-byte line per token), B/C reads are uniform across a warp, and the
//! cross-warp scan is at most W - 1 fused multiply-adds per thread and state. (CUB's BlockScan, with a running
//! prefix across tiles, computes the checkpoint offsets.)
//!
//! States: any N in [1, 256]. block_parallel loops over N at run time (states carried in shared memory, 128·N
//! bytes); recurrent walks the sequence once per register tile of states.
//! Channels: any count; blocks are numbered in gridDim.x only (no 65,535 limit).
//! Determinism: no floating-point atomics. dB/dC are reduced over each warp's 32 channels by shuffles into
//! per-32-channel partials, dA/dD (and dt's bias gradient) into per-sequence partials; fixed-order reduction kernels
//! finish them.
//! Decays use ex2.approx.ftz (one MUFU.EX2) with log2(e) folded into A. Measured speeds: docs/perf.md.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/cuda/device_sequences.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>
#include <ssmlen/scan/cuda/warp_reduce_scatter.cuh>
#include <ssmlen/scan/policy.hpp>
#include <ssmlen/scan/selective_scan.hpp>

#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ssmlen::scan::cuda {

//! Packed variable-length sequences whose offsets live on the device: sequence s is token rows
//! [offsets[s], offsets[s+1]). `tokens` (= offsets[count]) is the row count of x, y, ... and is known to the host.
using ssmlen::device_sequences;  // core/cuda/device_sequences.cuh

//! A block per (sequence, 32 channels); W warps × I tokens per thread make one chunk (the checkpoint interval).
template <int W = 8, int I = 8>
struct block_parallel {
  static_assert(W >= 1 && W <= 32, "a block holds 1 to 32 warps");
  static_assert(I >= 1 && I <= 16 && (I & (I - 1)) == 0, "tokens per thread: a power of two, at most 16");
  static constexpr algorithm kind = algorithm::chunked;  // chunks scanned in parallel inside a block
  static constexpr int warps = W;
  static constexpr int items = I;
  static constexpr std::int64_t chunk = std::int64_t{W} * I;
  static constexpr std::int64_t checkpoint_interval = chunk;
  static std::string name() { return "block_parallel<" + std::to_string(W) + ", " + std::to_string(I) + ">"; }
  friend constexpr bool operator==(block_parallel, block_parallel) { return true; }
};

static_assert(policy<block_parallel<>>);

//! The Mamba block's gate, applied by a forward as it writes y: y · silu(z) into `gated` and/or its bf16 rounding
//! into `gated_rounded`, whichever is not null ([T, ED], dense); z: [T, ED] with row stride ld_z (null: no gate).
//! silu runs on the multi-function unit, within a few 1e-7 of the host's. The scan's own y is still written.
struct gate_output {
  float const* z = nullptr;
  std::int64_t ld_z = 0;
  float* gated = nullptr;
  bfloat16* gated_rounded = nullptr;
};

//! The Mamba block's gate, taken back by a backward as it reads dy: with a z, the grads' dy holds ∂L/∂(y · silu(z))
//! (the gated output's gradient); the backward goes on with dy · silu(z) and writes dz = dy · y · silu'(z) into
//! whichever of dz and dz_rounded (its bf16 rounding) is not null ([T, ED] with row stride ld_dz). z: [T, ED] with row
//! stride ld_z; y: the forward's own output [T, ED]. silu on the multi-function unit, as in the forward's gate.
struct gate_gradient {
  float const* z = nullptr;
  std::int64_t ld_z = 0;
  float const* y = nullptr;
  float* dz = nullptr;
  bfloat16* dz_rounded = nullptr;
  std::int64_t ld_dz = 0;
};

namespace detail {

using backends::cuda_check;
using backends::cuda_check_launch;

using ops::cuda::exp2_approx;
using ops::cuda::log2e;
using ops::cuda::sigmoid_fast;
using ops::cuda::silu_fast;
using ops::cuda::silu_slope;
inline constexpr float ln2 = 0.693147180559945309f;  // 1 / log2 e
inline constexpr std::int64_t max_states = 256;
inline constexpr int lanes = 32;

//! The affine map h -> a h + b; `then(f, g)` applies f first: (a_f, b_f)∘(a_g, b_g) = (a_g a_f, a_g b_f + b_g).
struct affine {
  float a, b;
};
__device__ inline affine then(affine f, affine g) { return {g.a * f.a, fmaf(g.a, f.b, g.b)}; }

//! Everything a forward kernel reads and writes; pointers are device pointers.
struct forward_params {
  std::int64_t const* offsets;     // [S + 1]
  std::int64_t const* ck_offsets;  // [S + 1]: first checkpoint of each sequence
  std::int64_t ed, ns, ld_bc, groups;
  float const *x, *dt, *a, *b, *c, *d, *init;  // init may be null
  float *y, *ck, *final_state;                 // ck, final_state may be null
  float const* dt_bias;                        // selective_scan_args' Δ fields; dt_bias may be null
  float delta_min;
  bool dt_softplus;
  float const* z;  // gate_output's fields: the gate, or z null for none
  std::int64_t ld_z;
  float* gated;
  bfloat16* gated_rounded;
};

//! Everything a backward kernel reads and writes; partials are workspace.
struct backward_params {
  forward_params f;
  std::int64_t tokens;
  float const *ck, *dy, *d_final;  // d_final may be null
  float *dx, *ddt, *d_init;        // d_init may be null
  bfloat16* ddt_rounded;           // ddt's bf16 rounding, or null (not written)
  float* partial_bc;               // [groups, 2, N, T]: dB (0) and dC (1) summed over 32 channels
  float* partial_da;               // [S, N, ED]
  float* partial_dd;               // [S, ED]
  float* partial_dbias;            // [S, ED]: Σ of ddt over each sequence's tokens, or null (no d_dt_bias asked)
  gate_gradient gate;              // no z: dy is the scan's own output's gradient
};

//! Writes ddt[i] = v (and its rounding when asked for); later launches of a policy overwrite the rounding.
__device__ inline void store_ddt(backward_params const& p, std::int64_t i, float v) {
  p.ddt[i] = v;
  if (p.ddt_rounded != nullptr) {
    p.ddt_rounded[i] = bfloat16(v);
  }
}

__device__ inline float load_or_zero(float const* p, std::int64_t i, bool ok) { return ok ? __ldg(p + i) : 0.0f; }

// Δ from the scan's dt input (selective_scan_args): the Mamba block's softplus, applied as each token is read, or
// dt as given. Only tokens of a sequence go through it: masked ones keep Δ = 0, an identity step.

//! The bias of this thread's channel (0 when none).
__device__ inline float delta_bias(forward_params const& p, std::int64_t ch, bool live) {
  return p.dt_softplus && p.dt_bias != nullptr ? load_or_zero(p.dt_bias, ch, live) : 0.0f;
}
//! softplus(z) = max(z, 0) + log1p(e^-|z|), with e^-|z| on MUFU.EX2 and log1p(e) = 2 atanh(s), s = e / (2 + e) <= 1/3,
//! by seven terms of its series (the rest < 2e-8 of it): about 14 instructions, within a few 1e-7 of the host's
//! softplus. The host's (a polynomial exponential, Cephes' logarithm and an IEEE division, about 50 instructions)
//! made the scan, whose time issue sets, slower by more than the pass it replaced: docs/perf.md.
__device__ inline float softplus_fast(float z) {
  float const e = exp2_approx(-fabsf(z) * log2e);  // in (0, 1]; 0 for z past the exponent range: softplus = z
  float const s = __fdividef(e, 2.0f + e);
  float const t = s * s;
  float q = 1.0f / 13.0f;
  q = fmaf(q, t, 1.0f / 11.0f);
  q = fmaf(q, t, 1.0f / 9.0f);
  q = fmaf(q, t, 1.0f / 7.0f);
  q = fmaf(q, t, 1.0f / 5.0f);
  q = fmaf(q, t, 1.0f / 3.0f);
  q = fmaf(q, t, 1.0f);
  return fmaxf(z, 0.0f) + 2.0f * s * q;
}
//! The gate's outputs for element `at` of y: y · silu(z), into whichever of gated and gated_rounded is not null.
//! Only the launch that finishes y calls it.
__device__ inline void store_gated(forward_params const& p, std::int64_t at, float y, float z) {
  float const yg = y * silu_fast(z);
  if (p.gated != nullptr) {
    p.gated[at] = yg;
  }
  if (p.gated_rounded != nullptr) {
    p.gated_rounded[at] = bfloat16(yg);
  }
}
//! The gate taken back at one element: returns dy · silu(z), the gradient reaching y, and sets dz = dy · y · silu'(z).
__device__ inline float gate_backward(float dy, float z, float y, float& dz) {
  float const s = sigmoid_fast(z);
  dz = dy * y * silu_slope(z, s);
  return dy * (z * s);
}
//! Writes dz of one element (at t · ld_dz + channel) into whichever of the gate's dz and dz_rounded is not null.
__device__ inline void store_dz(backward_params const& p, std::int64_t dz_at, float dz) {
  if (p.gate.dz != nullptr) {
    p.gate.dz[dz_at] = dz;
  }
  if (p.gate.dz_rounded != nullptr) {
    p.gate.dz_rounded[dz_at] = bfloat16(dz);
  }
}
//! The gradient of y at one element from its loaded dy value, with z and y of the element (loaded by the caller;
//! ignored without a gate): dy itself, or through the gate dy · silu(z), writing dz at `dz_at` (t · ld_dz +
//! channel) when `write_dz`.
__device__ inline float dy_through_gate(backward_params const& p, std::int64_t dz_at, float dy, float z, float y,
                                        bool write_dz) {
  if (p.gate.z == nullptr) {
    return dy;
  }
  float dz;
  float const dy_y = gate_backward(dy, z, y, dz);
  if (write_dz) {
    store_dz(p, dz_at, dz);
  }
  return dy_y;
}
//! dy_through_gate with its own loads of z and y (for the policies whose loads are not staged ahead).
__device__ inline float load_dy_through_gate(backward_params const& p, std::int64_t t, std::int64_t c, float dy,
                                             bool write_dz) {
  if (p.gate.z == nullptr) {
    return dy;
  }
  return dy_through_gate(p, t * p.gate.ld_dz + c, dy, __ldg(p.gate.z + t * p.gate.ld_z + c),
                         write_dz ? __ldg(p.gate.y + t * p.f.ed + c) : 0.0f, write_dz);
}
//! Δ of a loaded dt value through the softplus, for a caller that has tested p.dt_softplus once for many values.
__device__ inline float delta_softplus(forward_params const& p, float dt, float bias) {
  return p.delta_min + softplus_fast(dt + bias);
}
//! Δ of a loaded dt value.
__device__ inline float delta_of(forward_params const& p, float dt, float bias) {
  return p.dt_softplus ? delta_softplus(p, dt, bias) : dt;
}
//! ∂Δ/∂dt: sigmoid(dt + bias) with the softplus, else 1.
__device__ inline float delta_slope(forward_params const& p, float dt, float bias) {
  return p.dt_softplus ? sigmoid_fast(dt + bias) : 1.0f;
}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoint offsets: ck[s] = Σ_{s' < s} ceil(len_s' / interval), the layout of scan::checkpoint_offsets.
// One block; CUB's BlockScan with a prefix callback carries the running total across tiles of sequences.

struct running_total {
  std::int64_t total = 0;
  __device__ std::int64_t operator()(std::int64_t tile) {
    std::int64_t const before = total;
    total += tile;
    return before;
  }
};

template <int Threads>
__global__ void __launch_bounds__(Threads) checkpoint_offsets_kernel(std::int64_t const* offsets, std::int64_t count,
                                                                     std::int64_t interval, std::int64_t* out) {
  using block_scan = cub::BlockScan<std::int64_t, Threads>;
  __shared__ typename block_scan::TempStorage temp;
  running_total prefix;
  for (std::int64_t base = 0; base < count; base += Threads) {
    std::int64_t const s = base + threadIdx.x;
    std::int64_t const chunks = s < count ? (offsets[s + 1] - offsets[s] + interval - 1) / interval : 0;
    std::int64_t first = 0;
    block_scan(temp).ExclusiveSum(chunks, first, prefix);
    if (s < count) {
      out[s] = first;
    }
    __syncthreads();  // temp is reused by the next tile
  }
  if (threadIdx.x == 0) {
    out[count] = prefix.total;  // thread 0 runs the callback, so its copy holds the total
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Forward, block_parallel. Block: (sequence s, channels [32 g, 32 g + 32)); thread (warp w, lane): channel 32 g + lane,
// tokens [chunk start + w I, + I). B and C of the chunk are staged in shared memory 16 states at a time (every lane
// of a warp reads the same element: a broadcast). Per chunk and pair of states: fold own tokens -> publish ->
// barrier -> scan the W warp pairs -> replay own tokens, accumulating y. Masked tokens (past the sequence end) and
// channels (>= ED) are x = dt = 0, B = C = 0, an identity step, so they need no branches around the scan.

template <int W, int I>
struct block_traits {
  static constexpr int warps = W;
  static constexpr int items = I;
  static constexpr int threads = lanes * W;
  static constexpr int chunk = W * I;
  static constexpr int state_tile = 16;    // states of B, C staged per chunk at a time
  static constexpr int forward_batch = 2;  // states scanned per barrier in the forward (B, C read as float2)
  static constexpr int reduced = 2 * I;    // dB and dC of each of a thread's tokens, reduced over the warp
  static_assert(threads <= 1024, "at most 1024 threads per block");
  static_assert(reduced <= lanes, "one reduced value per lane");
  static_assert(forward_batch == 2, "the forward reads B, C of its two states as one float2");
  static_assert(state_tile % forward_batch == 0, "a batch of states never straddles a tile");
};

//! The backward holds about five values per token and thread more than the forward, so it keeps at most 8 tokens
//! per thread and spreads the same chunk (the checkpoint interval) over more warps.
template <int W, int I>
struct backward_shape {
  static constexpr int items = I < 8 ? I : 8;
  static constexpr int warps = W * I / items;
  static_assert(warps <= 32, "the backward needs at most 32 warps for the chunk");
};

//! Stages B, C of tokens [t_first, t_first + Chunk) and states [n0, n0 + Tile): put(tok, j, B, C) for each element
//! of the [Chunk, Tile] tile; zeros outside.
template <int Chunk, int Tile, int Threads, class Put>
__device__ inline void stage_bc(Put put, forward_params const& p, std::int64_t t_first, std::int64_t t1,
                                std::int64_t n0) {
  for (int e = static_cast<int>(threadIdx.x); e < Chunk * Tile; e += Threads) {
    int const tok = e / Tile, j = e % Tile;
    std::int64_t const t = t_first + tok, n = n0 + j;
    bool const ok = t < t1 && n < p.ns;
    put(tok, j, load_or_zero(p.b, t * p.ld_bc + n, ok), load_or_zero(p.c, t * p.ld_bc + n, ok));
  }
}
//! The same into separate [Chunk, Tile] tiles of B and C.
template <int Chunk, int Tile, int Threads>
__device__ inline void stage_bc(float (*sb)[Tile], float (*sc)[Tile], forward_params const& p, std::int64_t t_first,
                                std::int64_t t1, std::int64_t n0) {
  stage_bc<Chunk, Tile, Threads>(
      [&](int tok, int j, float b, float c) {
        sb[tok][j] = b;
        sc[tok][j] = c;
      },
      p, t_first, t1, n0);
}

//! Tokens of [first, first + I) that lie before t1, as a small int.
template <int I>
__device__ inline int tokens_before(std::int64_t first, std::int64_t t1) {
  std::int64_t const v = t1 - first;
  return v <= 0 ? 0 : (v >= I ? I : static_cast<int>(v));
}

template <int W, int I>
__global__ void __launch_bounds__(block_traits<W, I>::threads) forward_block_kernel(forward_params p) {
  using tr = block_traits<W, I>;
  constexpr int NB = tr::forward_batch, SW = tr::state_tile;
  extern __shared__ float carry[];         // [N, 32]: state entering the current chunk
  __shared__ affine agg[2][NB][W][lanes];  // each warp's fold of its tokens, double-buffered by step
  __shared__ __align__(16) float sb[tr::chunk][SW], sc[tr::chunk][SW];  // [chunk, 16]: B, C of one state tile
  int const lane = static_cast<int>(threadIdx.x) % lanes, w = static_cast<int>(threadIdx.x) / lanes;
  int const tok0 = w * I;  // this thread's first token within a chunk
  std::int64_t const s = blockIdx.x / p.groups;
  std::int64_t const ch = (blockIdx.x % p.groups) * lanes + lane;
  bool const live = ch < p.ed;
  std::int64_t const t0 = p.offsets[s], t1 = p.offsets[s + 1];
  std::int64_t const n_chunks = (t1 - t0 + tr::chunk - 1) / tr::chunk;
  std::int64_t const size = p.ns * p.ed;  // one state: [N, ED]
  std::int64_t const ck0 = p.ck_offsets[s];
  int const ns = static_cast<int>(p.ns);
  float const dskip = load_or_zero(p.d, ch, live);
  float const dt_bias = delta_bias(p, ch, live);

  if (w == 0) {  // warp 0 alone reads the carry before the first barrier
    for (int n = 0; n < ns; ++n) {
      carry[n * lanes + lane] = p.init != nullptr ? load_or_zero(p.init, s * size + n * p.ed + ch, live) : 0.0f;
    }
  }
  unsigned step = 0;
  for (std::int64_t k = 0; k < n_chunks; ++k) {
    std::int64_t const tc = t0 + k * tr::chunk;
    int const valid = live ? tokens_before<I>(tc + tok0, t1) : 0;
    float const* xp = p.x + (tc + tok0) * p.ed + ch;
    float const* dtp = p.dt + (tc + tok0) * p.ed + ch;
    float dt[I], dtx[I], y[I];  // [I]
    float dt_sum = 0.0f;
#pragma unroll
    for (int i = 0; i < I; ++i) {
      float const x = i < valid ? __ldg(xp + i * p.ed) : 0.0f;
      dt[i] = i < valid ? delta_of(p, __ldg(dtp + i * p.ed), dt_bias) : 0.0f;
      dtx[i] = dt[i] * x;
      y[i] = dskip * x;
      dt_sum += dt[i];
    }
    for (int n0 = 0; n0 < ns; n0 += SW) {
      __syncthreads();  // readers of the previous tile are done; the last warp's carry is visible to warp 0
      stage_bc<tr::chunk, SW, tr::threads>(sb, sc, p, tc, t1, n0);
      __syncthreads();
      int const tile = ns - n0 < SW ? ns - n0 : SW;
      for (int j0 = 0; j0 < tile; j0 += NB, ++step) {
        float decay[NB][I], inject[NB][I];  // [NB, I]: a_t, b_t
        affine fold[NB];
        float h[NB];
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          int const n = n0 + j0 + b;  // n >= N: A = 0 and B = 0 (staged), an identity
          float const a2 = n < ns ? load_or_zero(p.a, n * p.ed + ch, live) * log2e : 0.0f;
          fold[b] = {exp2_approx(a2 * dt_sum), 0.0f};  // Π_t a_t as one exponential
#pragma unroll
          for (int i = 0; i < I; ++i) {
            decay[b][i] = exp2_approx(dt[i] * a2);
          }
        }
#pragma unroll
        for (int i = 0; i < I; ++i) {
          float2 const bb = *reinterpret_cast<float2 const*>(&sb[tok0 + i][j0]);  // B of both states, one load
          inject[0][i] = dtx[i] * bb.x;
          inject[1][i] = dtx[i] * bb.y;
#pragma unroll
          for (int b = 0; b < NB; ++b) {
            fold[b].b = fmaf(decay[b][i], fold[b].b, inject[b][i]);
          }
        }
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          int const n = n0 + j0 + b;
          h[b] = 0.0f;
          if (w == 0 && n < ns) {  // the carried state enters through warp 0, whose pair becomes a constant
            h[b] = carry[n * lanes + lane];
            if (p.ck != nullptr && live) {
              p.ck[(ck0 + k) * size + n * p.ed + ch] = h[b];
            }
            fold[b] = {0.0f, fmaf(fold[b].a, h[b], fold[b].b)};
          }
          agg[step & 1][b][w][lane] = fold[b];
        }
        __syncthreads();
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          affine g[W];  // the pairs of the warps before this one: all loads first, then the chain
#pragma unroll
          for (int j = 0; j < W; ++j) {
            g[j] = j < w ? agg[step & 1][b][j][lane] : affine{1.0f, 0.0f};
          }
#pragma unroll
          for (int j = 0; j < W; ++j) {
            h[b] = fmaf(g[j].a, h[b], g[j].b);
          }
        }
#pragma unroll
        for (int i = 0; i < I; ++i) {
          float2 const cc = *reinterpret_cast<float2 const*>(&sc[tok0 + i][j0]);
          h[0] = fmaf(decay[0][i], h[0], inject[0][i]);
          h[1] = fmaf(decay[1][i], h[1], inject[1][i]);
          y[i] = fmaf(cc.x, h[0], fmaf(cc.y, h[1], y[i]));
        }
        if (w == W - 1) {
#pragma unroll
          for (int b = 0; b < NB; ++b) {
            if (n0 + j0 + b < ns) {
              carry[(n0 + j0 + b) * lanes + lane] = h[b];  // read by warp 0 in the next chunk, after a tile barrier
            }
          }
        }
      }
    }
    float* yp = p.y + (tc + tok0) * p.ed + ch;
#pragma unroll
    for (int i = 0; i < I; ++i) {
      if (i < valid) {
        yp[i * p.ed] = y[i];
        if (p.z != nullptr) {
          std::int64_t const t = tc + tok0 + i;
          store_gated(p, t * p.ed + ch, y[i], __ldg(p.z + t * p.ld_z + ch));
        }
      }
    }
  }
  __syncthreads();  // the last warp's carry -> warp 0
  if (p.final_state != nullptr && w == 0 && live) {
    for (int n = 0; n < ns; ++n) {
      p.final_state[s * size + n * p.ed + ch] = carry[n * lanes + lane];
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward, block_parallel. Chunks in reverse; per chunk and state n, both folds are published before one barrier:
// the forward fold (states h, from the chunk's checkpoint through warp 0) and the reverse fold of
// u_{t-1} = a_t (u_t + dy_t C_t) (the gradient reaching h_{t-1} from later tokens, entering through the last warp).
// Then each thread replays its tokens backwards: g = dy C + u is the total ∂L/∂h_t, and
//   dB_t += g dt x, dC_t += dy h_t, ddt += g (A a h_{t-1} + x B), dx += g dt B, dA += g dt a h_{t-1}.
// dB/dC go through a warp reduce-scatter into per-32-channel partials; the dA parts of a state are summed over the
// warps by warp 0 after the next barrier (fixed order) into a per-block accumulator.

template <int W, int I>
__global__ void __launch_bounds__(block_traits<W, I>::threads, 2) backward_block_kernel(backward_params p) {
  using tr = block_traits<W, I>;
  constexpr int SW = tr::state_tile;
  forward_params const& f = p.f;
  extern __shared__ float smem[];
  float* const u_carry = smem;                // [N, 32]: ∂L/∂(state leaving the current chunk)
  float* const da_acc = smem + f.ns * lanes;  // [N, 32]: dA of this block, owned by warp 0
  __shared__ affine fwd[2][W][lanes], rev[2][W][lanes];
  __shared__ float da_part[2][W][lanes];
  __shared__ float dd_part[W][lanes];
  __shared__ float sb[tr::chunk][SW], sc[tr::chunk][SW];  // [chunk, 16]: B, C of one state tile
  int const lane = static_cast<int>(threadIdx.x) % lanes, w = static_cast<int>(threadIdx.x) / lanes;
  int const tok0 = w * I;
  std::int64_t const s = blockIdx.x / f.groups, group = blockIdx.x % f.groups;
  std::int64_t const ch = group * lanes + lane;
  bool const live = ch < f.ed;
  std::int64_t const t0 = f.offsets[s], t1 = f.offsets[s + 1];
  std::int64_t const n_chunks = (t1 - t0 + tr::chunk - 1) / tr::chunk;
  std::int64_t const size = f.ns * f.ed;
  std::int64_t const ck0 = f.ck_offsets[s];
  int const ns = static_cast<int>(f.ns);
  float const dskip = load_or_zero(f.d, ch, live);
  float const dt_bias = delta_bias(f, ch, live);

  for (int n = 0; n < ns; ++n) {
    if (w == W - 1) {  // the last warp alone reads u_carry before the first barrier
      u_carry[n * lanes + lane] = p.d_final != nullptr ? load_or_zero(p.d_final, s * size + n * f.ed + ch, live) : 0.0f;
    }
    if (w == 0) {
      da_acc[n * lanes + lane] = 0.0f;
    }
  }
  float dd = 0.0f;
  unsigned step = 0;
  int pending = -1;  // warp 0: the state whose dA parts wait in da_part[(step - 1) & 1]
  for (std::int64_t k = n_chunks - 1; k >= 0; --k) {
    std::int64_t const tc = t0 + k * tr::chunk;
    int const valid = live ? tokens_before<I>(tc + tok0, t1) : 0;
    std::int64_t const row = (tc + tok0) * f.ed + ch;
    float x[I], dt[I], dtx[I], dy[I], dx[I], ddt[I];  // [I]
    float dt_sum = 0.0f;
#pragma unroll
    for (int i = 0; i < I; ++i) {
      x[i] = i < valid ? __ldg(f.x + row + i * f.ed) : 0.0f;
      dt[i] = i < valid ? delta_of(f, __ldg(f.dt + row + i * f.ed), dt_bias) : 0.0f;
      dy[i] = i < valid ? load_dy_through_gate(p, tc + tok0 + i, ch, __ldg(p.dy + row + i * f.ed), true) : 0.0f;
      dtx[i] = dt[i] * x[i];
      dx[i] = dskip * dy[i];
      ddt[i] = 0.0f;
      dd = fmaf(dy[i], x[i], dd);
      dt_sum += dt[i];
    }
    for (int n0 = 0; n0 < ns; n0 += SW) {
      __syncthreads();  // readers of the previous tile are done; warp 0's u_carry is visible to the last warp
      stage_bc<tr::chunk, SW, tr::threads>(sb, sc, f, tc, t1, n0);
      __syncthreads();
      int const tile = ns - n0 < SW ? ns - n0 : SW;
      for (int j = 0; j < tile; ++j, ++step) {
        int const n = n0 + j;
        float const an = load_or_zero(f.a, n * f.ed + ch, live), a2 = an * log2e;
        float decay[I], inject[I], dyc[I];             // [I]: a_t, dt x B, dy C
        float const total = exp2_approx(a2 * dt_sum);  // Π_t a_t over this thread's tokens
        affine fold{total, 0.0f}, back{total, 0.0f};
#pragma unroll
        for (int i = 0; i < I; ++i) {
          decay[i] = exp2_approx(dt[i] * a2);
          inject[i] = dtx[i] * sb[tok0 + i][j];
          dyc[i] = dy[i] * sc[tok0 + i][j];
          fold.b = fmaf(decay[i], fold.b, inject[i]);
        }
#pragma unroll
        for (int i = I - 1; i >= 0; --i) {
          back.b = decay[i] * (back.b + dyc[i]);
        }
        float h = 0.0f, u = 0.0f;
        if (w == 0) {
          h = load_or_zero(p.ck, (ck0 + k) * size + n * f.ed + ch, live);
          fold = {0.0f, fmaf(fold.a, h, fold.b)};
        }
        if (w == W - 1) {
          u = u_carry[n * lanes + lane];
          back = {0.0f, fmaf(back.a, u, back.b)};
        }
        fwd[step & 1][w][lane] = fold;
        rev[step & 1][w][lane] = back;
        __syncthreads();
        if (w == 0 && pending >= 0) {  // dA of the previous state, summed over warps in a fixed order
          float sum = da_acc[pending * lanes + lane];
#pragma unroll
          for (int v = 0; v < W; ++v) {
            sum += da_part[(step - 1) & 1][v][lane];
          }
          da_acc[pending * lanes + lane] = sum;
        }
        pending = n;
        {
          affine g[W];  // all loads first, then the chain
#pragma unroll
          for (int v = 0; v < W; ++v) {
            g[v] = v < w ? fwd[step & 1][v][lane] : affine{1.0f, 0.0f};
          }
#pragma unroll
          for (int v = 0; v < W; ++v) {
            h = fmaf(g[v].a, h, g[v].b);
          }
#pragma unroll
          for (int v = 0; v < W; ++v) {
            g[v] = v > w ? rev[step & 1][v][lane] : affine{1.0f, 0.0f};
          }
#pragma unroll
          for (int v = W - 1; v >= 0; --v) {
            u = fmaf(g[v].a, u, g[v].b);
          }
        }
        float hs[I + 1];  // [I + 1]: hs[i] = h_{t-1}, hs[i + 1] = h_t for token i
        hs[0] = h;
#pragma unroll
        for (int i = 0; i < I; ++i) {
          hs[i + 1] = fmaf(decay[i], hs[i], inject[i]);
        }
        float red[tr::reduced];  // [2, I]: dB, dC of each token
        float da = 0.0f;
#pragma unroll
        for (int i = I - 1; i >= 0; --i) {
          float const g = dyc[i] + u;     // ∂L/∂h_t
          float const ug = decay[i] * g;  // ∂L/∂h_{t-1} through the recurrence
          float const gah = ug * hs[i];   // g a_t h_{t-1}
          float const gb = g * sb[tok0 + i][j];
          red[i] = g * dtx[i];
          red[I + i] = dy[i] * hs[i + 1];
          ddt[i] = fmaf(an, gah, fmaf(x[i], gb, ddt[i]));
          dx[i] = fmaf(dt[i], gb, dx[i]);
          da = fmaf(dt[i], gah, da);
          u = ug;
        }
        if (w == 0) {
          u_carry[n * lanes + lane] = u;  // read by the last warp in the previous chunk, after a tile barrier
        }
        da_part[step & 1][w][lane] = da;
        float const r = warp_reduce_scatter<tr::reduced>(red, lane);
        if (lane < tr::reduced) {
          int const i = lane % I, kind = lane / I;
          if (tc + tok0 + i < t1) {
            p.partial_bc[((group * 2 + kind) * f.ns + n) * p.tokens + tc + tok0 + i] = r;
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < I; ++i) {
      if (i < valid) {
        p.dx[row + i * f.ed] = dx[i];
        float const slope = f.dt_softplus ? delta_slope(f, __ldg(f.dt + row + i * f.ed), dt_bias) : 1.0f;
        store_ddt(p, row + i * f.ed, ddt[i] * slope);
      }
    }
  }
  dd_part[w][lane] = dd;
  __syncthreads();
  if (w == 0 && live) {
    if (pending >= 0) {
      float sum = da_acc[pending * lanes + lane];
      for (int v = 0; v < W; ++v) {
        sum += da_part[(step - 1) & 1][v][lane];
      }
      da_acc[pending * lanes + lane] = sum;
    }
    float sum = 0.0f;
    for (int v = 0; v < W; ++v) {
      sum += dd_part[v][lane];
    }
    p.partial_dd[s * f.ed + ch] = sum;
    for (int n = 0; n < ns; ++n) {
      p.partial_da[s * size + n * f.ed + ch] = da_acc[n * lanes + lane];
      if (p.d_init != nullptr) {
        p.d_init[s * size + n * f.ed + ch] = u_carry[n * lanes + lane];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Recurrent: one thread per (sequence, channel), a tile of NT states in registers. A block (one warp) covers 32
// channels of one sequence; B and C of each 64-token interval are staged in shared memory (one broadcast read per
// state and token), and x, dt are loaded 16 tokens ahead so their latency overlaps the arithmetic.

inline constexpr int recurrent_threads = 32;  // one warp per block: the few blocks spread over every SM
inline constexpr int recurrent_interval = static_cast<int>(recurrent::checkpoint_interval);
inline constexpr int recurrent_batch = 16;  // tokens whose x, dt are loaded together

template <int NT>
__global__ void __launch_bounds__(recurrent_threads) forward_recurrent_kernel(forward_params p, std::int64_t n0) {
  constexpr int L = recurrent_interval, NB = recurrent_batch;
  __shared__ float sb[L][NT], sc[L][NT];  // [interval, NT]: B, C of the current interval and state tile
  int const lane = static_cast<int>(threadIdx.x);
  std::int64_t const s = blockIdx.x / p.groups;
  std::int64_t const ch = (blockIdx.x % p.groups) * recurrent_threads + lane;
  bool const live = ch < p.ed;
  std::int64_t const t0 = p.offsets[s], t1 = p.offsets[s + 1];
  std::int64_t const n_chunks = (t1 - t0 + L - 1) / L;
  std::int64_t const size = p.ns * p.ed;
  std::int64_t const ck0 = p.ck_offsets[s];
  float const dskip = load_or_zero(p.d, ch, live);
  float const dt_bias = delta_bias(p, ch, live);
  float h[NT], a2[NT];  // [NT]; states past N keep A = 0, B = 0: an identity
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    bool const ok = live && n0 + j < p.ns;
    h[j] = p.init != nullptr ? load_or_zero(p.init, s * size + (n0 + j) * p.ed + ch, ok) : 0.0f;
    a2[j] = load_or_zero(p.a, (n0 + j) * p.ed + ch, ok) * log2e;
  }
  for (std::int64_t k = 0; k < n_chunks; ++k) {
    std::int64_t const tc = t0 + k * L;
    if (p.ck != nullptr && live) {
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        if (n0 + j < p.ns) {
          p.ck[(ck0 + k) * size + (n0 + j) * p.ed + ch] = h[j];
        }
      }
    }
    __syncthreads();  // readers of the previous interval are done
    stage_bc<L, NT, recurrent_threads>(sb, sc, p, tc, t1, n0);
    __syncthreads();
    int const len = t1 - tc < L ? static_cast<int>(t1 - tc) : L;
    for (int tb = 0; tb < len; tb += NB) {
      int const valid = live ? tokens_before<NB>(tc + tb, t1) : 0;
      std::int64_t const row = (tc + tb) * p.ed + ch;
      float dt[NB], dtx[NB], y[NB];  // [NB]; masked tokens: x = dt = 0, an identity step
#pragma unroll
      for (int i = 0; i < NB; ++i) {
        float const x = i < valid ? __ldg(p.x + row + i * p.ed) : 0.0f;
        dt[i] = i < valid ? delta_of(p, __ldg(p.dt + row + i * p.ed), dt_bias) : 0.0f;
        dtx[i] = dt[i] * x;
        y[i] = n0 == 0 ? dskip * x : (i < valid ? p.y[row + i * p.ed] : 0.0f);  // later tiles add to y
      }
#pragma unroll
      for (int i = 0; i < NB; ++i) {
        float y1 = 0.0f;  // two partial sums halve the dependent chain over states
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          int const tok = tb + i;  // < L: tb is at most L - NB
          h[j] = fmaf(exp2_approx(dt[i] * a2[j]), h[j], dtx[i] * sb[tok][j]);
          if (j % 2 == 0) {
            y[i] = fmaf(sc[tok][j], h[j], y[i]);
          } else {
            y1 = fmaf(sc[tok][j], h[j], y1);
          }
        }
        y[i] += y1;
      }
      bool const gate = p.z != nullptr && n0 + NT >= p.ns;  // this launch finishes y
#pragma unroll
      for (int i = 0; i < NB; ++i) {
        if (i < valid) {
          p.y[row + i * p.ed] = y[i];
          if (gate) {
            std::int64_t const t = tc + tb + i;
            store_gated(p, row + i * p.ed, y[i], __ldg(p.z + t * p.ld_z + ch));
          }
        }
      }
    }
  }
  if (p.final_state != nullptr && live) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      if (n0 + j < p.ns) {
        p.final_state[s * size + (n0 + j) * p.ed + ch] = h[j];
      }
    }
  }
}

//! Backward, recurrent: per checkpoint interval, the states are recomputed into a per-thread history (local
//! memory), then the interval is walked backwards. dB/dC of each token are reduced over the warp's 32 channels.
template <int NT>
__global__ void __launch_bounds__(recurrent_threads) backward_recurrent_kernel(backward_params p, std::int64_t n0) {
  forward_params const& f = p.f;
  int const lane = static_cast<int>(threadIdx.x) % lanes;
  std::int64_t const s = blockIdx.x / f.groups;
  std::int64_t const ch = (blockIdx.x % f.groups) * recurrent_threads + threadIdx.x;
  std::int64_t const group = ch / lanes;  // dB/dC partials are per 32 channels
  bool const live = ch < f.ed;
  std::int64_t const t0 = f.offsets[s], t1 = f.offsets[s + 1];
  std::int64_t const n_chunks = (t1 - t0 + recurrent_interval - 1) / recurrent_interval;
  std::int64_t const size = f.ns * f.ed;
  std::int64_t const ck0 = f.ck_offsets[s];
  float const dskip = load_or_zero(f.d, ch, live);
  float const dt_bias = delta_bias(f, ch, live);
  float u[NT], an[NT], da[NT];  // [NT]
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    bool const ok = live && n0 + j < f.ns;
    u[j] = p.d_final != nullptr ? load_or_zero(p.d_final, s * size + (n0 + j) * f.ed + ch, ok) : 0.0f;
    an[j] = load_or_zero(f.a, (n0 + j) * f.ed + ch, ok);
    da[j] = 0.0f;
  }
  float dd = 0.0f;
  float hist[recurrent_interval][NT];  // [interval, NT]: h_{t-1} for each token of the interval
  for (std::int64_t k = n_chunks - 1; k >= 0; --k) {
    std::int64_t const c0 = t0 + k * recurrent_interval;
    std::int64_t const c1 = c0 + recurrent_interval < t1 ? c0 + recurrent_interval : t1;
    float h[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      h[j] = load_or_zero(p.ck, (ck0 + k) * size + (n0 + j) * f.ed + ch, live && n0 + j < f.ns);
    }
    for (std::int64_t t = c0; t < c1; ++t) {
      float const dt = live ? delta_of(f, __ldg(f.dt + t * f.ed + ch), dt_bias) : 0.0f;
      float const dtx = dt * load_or_zero(f.x, t * f.ed + ch, live);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        hist[t - c0][j] = h[j];
        if (n0 + j < f.ns) {
          h[j] = fmaf(exp2_approx(dt * an[j] * log2e), h[j], dtx * __ldg(f.b + t * f.ld_bc + n0 + j));
        }
      }
    }
    for (std::int64_t t = c1 - 1; t >= c0; --t) {
      float const x = load_or_zero(f.x, t * f.ed + ch, live);
      float const dt_in = load_or_zero(f.dt, t * f.ed + ch, live);
      float const dt = live ? delta_of(f, dt_in, dt_bias) : 0.0f;
      float const dy = live ? load_dy_through_gate(p, t, ch, __ldg(p.dy + t * f.ed + ch), n0 == 0) : 0.0f;
      float dx = n0 == 0 ? dskip * dy : (live ? p.dx[t * f.ed + ch] : 0.0f);
      float const ddt_before = n0 == 0 ? 0.0f : (live ? p.ddt[t * f.ed + ch] : 0.0f);  // earlier state tiles' part
      float ddt = 0.0f;  // ∂L/∂Δ from this tile's states
      if (n0 == 0) {
        dd = fmaf(dy, x, dd);
      }
      float red[2 * NT];  // [2, NT]: dB, dC of this token
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        red[j] = 0.0f;
        red[NT + j] = 0.0f;
        if (n0 + j < f.ns) {
          float const bn = __ldg(f.b + t * f.ld_bc + n0 + j), cn = __ldg(f.c + t * f.ld_bc + n0 + j);
          float const decay = exp2_approx(dt * an[j] * log2e);
          float const hp = hist[t - c0][j];
          float const g = fmaf(dy, cn, u[j]);
          float const gah = g * decay * hp;
          red[j] = g * dt * x;
          red[NT + j] = dy * fmaf(decay, hp, dt * x * bn);
          ddt = fmaf(an[j], gah, fmaf(g * x, bn, ddt));
          dx = fmaf(g * dt, bn, dx);
          da[j] = fmaf(dt, gah, da[j]);
          u[j] = decay * g;
        }
      }
      float const r = warp_reduce_scatter<2 * NT>(red, lane);
      if (lane < 2 * NT && n0 + lane % NT < f.ns && group * lanes < f.ed) {  // whole-dead warps have no group
        p.partial_bc[((group * 2 + lane / NT) * f.ns + n0 + lane % NT) * p.tokens + t] = r;
      }
      if (live) {
        p.dx[t * f.ed + ch] = dx;
        store_ddt(p, t * f.ed + ch, fmaf(ddt, delta_slope(f, dt_in, dt_bias), ddt_before));
      }
    }
  }
  if (live) {
    if (n0 == 0) {
      p.partial_dd[s * f.ed + ch] = dd;
    }
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      if (n0 + j < f.ns) {
        p.partial_da[s * size + (n0 + j) * f.ed + ch] = da[j];
        if (p.d_init != nullptr) {
          p.d_init[s * size + (n0 + j) * f.ed + ch] = u[j];
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Fixed-order reductions of the partials: dB/dC over channel groups (written), dA/dD over sequences (accumulated).

template <class T>  // a template, so that the header may be included by several translation units
__global__ void reduce_bc_kernel(T const* partial, std::int64_t groups, std::int64_t ns, std::int64_t tokens, T* db,
                                 T* dc, std::int64_t ld) {
  std::int64_t const total = 2 * ns * tokens;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    std::int64_t const t = i % tokens, n = (i / tokens) % ns, kind = i / (tokens * ns);
    T sum = 0;
    for (std::int64_t g = 0; g < groups; ++g) {
      sum += partial[((g * 2 + kind) * ns + n) * tokens + t];
    }
    (kind == 0 ? db : dc)[t * ld + n] = sum;
  }
}

inline constexpr int reduce_warps = 8;  // warps that share the sequences in reduce_params_kernel

//! dA, dD and (when dbias is not null) dt's bias gradient += their per-sequence partials. A block: 32 consecutive
//! elements, its warps summing contiguous runs of sequences in order, then the runs added in order: a fixed order
//! that reads rows of 32 and keeps many sequences (a long sequence's chunks) from being one thread's chain.
template <class T>
__global__ void __launch_bounds__(lanes* reduce_warps)
    reduce_params_kernel(T const* partial_da, T const* partial_dd, T const* partial_dbias, std::int64_t seqs,
                         std::int64_t size, std::int64_t ed, T* da, T* dd, T* dbias) {
  __shared__ T runs[reduce_warps][lanes];
  int const lane = static_cast<int>(threadIdx.x), warp = static_cast<int>(threadIdx.y);
  std::int64_t const total = size + (dbias != nullptr ? 2 * ed : ed);
  std::int64_t const i = blockIdx.x * std::int64_t{lanes} + lane;
  bool const live = i < total, is_a = i < size, is_d = !is_a && i < size + ed;
  std::int64_t const per = (seqs + reduce_warps - 1) / reduce_warps;
  std::int64_t const s0 = min(seqs, warp * per), s1 = min(seqs, s0 + per);
  T sum = 0;
  if (live) {
    T const* part = is_a ? partial_da + i : is_d ? partial_dd + (i - size) : partial_dbias + (i - size - ed);
    std::int64_t const stride = is_a ? size : ed;
    for (std::int64_t s = s0; s < s1; ++s) {
      sum += part[s * stride];
    }
  }
  runs[warp][lane] = sum;
  __syncthreads();
  if (warp == 0 && live) {
    for (int w = 1; w < reduce_warps; ++w) {
      sum += runs[w][lane];
    }
    T* out = is_a ? da + i : is_d ? dd + (i - size) : dbias + (i - size - ed);
    *out += sum;
  }
}

inline constexpr int ddt_sum_threads = 256;

//! partial[s, d] = Σ of ddt[t, d] over sequence s's tokens, in order: dt's bias gradient for the policies whose
//! backward does not sum it as it writes ddt. Block (sequence s, channels [256 c, 256 c + 256)), c < `tiles`.
template <class T>
__global__ void __launch_bounds__(ddt_sum_threads)
    ddt_sequence_sums_kernel(std::int64_t const* offsets, std::int64_t ed, std::int64_t tiles, T const* ddt,
                             T* partial) {
  std::int64_t const s = blockIdx.x / tiles, t0 = offsets[s], t1 = offsets[s + 1];
  std::int64_t const d = blockIdx.x % tiles * ddt_sum_threads + threadIdx.x;
  if (d < ed) {
    T sum = 0;
    for (std::int64_t t = t0; t < t1; ++t) {
      sum += ddt[t * ed + d];
    }
    partial[s * ed + d] = sum;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Host side: checks, workspace layout, launches.

//! Workspace pieces (byte offsets), for the forward (ck_offsets) and the backward (all).
struct workspace_layout {
  std::size_t ck_offsets = 0, partial_bc = 0, partial_da = 0, partial_dd = 0, partial_dbias = 0, forward_bytes = 0,
              backward_bytes = 0;

  workspace_layout(device_sequences const& seqs, std::int64_t channels, std::int64_t states) {
    auto const count = static_cast<std::size_t>(seqs.count), ed = static_cast<std::size_t>(channels);
    auto const ns = static_cast<std::size_t>(states), groups = (ed + lanes - 1) / lanes;
    partial_bc = ops::cuda::align_bytes((count + 1) * sizeof(std::int64_t));
    forward_bytes = partial_bc;
    partial_da =
        partial_bc + ops::cuda::align_bytes(groups * 2 * ns * static_cast<std::size_t>(seqs.tokens) * sizeof(float));
    partial_dd = partial_da + ops::cuda::align_bytes(count * ns * ed * sizeof(float));
    partial_dbias = partial_dd + ops::cuda::align_bytes(count * ed * sizeof(float));
    backward_bytes = partial_dbias + ops::cuda::align_bytes(count * ed * sizeof(float));
  }
};

inline void check_inputs(device_sequences const& seqs, selective_scan_args<float> const& a) {
  check_arg(seqs.count >= 0, "sequence count", seqs.count, "must be non-negative");
  check_arg(seqs.tokens >= 0, "token count", seqs.tokens, "must be non-negative");
  check_arg(seqs.offsets != nullptr, "sequence offsets", "null", "must point to count + 1 device offsets");
  check_arg(a.channels >= 1, "channels", a.channels, "must be positive");
  check_arg(a.states >= 1 && a.states <= max_states, "states", a.states, "must be in [1, 256]");
  check_arg(a.ld_bc >= a.states, "ld_bc", a.ld_bc, "must be at least the number of states");
  check(a.x != nullptr && a.dt != nullptr && a.a != nullptr && a.b != nullptr && a.c != nullptr && a.d != nullptr,
        "selective scan (cuda): x, dt, a, b, c and d must be device pointers, not null");
  check_delta_args(a);
}

inline void check_forward_args(device_sequences const& seqs, selective_scan_args<float> const& a, float const* y,
                               gate_output const& gate = {}) {
  check_inputs(seqs, a);
  check(y != nullptr, "selective scan (cuda): y must be a device pointer, not null");
  if (gate.z != nullptr) {
    check_arg(gate.ld_z >= a.channels, "gate ld_z", gate.ld_z, "must be at least the number of channels");
    check(gate.gated != nullptr || gate.gated_rounded != nullptr,
          "selective scan (cuda): a gate needs gated or gated_rounded to write");
  }
}

inline void check_backward_args(device_sequences const& seqs, selective_scan_args<float> const& a,
                                float const* checkpoints, selective_scan_grads<float> const& g,
                                gate_gradient const& gate) {
  check_inputs(seqs, a);
  check_arg(g.ld_dbc >= a.states, "ld_dbc", g.ld_dbc, "must be at least the number of states");
  check(checkpoints != nullptr && g.dy != nullptr && g.dx != nullptr && g.ddt != nullptr && g.db != nullptr &&
            g.dc != nullptr && g.da != nullptr && g.dd != nullptr,
        "selective scan backward (cuda): checkpoints, dy, dx, ddt, db, dc, da and dd must not be null");
  if (gate.z != nullptr) {
    check_arg(gate.ld_z >= a.channels, "gate ld_z", gate.ld_z, "must be at least the number of channels");
    check_arg(gate.ld_dz >= a.channels, "gate ld_dz", gate.ld_dz, "must be at least the number of channels");
    check(gate.y != nullptr && (gate.dz != nullptr || gate.dz_rounded != nullptr),
          "selective scan backward (cuda): a gate needs the forward's y and dz or dz_rounded to write");
  }
}

inline std::int64_t block_count(std::int64_t seqs, std::int64_t groups) {
  std::int64_t const blocks = seqs * groups;
  check_arg(blocks <= INT_MAX, "sequences × channel groups", blocks, "must fit a one-dimensional grid (2^31 - 1)");
  return blocks;
}

inline forward_params make_forward_params(device_sequences const& seqs, selective_scan_args<float> const& a,
                                          std::int64_t const* ck_offsets, std::int64_t channels_per_block, float* y,
                                          float* checkpoints, float* final_state, gate_output const& gate = {}) {
  return {.offsets = seqs.offsets,
          .ck_offsets = ck_offsets,
          .ed = a.channels,
          .ns = a.states,
          .ld_bc = a.ld_bc,
          .groups = (a.channels + channels_per_block - 1) / channels_per_block,
          .x = a.x,
          .dt = a.dt,
          .a = a.a,
          .b = a.b,
          .c = a.c,
          .d = a.d,
          .init = a.init_state,
          .y = y,
          .ck = checkpoints,
          .final_state = final_state,
          .dt_bias = a.dt_bias,
          .delta_min = a.delta_min,
          .dt_softplus = a.dt_softplus,
          .z = gate.z,
          .ld_z = gate.ld_z,
          .gated = gate.gated,
          .gated_rounded = gate.gated_rounded};
}

//! The checkpoint offsets for `interval`: those `seqs` carries when made for it, else computed into `out`.
inline std::int64_t const* checkpoint_offsets_for(device_sequences const& seqs, std::int64_t interval,
                                                  std::int64_t* out, cudaStream_t stream) {
  if (seqs.checkpoint_offsets != nullptr && seqs.checkpoint_interval == interval) {
    return seqs.checkpoint_offsets;
  }
  checkpoint_offsets_kernel<256><<<1, 256, 0, stream>>>(seqs.offsets, seqs.count, interval, out);
  cuda_check_launch("checkpoint_offsets_kernel");
  return out;
}

//! What every backward kernel gets: the forward's parameters (blocks of `channels_per_block` channels), the
//! gradients, and its pieces of `ws` (laid out as `layout`), with the checkpoint offsets for `interval` computed
//! into them on `stream`.
inline backward_params make_backward_params(device_sequences const& seqs, selective_scan_args<float> const& a,
                                            float const* checkpoints, selective_scan_grads<float> const& g,
                                            bfloat16* ddt_rounded, gate_gradient const& gate,
                                            workspace_layout const& layout, ops::cuda::scratch& ws,
                                            std::int64_t interval, std::int64_t channels_per_block,
                                            cudaStream_t stream) {
  auto const* ck_offsets = checkpoint_offsets_for(seqs, interval, ws.at<std::int64_t>(layout.ck_offsets), stream);
  return {make_forward_params(seqs, a, ck_offsets, channels_per_block, nullptr, nullptr, nullptr),
          seqs.tokens,
          checkpoints,
          g.dy,
          g.d_final_state,
          g.dx,
          g.ddt,
          g.d_init_state,
          ddt_rounded,
          ws.at<float>(layout.partial_bc),
          ws.at<float>(layout.partial_da),
          ws.at<float>(layout.partial_dd),
          g.d_dt_bias != nullptr ? ws.at<float>(layout.partial_dbias) : nullptr,
          gate};
}

//! The fixed-order reductions that finish a backward: dB, dC over channel groups, and dA, dD (and dt's bias gradient
//! when asked for) over sequences. `dbias_summed`: the backward kernel wrote partial_dbias itself; else it is summed
//! here from ddt.
inline void launch_reductions(backward_params const& p, selective_scan_grads<float> const& g, std::int64_t bc_groups,
                              std::int64_t seqs, cudaStream_t stream, bool dbias_summed = false) {
  std::int64_t const bc_total = 2 * p.f.ns * p.tokens;
  if (bc_total > 0) {
    reduce_bc_kernel<float><<<ops::cuda::grid_blocks(bc_total, 256, 4096), 256, 0, stream>>>(
        p.partial_bc, bc_groups, p.f.ns, p.tokens, g.db, g.dc, g.ld_dbc);
    cuda_check_launch("reduce_bc_kernel");
  }
  if (g.d_dt_bias != nullptr && !dbias_summed && seqs > 0) {
    std::int64_t const tiles = (p.f.ed + ddt_sum_threads - 1) / ddt_sum_threads;  // at most the scan's groups
    ddt_sequence_sums_kernel<float><<<static_cast<unsigned>(seqs * tiles), ddt_sum_threads, 0, stream>>>(
        p.f.offsets, p.f.ed, tiles, g.ddt, p.partial_dbias);
    cuda_check_launch("ddt_sequence_sums_kernel");
  }
  std::int64_t const size = p.f.ns * p.f.ed, total = size + (g.d_dt_bias != nullptr ? 2 : 1) * p.f.ed;
  reduce_params_kernel<float>
      <<<static_cast<unsigned>((total + lanes - 1) / lanes), dim3(lanes, reduce_warps), 0, stream>>>(
          p.partial_da, p.partial_dd, p.partial_dbias, seqs, size, p.f.ed, g.da, g.dd, g.d_dt_bias);
  cuda_check_launch("reduce_params_kernel");
}

template <class Kernel>
void allow_shared_memory(Kernel kernel, std::size_t dynamic_bytes) {
  if (dynamic_bytes > 48 * 1024) {
    cuda_check(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(dynamic_bytes)),
        "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  }
}

template <class Body>
void dispatch_state_tile(std::int64_t states, Body&& body) {
  if (states <= 4) {
    body.template operator()<4>();
  } else if (states <= 8) {
    body.template operator()<8>();
  } else {
    body.template operator()<16>();
  }
}

}  // namespace detail

//! Device workspace bytes the forward needs (pass at least this much, or null to allocate per call).
inline std::size_t forward_workspace_bytes(device_sequences const& seqs, std::int64_t channels, std::int64_t states) {
  return detail::workspace_layout(seqs, channels, states).forward_bytes;
}
//! Device workspace bytes the backward needs: mostly dB/dC partials, 8·N·T·ceil(ED/32) bytes.
inline std::size_t backward_workspace_bytes(device_sequences const& seqs, std::int64_t channels, std::int64_t states) {
  return detail::workspace_layout(seqs, channels, states).backward_bytes;
}

//! Device workspace bytes both directions of a policy need, for a caller that keeps one workspace for both (the
//! Mamba block); chunked<C> (chunked.cuh) needs more than the others.
template <class Policy>
std::size_t workspace_bytes(Policy, device_sequences const& seqs, std::int64_t channels, std::int64_t states) {
  detail::workspace_layout const layout(seqs, channels, states);
  return std::max(layout.forward_bytes, layout.backward_bytes);
}

//! Forward scan. y [T, ED] is written; checkpoints ([Σ_s ceil(len_s / interval), N, ED]) and final_state
//! ([S, N, ED]) are written when not null, and the gated output when `gate` has a z. `a.seqs` (host metadata) is not
//! read: `seqs` gives the device offsets. All pointers are device pointers; the call is asynchronous on `be.stream`.
template <int W, int I>
void selective_scan_forward(block_parallel<W, I>, backends::cuda const& be, device_sequences const& seqs,
                            selective_scan_args<float> const& a, float* y, float* checkpoints, float* final_state,
                            void* workspace = nullptr, gate_output const& gate = {}) {
  detail::check_forward_args(seqs, a, y, gate);
  detail::workspace_layout const layout(seqs, a.channels, a.states);
  ops::cuda::scratch ws(workspace, layout.forward_bytes, be.stream);
  auto const* ck_offsets = detail::checkpoint_offsets_for(seqs, block_parallel<W, I>::chunk,
                                                          ws.at<std::int64_t>(layout.ck_offsets), be.stream);
  auto const p = detail::make_forward_params(seqs, a, ck_offsets, detail::lanes, y, checkpoints, final_state, gate);
  std::int64_t const blocks = detail::block_count(seqs.count, p.groups);
  if (blocks == 0) {
    return;
  }
  std::size_t const shared = static_cast<std::size_t>(a.states) * detail::lanes * sizeof(float);
  auto kernel = detail::forward_block_kernel<W, I>;
  detail::allow_shared_memory(kernel, shared);
  kernel<<<static_cast<unsigned>(blocks), detail::block_traits<W, I>::threads, shared, be.stream>>>(p);
  backends::cuda_check_launch("forward_block_kernel");
}

//! Backward from the forward's checkpoints: writes dx, ddt, dB, dC (and d_init_state when not null), adds to dA and dD.
//! ddt_rounded ([T, ED], or null): ddt's bf16 rounding written beside it, for the bf16 GEMMs that read it.
template <int W, int I>
void selective_scan_backward(block_parallel<W, I>, backends::cuda const& be, device_sequences const& seqs,
                             selective_scan_args<float> const& a, float const* checkpoints,
                             selective_scan_grads<float> const& g, void* workspace = nullptr,
                             bfloat16* ddt_rounded = nullptr, gate_gradient const& gate = {}) {
  detail::check_backward_args(seqs, a, checkpoints, g, gate);
  detail::workspace_layout const layout(seqs, a.channels, a.states);
  ops::cuda::scratch ws(workspace, layout.backward_bytes, be.stream);
  auto const p = detail::make_backward_params(seqs, a, checkpoints, g, ddt_rounded, gate, layout, ws,
                                              block_parallel<W, I>::chunk, detail::lanes, be.stream);
  std::int64_t const blocks = detail::block_count(seqs.count, p.f.groups);
  if (blocks > 0) {
    std::size_t const shared = 2 * static_cast<std::size_t>(a.states) * detail::lanes * sizeof(float);
    using shape = detail::backward_shape<W, I>;  // same chunk, at most 8 tokens per thread
    auto kernel = detail::backward_block_kernel<shape::warps, shape::items>;
    detail::allow_shared_memory(kernel, shared);
    kernel<<<static_cast<unsigned>(blocks), detail::block_traits<shape::warps, shape::items>::threads, shared,
             be.stream>>>(p);
    backends::cuda_check_launch("backward_block_kernel");
  }
  detail::launch_reductions(p, g, p.f.groups, seqs.count, be.stream);
}

//! Recurrent forward; same contract as the block_parallel overload, checkpoints every 64 tokens.
inline void selective_scan_forward(recurrent, backends::cuda const& be, device_sequences const& seqs,
                                   selective_scan_args<float> const& a, float* y, float* checkpoints,
                                   float* final_state, void* workspace = nullptr, gate_output const& gate = {}) {
  detail::check_forward_args(seqs, a, y, gate);
  detail::workspace_layout const layout(seqs, a.channels, a.states);
  ops::cuda::scratch ws(workspace, layout.forward_bytes, be.stream);
  auto const* ck_offsets = detail::checkpoint_offsets_for(seqs, recurrent::checkpoint_interval,
                                                          ws.at<std::int64_t>(layout.ck_offsets), be.stream);
  auto const p =
      detail::make_forward_params(seqs, a, ck_offsets, detail::recurrent_threads, y, checkpoints, final_state, gate);
  std::int64_t const blocks = detail::block_count(seqs.count, p.groups);
  if (blocks == 0) {
    return;
  }
  detail::dispatch_state_tile(a.states, [&]<int NT>() {
    for (std::int64_t n0 = 0; n0 < a.states; n0 += NT) {  // later tiles add to y, in order
      detail::forward_recurrent_kernel<NT>
          <<<static_cast<unsigned>(blocks), detail::recurrent_threads, 0, be.stream>>>(p, n0);
      backends::cuda_check_launch("forward_recurrent_kernel");
    }
  });
}

inline void selective_scan_backward(recurrent, backends::cuda const& be, device_sequences const& seqs,
                                    selective_scan_args<float> const& a, float const* checkpoints,
                                    selective_scan_grads<float> const& g, void* workspace = nullptr,
                                    bfloat16* ddt_rounded = nullptr, gate_gradient const& gate = {}) {
  detail::check_backward_args(seqs, a, checkpoints, g, gate);
  detail::workspace_layout const layout(seqs, a.channels, a.states);
  ops::cuda::scratch ws(workspace, layout.backward_bytes, be.stream);
  auto const p = detail::make_backward_params(seqs, a, checkpoints, g, ddt_rounded, gate, layout, ws,
                                              recurrent::checkpoint_interval, detail::recurrent_threads, be.stream);
  std::int64_t const blocks = detail::block_count(seqs.count, p.f.groups);
  if (blocks > 0) {
    detail::dispatch_state_tile(a.states, [&]<int NT>() {
      for (std::int64_t n0 = 0; n0 < a.states; n0 += NT) {  // later tiles add to dx, ddt, in order
        detail::backward_recurrent_kernel<NT>
            <<<static_cast<unsigned>(blocks), detail::recurrent_threads, 0, be.stream>>>(p, n0);
        backends::cuda_check_launch("backward_recurrent_kernel");
      }
    });
  }
  detail::launch_reductions(p, g, (a.channels + detail::lanes - 1) / detail::lanes, seqs.count, be.stream);
}

}  // namespace ssmlen::scan::cuda
