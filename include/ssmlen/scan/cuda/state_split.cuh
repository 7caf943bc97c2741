// SPDX-License-Identifier: Apache-2.0
//! @file state_split.cuh
//! The `state_split<NT>` scan policy for CUDA: the recurrent forward with the states of each channel split over
//! warps, so that a (sequence, channel) pair runs on N / NT threads instead of one.
//!
//! Why: the forward of the Mamba-1 scan at N = 16 is bound by its exponentials (one exp(Δ·A) per token, channel and
//! state) and by issue, not by bytes. A recurrence per (sequence, channel, state) needs no cross-thread scan at all:
//! about 7 instructions per token and state (exp, the state update, the C·h term and a share of the loads; 13–15
//! as built, docs/perf.md), against 16 in block_parallel, whose cross-warp prefix and carry cost as much as the
//! recurrence itself. Splitting the states over warps gives N / NT times the threads of `recurrent` (enough warps to
//! keep the exponential units busy at training shapes) and keeps each thread's states in registers.
//!
//! Layout: a block per (sequence, 32 channels); lane = channel, warp w = states [n0 + w·NT, n0 + (w + 1)·NT).
//! B and C of each 64-token interval are staged in shared memory (read back as uniform, broadcast vector loads).
//! x and Δ go through shared memory in batches of 16 tokens, each warp loading its share of the next batch while the
//! current one is scanned. Each warp's C·h sums (plus D·x in warp 0) go to shared memory; after one barrier per batch
//! every warp adds up its tokens' sums over the warps and writes y. At most 16 states per launch (8 warps of NT = 2,
//! 2 of NT = 8); more states run in several launches, each adding to y.
//! NT = 4, the default, has a forward of its own (`forward_quad_kernel`, below): the 16 states of a launch on 4
//! lanes of one warp, summed by shuffles, about 1.25× faster at the 130M shape.
//!
//! The forward keeps the state entering every 8th token (checkpoints every 8 tokens: [T / 8] rows of N · ED floats,
//! 8 times the other policies' memory, each row with its states in groups of 4: `checkpoint_at`); the backward splits
//! the states the same way (4 per thread) and recomputes each 8-token batch from its checkpoint (below). Measured
//! speeds: docs/perf.md.
#pragma once

#include <ssmlen/scan/cuda/selective_scan.cuh>

#include <cuda_pipeline_primitives.h>

#include <algorithm>
#include <cstdint>
#include <string>

namespace ssmlen::scan::cuda {

//! States per thread NT (1, 2, 4 or 8); checkpoints every 8 tokens, the backward's batch, so that it recomputes
//! each state once (with 64 it recomputed every state twice). NT = 4, the default, is the fastest forward and
//! forward+backward measured with these checkpoints, at the 130M shape and the headline's: docs/perf.md.
template <int NT = 4>
struct state_split {
  static_assert(NT == 1 || NT == 2 || NT == 4 || NT == 8, "states per thread: 1, 2, 4 or 8");
  static constexpr algorithm kind = algorithm::recurrent;  // one token after another, per state
  static constexpr int states_per_thread = NT;
  static constexpr std::int64_t checkpoint_interval = 8;
  static std::string name() { return "state_split<" + std::to_string(NT) + ">"; }
  friend constexpr bool operator==(state_split, state_split) { return true; }
};

static_assert(policy<state_split<>>);

namespace detail {

inline constexpr int split_interval = 64;    // tokens whose B, C are staged together
inline constexpr int split_batch = 16;       // tokens whose x, Δ are loaded together
inline constexpr int split_max_states = 16;  // states per launch: B, C, the warps' shares and x, Δ fit 48 KB

//! Where state n of channel ch sits in a row of state_split's checkpoints. A row holds N · ED floats like the other
//! policies' rows, but in groups of 4 states, [⌈N / 4⌉][ED][4] (the last group [ED][N mod 4] where N % 4 ≠ 0), so
//! that a thread's 4 states of a channel (from a multiple of 4) lie side by side: the forward stores them as one
//! 16-byte vector and the backward loads them at fixed offsets from one address, where [N][ED] took an address
//! computation per state.
__host__ __device__ inline std::int64_t checkpoint_at(std::int64_t n, std::int64_t ch, std::int64_t ns,
                                                      std::int64_t ed) {
  std::int64_t const g0 = n / 4 * 4, width = ns - g0 < 4 ? ns - g0 : 4;
  return g0 * ed + ch * width + (n - g0);
}

//! Streaming multiprocessors of the current device (cudaDeviceGetAttribute is a cheap lookup, unlike
//! cudaGetDeviceProperties, so it is not cached).
inline int sm_count() {
  int device = 0, count = 0;
  cuda_check(cudaGetDevice(&device), "cudaGetDevice");
  cuda_check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  return count;
}

//! NT consecutive floats of a shared-memory row, as vector loads where NT allows.
template <int NT>
__device__ inline void load_states(float const* row, float (&out)[NT]) {
  if constexpr (NT % 4 == 0) {
#pragma unroll
    for (int j = 0; j < NT; j += 4) {
      float4 const v = *reinterpret_cast<float4 const*>(row + j);
      out[j] = v.x, out[j + 1] = v.y, out[j + 2] = v.z, out[j + 3] = v.w;
    }
  } else if constexpr (NT == 2) {
    float2 const v = *reinterpret_cast<float2 const*>(row);
    out[0] = v.x, out[1] = v.y;
  } else {
    out[0] = row[0];
  }
}

//! B, C of `Rows` tokens and one launch's S states ([Rows, S], element e = threadIdx.x + k · Threads), carried in
//! registers from their loads to their shared-memory stores. A scan loads the next interval's rows while it still
//! reads the current ones and stores them once a barrier has freed those rows, so the loads' latency hides behind a
//! batch of the scan instead of stalling every warp at the start of each interval.
template <int Rows, int S, int Threads>
struct bc_rows {
  static constexpr int count = (Rows * S + Threads - 1) / Threads;
  float b[count], c[count];

  //! Rows of tokens [t_first, t_first + Rows) and states [n0, n0 + S); zeros past t1 and past N.
  __device__ void load(forward_params const& p, std::int64_t t_first, std::int64_t t1, std::int64_t n0) {
#pragma unroll
    for (int k = 0; k < count; ++k) {
      int const e = static_cast<int>(threadIdx.x) + k * Threads;
      std::int64_t const t = t_first + e / S, n = n0 + e % S;
      bool const ok = (Rows * S % Threads == 0 || e < Rows * S) && t < t1 && n < p.ns;
      b[k] = load_or_zero(p.b, t * p.ld_bc + n, ok);
      c[k] = load_or_zero(p.c, t * p.ld_bc + n, ok);
    }
  }
  //! Into rows [row0, row0 + Rows) of the [interval, S] tiles.
  __device__ void store(float (*sb)[S], float (*sc)[S], int row0) const {
#pragma unroll
    for (int k = 0; k < count; ++k) {
      int const e = static_cast<int>(threadIdx.x) + k * Threads;
      if (Rows * S % Threads == 0 || e < Rows * S) {
        sb[row0 + e / S][e % S] = b[k];
        sc[row0 + e / S][e % S] = c[k];
      }
    }
  }
  //! Into rows [row0, row0 + Rows) of an [interval, S] tile of (B, C) pairs.
  __device__ void store_pairs(float2 (*sbc)[S], int row0) const {
#pragma unroll
    for (int k = 0; k < count; ++k) {
      int const e = static_cast<int>(threadIdx.x) + k * Threads;
      if (Rows * S % Threads == 0 || e < Rows * S) {
        sbc[row0 + e / S][e % S] = make_float2(b[k], c[k]);
      }
    }
  }
};

//! A thread's place in a state_split block, the same in the forward and the backward: lane = channel ch of channel
//! group `group`, warp w = states [my_n0, my_n0 + NT) of sequence s (tokens [t0, t1), n_intervals intervals of
//! split_interval, first checkpoint ck0); dskip = D of the channel for warp 0 of the first launch (D·x, D·dy join
//! its share), else 0; dt_bias = Δ's bias with the fused softplus, else 0.
struct split_thread {
  int lane, w;
  std::int64_t s, group, ch;
  bool live;
  std::int64_t t0, t1, n_intervals;
  std::int64_t size;  // one state: [N, ED]
  std::int64_t ck0, my_n0;
  float dskip, dt_bias;
};

template <int NT>
__device__ inline split_thread split_thread_of(forward_params const& p, std::int64_t n0) {
  split_thread t{};
  t.lane = static_cast<int>(threadIdx.x) % lanes, t.w = static_cast<int>(threadIdx.x) / lanes;
  t.s = blockIdx.x / p.groups, t.group = blockIdx.x % p.groups;
  t.ch = t.group * lanes + t.lane;
  t.live = t.ch < p.ed;
  t.t0 = p.offsets[t.s], t.t1 = p.offsets[t.s + 1];
  t.n_intervals = (t.t1 - t.t0 + split_interval - 1) / split_interval;
  t.size = p.ns * p.ed;
  t.ck0 = p.ck_offsets[t.s];
  t.my_n0 = n0 + std::int64_t{t.w} * NT;
  t.dskip = n0 == 0 && t.w == 0 ? load_or_zero(p.d, t.ch, t.live) : 0.0f;
  t.dt_bias = delta_bias(p, t.ch, t.live);
  return t;
}

//! What both forwards hold of states [n0, n0 + NT) of channel ch in sequence s before the walk: A log2(e) and the
//! initial state (0 without one). States past N (and a dead channel's) get A = 0 and h = 0, with B = 0 in the walk
//! an identity that adds nothing to y.
template <int NT>
__device__ inline void load_walk_start(forward_params const& p, std::int64_t s, std::int64_t n0, std::int64_t ch,
                                       bool live, float (&h)[NT], float (&a2)[NT]) {
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    bool const ok = live && n0 + j < p.ns;
    std::int64_t const at = (n0 + j) * p.ed + ch;
    h[j] = p.init != nullptr ? load_or_zero(p.init, s * p.ns * p.ed + at, ok) : 0.0f;
    a2[j] = load_or_zero(p.a, at, ok) * log2e;
  }
}

//! The final states [n0, n0 + NT) of channel ch in sequence s, when asked for.
template <int NT>
__device__ inline void store_final_states(forward_params const& p, std::int64_t s, std::int64_t n0, std::int64_t ch,
                                          bool live, float const (&h)[NT]) {
  if (p.final_state != nullptr && live) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      if (n0 + j < p.ns) {
        p.final_state[s * p.ns * p.ed + (n0 + j) * p.ed + ch] = h[j];
      }
    }
  }
}

// With 8 warps, MinBlocks 3 or 4 caps the registers at 80 or 64: 3 or 4 blocks per SM. The launch takes 4 for grids
// of more than 3 blocks per SM (then one wave instead of 1.3 at the headline's shape) and 3 otherwise (more
// registers, faster at the 130M shape). 2 or 4 warps cap at 128 registers (MinBlocks 16 / WG); one warp, none.
template <int NT, int WG, int MinBlocks>
__global__ void __launch_bounds__(WG* lanes, MinBlocks) forward_state_split_kernel(forward_params p, std::int64_t n0) {
  constexpr int L = split_interval, NB = split_batch, S = WG * NT;
  static_assert(NB % WG == 0, "each warp finishes NB / WG tokens of a batch");
  __shared__ __align__(16) float sb[L][S], sc[L][S];  // [interval, S]: B, C of this launch's states
  __shared__ float partial[2][WG][NB][lanes];         // [buffer, warp, token, lane]: each warp's share of y
  __shared__ float2 xdt[2][NB][lanes];                // [buffer, token, lane]: x, Δ of a batch
  auto const [lane, w, s, group, ch, live, t0, t1, n_intervals, size, ck0, my_n0, dskip, dt_bias] =
      split_thread_of<NT>(p, n0);         // D·x joins warp 0's share in the first launch; later ones add to y
  int const ed = static_cast<int>(p.ed);  // < 2^26 (checked on the host): i · ed fits 32 bits
  float h[NT], a2[NT];                    // [NT]
  load_walk_start(p, s, my_n0, ch, live, h, a2);
  // x, Δ of a batch are loaded once per block: warp w issues its loads of tokens [w·NB/WG, (w + 1)·NB/WG) of the
  // batch after next while the current one is scanned, and stores them in shared memory, for every warp, a batch
  // later, Δ made from dt there. Masked tokens (past the sequence, dead lanes) get x = Δ = 0, an identity step.
  constexpr int mine_count = NB / WG;
  int const mine_first = w * mine_count;
  auto load_mine = [&](std::int64_t t, float2(&v)[mine_count]) {
    int const valid = live ? tokens_before<NB>(t, t1) : 0;
    float const* xr = p.x + (t + mine_first) * p.ed + ch;
    float const* dr = p.dt + (t + mine_first) * p.ed + ch;
#pragma unroll
    for (int r = 0; r < mine_count; ++r) {
      bool const ok = mine_first + r < valid;
      v[r] = make_float2(ok ? __ldg(xr + r * ed) : 0.0f, ok ? __ldg(dr + r * ed) : 0.0f);
    }
  };
  auto store_mine = [&](int b, std::int64_t t, float2 const(&v)[mine_count]) {
    int const valid = live ? tokens_before<NB>(t, t1) : 0;
#pragma unroll
    for (int r = 0; r < mine_count; ++r) {
      xdt[b][mine_first + r][lane] = make_float2(v[r].x, mine_first + r < valid ? delta_of(p, v[r].y, dt_bias) : 0.0f);
    }
  };
  constexpr int ck_every = static_cast<int>(state_split<NT>::checkpoint_interval);
  static_assert(NB % ck_every == 0, "checkpoints fall on the same tokens of every batch");
  bool const write_ck = p.ck != nullptr && live;
  int const my_states = static_cast<int>(std::clamp<std::int64_t>(p.ns - my_n0, 0, NT));  // states < N
  float2 next[mine_count], after[mine_count];  // [NB / WG]: this warp's tokens of the next batch and the one after
  bool const gate = p.z != nullptr && n0 + S >= p.ns;  // this launch finishes y: it writes the gated output too
  load_mine(t0, next);
  store_mine(0, t0, next);  // visible after the first barrier
  if (t0 + NB < t1) {
    load_mine(t0 + NB, next);
  }
  stage_bc<L, S, WG * lanes>(sb, sc, p, t0, t1, n0);  // the first interval's B, C; later ones come row by row
  __syncthreads();
  bc_rows<NB, S, WG * lanes> coming;  // the next interval's B, C for the rows of this batch
  int buf = 0;
  for (std::int64_t k = 0; k < n_intervals; ++k) {
    std::int64_t const tc = t0 + k * L;
    bool const ahead = k + 1 < n_intervals;  // then this interval is whole: every batch below runs
    int const len = t1 - tc < L ? static_cast<int>(t1 - tc) : L;
    for (int tb = 0; tb < len; tb += NB) {
      std::int64_t const t = tc + tb;
      if (t + 2 * NB < t1) {
        load_mine(t + 2 * NB, after);  // issued a batch before the store below needs it
      }
      if (ahead) {
        coming.load(p, t + L, t1, n0);  // the same rows of the next interval
      }
      float zv[NB / WG];  // [NB / WG]: z of the tokens this thread finishes below, loaded while the batch is scanned
      if (gate) {
#pragma unroll
        for (int r = 0; r < NB / WG; ++r) {
          zv[r] = load_or_zero(p.z, (t + r * WG + w) * p.ld_z + ch, live && t + r * WG + w < t1);
        }
      }
      float* const share = &partial[buf][w][0][lane];
#pragma unroll
      for (int i = 0; i < NB; ++i) {
        if (i % ck_every == 0 && write_ck && t + i < t1) {  // the state entering token t + i
          float* const ck = p.ck + (ck0 + (t - t0 + i) / ck_every) * size;
#pragma unroll
          for (int j = 0; j < NT; ++j) {
            if (j < my_states) {
              ck[checkpoint_at(my_n0 + j, ch, p.ns, p.ed)] = h[j];
            }
          }
        }
        float2 const v = xdt[buf][i][lane];  // x, Δ
        float const dtx = v.y * v.x;
        float bv[NT], cv[NT];
        load_states<NT>(&sb[tb + i][w * NT], bv);
        load_states<NT>(&sc[tb + i][w * NT], cv);
        float y = dskip * v.x;  // this warp's share: Σ_j C h over its NT states (+ D x in warp 0)
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          h[j] = fmaf(exp2_approx(v.y * a2[j]), h[j], dtx * bv[j]);
          y = fmaf(cv[j], h[j], y);
        }
        share[i * lanes] = y;
      }
      if (t + NB < t1) {
        store_mine(buf ^ 1, t + NB, next);  // that buffer's last readers finished before the previous barrier
#pragma unroll
        for (int r = 0; r < mine_count; ++r) {
          next[r] = after[r];  // waits for the loads; an unrolled version without the copy measured slower
        }
      }
      __syncthreads();  // every warp's share of this batch, and the next batch's x, Δ, are in
      if (ahead) {
        coming.store(sb, sc, tb);  // every warp has read this batch's rows; the next interval reads them after
      }                            // at least one more barrier
      int const valid = live ? tokens_before<NB>(t, t1) : 0;
      float* const yr = p.y + t * p.ed + ch;
#pragma unroll
      for (int r = 0; r < NB / WG; ++r) {
        int const i = r * WG + w;  // warp w finishes tokens w, w + WG, ...
        if (i < valid) {
          float sum = n0 == 0 ? 0.0f : yr[i * ed];
#pragma unroll
          for (int g = 0; g < WG; ++g) {
            sum += partial[buf][g][i][lane];
          }
          yr[i * ed] = sum;
          if (gate) {
            store_gated(p, (t + i) * p.ed + ch, sum, zv[r]);
          }
        }
      }
      buf ^= 1;  // the next batch uses the other buffers; the barrier above orders their reuse after next
    }
  }
  store_final_states(p, s, my_n0, ch, live, h);
}

// ---------------------------------------------------------------------------------------------------------------
// Forward with NT = 4, by quads of lanes: the 16 states of a launch spread over 4 lanes of one warp, lane = 8 q + c
// (channel c of the warp's 8, states [4 q, 4 q + 4)). A block is 4 warps, the same 32 channels as the other forward.
// Why: with a channel's states on four warps, each token's sum of C·h over the states went through shared memory
// and a barrier, and x, Δ, B, C were read by every warp; on four lanes of one warp the sum is a reduce-scatter of
// 3 shuffles per 4 tokens, after which lane q owns token 4 g + q of each quad of tokens (its y, D·x, gate and
// store), and the per-token work around the 4 states' recurrences is about 4 instructions instead of about 10.
// Δ and Δ x (made from x and dt as they are staged), x, and B, C of a 32-token batch go through shared memory, loaded
// by the whole block a batch ahead (by asynchronous copies where the rows are 16-byte aligned, else into registers) and
// stored once the batch is scanned: one barrier per batch.

inline constexpr int quad_batch = 32;   // tokens staged together
inline constexpr int quad_warps = 4;    // warps per block: 32 channels of 8 lanes × 4 quads
inline constexpr int quad_states = 16;  // states per launch: 4 per lane

//! A read-only global load (0 where !ok) that keeps its place in the PTX: NVVM sinks a plain load of the next batch
//! to just before its first use, past the batch's scan, to free its register for the scan. ptxas may still schedule
//! it late (measured 1–3 % faster than plain loads); the aligned path below stages by asynchronous copies instead.
__device__ inline float load_issued_here(float const* p, bool ok) {
  float v;
  asm volatile(
      "{\n\t.reg .pred q;\n\tsetp.ne.b32 q, %2, 0;\n\tmov.f32 %0, 0f00000000;\n\t@q ld.global.nc.f32 %0, [%1];\n\t}"
      : "=f"(v)
      : "l"(p), "r"(static_cast<int>(ok)));
  return v;
}

//! Σ over the 4 lanes of a quad (lanes 8 q + c, q = 0..3) of part[i], scattered: lane q gets token i = q's sum.
__device__ inline float quad_sum_scatter(float const (&part)[4], int q) {
  bool const hi = (q & 2) != 0, lo = (q & 1) != 0;
  float const keep0 = hi ? part[2] : part[0], keep1 = hi ? part[3] : part[1];  // tokens 2 hi, 2 hi + 1
  float const send0 = hi ? part[0] : part[2], send1 = hi ? part[1] : part[3];
  float const k0 = keep0 + __shfl_xor_sync(0xffffffffu, send0, 16);
  float const k1 = keep1 + __shfl_xor_sync(0xffffffffu, send1, 16);
  return (lo ? k1 : k0) + __shfl_xor_sync(0xffffffffu, lo ? k0 : k1, 8);
}

//! Aligned: N, ED, ld_bc and ld_z multiples of 4 and x, dt, B, C, z and the checkpoints 16-byte aligned. Then each
//! checkpoint of a lane's 4 states is one vector store, and the next batch is staged by 16-byte asynchronous copies
//! issued at the top of a batch (x and dt into raw rows, B, C and z into their tiles; masked pieces zero-filled), Δ
//! made from the raw rows by the thread that copied them once they land. Otherwise each thread loads the next batch
//! into registers and stores it after the scan. Why: ptxas schedules the register loads late in the batch (to hold
//! their registers for less of the scan), and every warp of an SM then waits for them at once at the batch's end (17 %
//! of the stall samples at the 130M shape); an asynchronous copy holds no register, so it stays where it is issued.
template <int MinBlocks, bool Aligned>
__global__ void __launch_bounds__(quad_warps* lanes, MinBlocks) forward_quad_kernel(forward_params p, std::int64_t n0) {
  constexpr int NB = quad_batch, S = quad_states, threads = quad_warps * lanes;
  constexpr int xrows = NB * lanes / threads, bcs = NB * S / threads;  // staged per thread: x, dt rows; B, C values
  constexpr int ck_every = static_cast<int>(state_split<4>::checkpoint_interval);
  static_assert(NB % ck_every == 0 && NB % 4 == 0, "checkpoints and quads fall on the same tokens of every batch");
  __shared__ __align__(16) float sb[2][NB][S], sc[2][NB][S];  // [buffer, token, state]: B, C of this launch's states
  // [buffer, token, channel of the block]: Δ and Δ x, which the scan reads (Δ x made once per token and channel, not
  // once per lane of its quad), and x, which only the skip term D x reads
  __shared__ __align__(16) float2 xdt[2][NB][lanes];
  __shared__ __align__(16) float x_s[2][NB][lanes];
  __shared__ __align__(16) float raw_dt[Aligned ? NB : 1][lanes];  // dt's copies landing (Aligned; x's land in x_s)
  // [buffer, token, channel]: the gate's z, copied with the rest (Aligned); rows of 40 floats, so that the 4 lanes of
  // a channel (tokens 4 g + q) read 4 different banks
  __shared__ __align__(16) float zs[Aligned ? 2 : 1][Aligned ? NB : 1][40];
  __shared__ __align__(16) float bias_s[lanes];  // Δ's bias of the block's channels (Aligned, with the softplus)
  int const tid = static_cast<int>(threadIdx.x), lane = tid % lanes, w = tid / lanes;
  int const q = lane / 8, cb = w * 8 + lane % 8;  // states [4 q, 4 q + 4) of the block's channel cb
  std::int64_t const s = blockIdx.x / p.groups, group = blockIdx.x % p.groups;
  std::int64_t const ch = group * lanes + cb;
  bool const live = ch < p.ed;
  std::int64_t const t0 = p.offsets[s], t1 = p.offsets[s + 1];
  std::int64_t const size = p.ns * p.ed, my_n0 = n0 + 4 * q;  // one state: [N, ED]
  int const ed = static_cast<int>(p.ed);  // < 2^26 (checked on the host): offsets of a batch's rows fit 32 bits
  int const my_states = static_cast<int>(std::clamp<std::int64_t>(p.ns - my_n0, 0, 4));
  float h[4], a2[4];
  load_walk_start(p, s, my_n0, ch, live, h, a2);
  float const dskip = n0 == 0 ? load_or_zero(p.d, ch, live) : 0.0f;  // later launches add to y
  bool const gate = p.z != nullptr && n0 + S >= p.ns;                // this launch finishes y
  bool const write_ck = p.ck != nullptr && live && my_states > 0;
  float* ck = write_ck ? p.ck + p.ck_offsets[s] * size + checkpoint_at(my_n0, ch, p.ns, p.ed) : nullptr;

  // Staging, by pointers advanced a batch at a time: thread (r0, sc_ch) moves x, dt of the block's channel sc_ch,
  // tokens r0 + 4 k, and B, C of state n0 + bn, tokens br0 + 8 k. Masked tokens (past the sequence, dead channels)
  // get x = Δ = 0 and B = C = 0, an identity step.
  int const sc_ch = tid % lanes, r0 = tid / lanes, bn = tid % S, br0 = tid / S;
  std::int64_t const stage_ch = group * lanes + sc_ch;
  bool const stage_live = stage_ch < p.ed, bc_live = n0 + bn < p.ns;
  float const stage_bias = delta_bias(p, stage_ch, stage_live);
  std::int64_t const x_at = (t0 + r0) * p.ed + stage_ch, bc_at = (t0 + br0) * p.ld_bc + n0 + bn;
  float const *xs = p.x + x_at, *ds = p.dt + x_at, *bs = p.b + bc_at, *cs = p.c + bc_at;
  int const x_step = (threads / lanes) * ed, bc_step = (threads / S) * static_cast<int>(p.ld_bc);
  float2 xd[xrows];  // [rows]: x, dt of the next batch
  float bq[bcs], cq[bcs];
  auto load = [&](int valid) {  // the batch at the pointers, `valid` tokens long; then the pointers move on
#pragma unroll
    for (int k = 0; k < xrows; ++k) {
      bool const ok = stage_live && r0 + k * (threads / lanes) < valid;
      xd[k] = make_float2(load_issued_here(xs + k * x_step, ok), load_issued_here(ds + k * x_step, ok));
    }
#pragma unroll
    for (int k = 0; k < bcs; ++k) {
      bool const ok = bc_live && br0 + k * (threads / S) < valid;
      bq[k] = load_issued_here(bs + k * bc_step, ok);
      cq[k] = load_issued_here(cs + k * bc_step, ok);
    }
    xs += NB * p.ed, ds += NB * p.ed, bs += NB * p.ld_bc, cs += NB * p.ld_bc;
  };
  auto store = [&](int b, int valid) {
    float delta[xrows];  // [rows]: Δ of every row first, under one uniform branch, so that the softplus chains overlap
    if (p.dt_softplus) {
#pragma unroll
      for (int k = 0; k < xrows; ++k) {
        delta[k] = delta_of(p, xd[k].y, stage_bias);
      }
    } else {
#pragma unroll
      for (int k = 0; k < xrows; ++k) {
        delta[k] = xd[k].y;
      }
    }
#pragma unroll
    for (int k = 0; k < xrows; ++k) {
      int const r = r0 + k * (threads / lanes);
      float const d = stage_live && r < valid ? delta[k] : 0.0f;
      xdt[b][r][sc_ch] = make_float2(d, d * xd[k].x);
      x_s[b][r][sc_ch] = xd[k].x;
    }
#pragma unroll
    for (int k = 0; k < bcs; ++k) {
      int const r = br0 + k * (threads / S);
      sb[b][r][bn] = bq[k];
      sc[b][r][bn] = cq[k];
    }
  };

  // With Aligned: thread tid copies the 4 channels [4 xq, 4 xq + 4) of the block (xq = tid % 8) of tokens tid / 8 and
  // tid / 8 + 16 (x and dt), and B, C of states n0 + [4 sq, 4 sq + 4) (sq = tid % 4) of token tid / 4.
  constexpr int copy_rows = threads / 8;  // tokens of x, dt per round of copies
  static_assert(NB == 2 * copy_rows && NB == threads / 4, "two rounds of x, dt copies and one of B, C per batch");
  int const xq = tid % 8, sq = tid % 4, xr0 = tid / 8, br = tid / 4;
  bool const chunk_live = group * lanes + 4 * xq < p.ed, bc_chunk_live = n0 + 4 * sq < p.ns;
  bool const z_copies = Aligned && gate;  // this launch finishes y: its z rows by copies too
  if (Aligned && tid < lanes) {           // read back by make_delta after the barrier below
    bias_s[tid] = delta_bias(p, group * lanes + tid, group * lanes + tid < p.ed);
  }
  // The batch of tokens [t, t + valid) into x_s[b], raw_dt, sb[b], sc[b] (and zs[b]). Offsets from the parameters'
  // pointers, made from t at each batch rather than carried (registers are what the scan is short of).
  auto issue = [&](int b, std::int64_t t, int valid) {
    std::int64_t const x_off = (t + xr0) * p.ed + group * lanes + 4 * xq, bc_off = (t + br) * p.ld_bc + n0 + 4 * sq;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      int const r = xr0 + k * copy_rows, zero = chunk_live && r < valid ? 0 : 16;  // bytes zero-filled
      __pipeline_memcpy_async(&x_s[b][r][4 * xq], p.x + x_off + k * copy_rows * p.ed, 16, zero);
      __pipeline_memcpy_async(&raw_dt[r][4 * xq], p.dt + x_off + k * copy_rows * p.ed, 16, zero);
    }
    int const zero = bc_chunk_live && br < valid ? 0 : 16;
    __pipeline_memcpy_async(&sb[b][br][4 * sq], p.b + bc_off, 16, zero);
    __pipeline_memcpy_async(&sc[b][br][4 * sq], p.c + bc_off, 16, zero);
    if (z_copies) {
      std::int64_t const z_off = (t + xr0) * p.ld_z + group * lanes + 4 * xq;
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        int const r = xr0 + k * copy_rows;
        __pipeline_memcpy_async(&zs[b][r][4 * xq], p.z + z_off + k * copy_rows * p.ld_z, 16,
                                chunk_live && r < valid ? 0 : 16);
      }
    }
    __pipeline_commit();
  };
  auto make_delta = [&](int b, int valid) {  // once this thread's copies have landed: Δ, Δ x of its pieces into xdt[b]
    __pipeline_wait_prior(0);
    float4 xv[2], dv[2];  // [rows]: x and dt, then Δ, of 4 channels
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      int const r = xr0 + k * copy_rows;
      xv[k] = *reinterpret_cast<float4 const*>(&x_s[b][r][4 * xq]);
      dv[k] = *reinterpret_cast<float4 const*>(&raw_dt[r][4 * xq]);
    }
    // Every softplus under one uniform branch: tested per value (delta_of), each of the 8 was a branch of its own
    // and their chains of dependent instructions ran one after another.
    if (p.dt_softplus) {
      float4 const bias = *reinterpret_cast<float4 const*>(&bias_s[4 * xq]);
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        dv[k] = make_float4(delta_softplus(p, dv[k].x, bias.x), delta_softplus(p, dv[k].y, bias.y),
                            delta_softplus(p, dv[k].z, bias.z), delta_softplus(p, dv[k].w, bias.w));
      }
    }
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      int const r = xr0 + k * copy_rows;
      bool const ok = chunk_live && r < valid;
      float4 const d = ok ? dv[k] : float4{};
      auto* const row = reinterpret_cast<float4*>(&xdt[b][r][4 * xq]);
      row[0] = make_float4(d.x, d.x * xv[k].x, d.y, d.y * xv[k].y);
      row[1] = make_float4(d.z, d.z * xv[k].z, d.w, d.w * xv[k].w);
    }
  };

  auto batch_length = [&](std::int64_t t) { return t1 - t < NB ? static_cast<int>(t1 - t) : NB; };
  if constexpr (Aligned) {
    issue(0, t0, batch_length(t0));
    __syncthreads();  // bias_s
    make_delta(0, batch_length(t0));
  } else {
    load(batch_length(t0));
    store(0, batch_length(t0));
  }
  __syncthreads();
  std::int64_t y_at = (t0 + q) * p.ed + ch, z_at = (t0 + q) * p.ld_z + ch;  // this lane's first token
  // Token 4 g + q of a batch lies g quads after the lane's first: 32-bit steps (ED and ld_z < 2^26, checked).
  int const y_quad = 4 * ed, z_quad = 4 * static_cast<int>(p.ld_z);
  int buf = 0;
  for (std::int64_t t = t0; t < t1; t += NB) {
    int const valid = batch_length(t), next_valid = t + NB < t1 ? batch_length(t + NB) : 0;
    if (next_valid > 0) {  // lands while this batch is scanned
      if constexpr (Aligned) {
        issue(buf ^ 1, t + NB, next_valid);
      } else {
        load(next_valid);
      }
    }
    // This lane finishes token 4 g + q of each quad g; those in the sequence (with the channel live): g < quads_in.
    int const quads_in = live ? (valid - q + 3) / 4 : 0;
    float zv[NB / 4];  // [quads]: z of the token this lane finishes in each quad (Aligned: read after the scan)
    if (!Aligned && gate) {
#pragma unroll
      for (int g = 0; g < NB / 4; ++g) {
        zv[g] = load_issued_here(p.z + z_at + g * z_quad, g < quads_in);
      }
    }
    float2 const* const xrow = &xdt[buf][0][cb];
    float const *const brow = &sb[buf][0][4 * q], *const crow = &sc[buf][0][4 * q];
    // The scan of the batch has no branches (checkpoint stores predicated, y kept in registers until after it), so
    // the compiler can overlap one quad's exponentials and loads with the previous quad's recurrence.
    float ysum[NB / 4];  // [quads]: Σ over the launch's states of C h at the token this lane finishes
#pragma unroll
    for (int g = 0; g < NB / 4; ++g) {
      float part[4];  // [token of the quad]: this lane's Σ_j C h over its 4 states
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        int const r = 4 * g + i;
        if (r % ck_every == 0) {  // the state entering token t + r
          bool const here = write_ck && r < valid;
          if constexpr (Aligned) {  // my_states is 4 wherever write_ck holds
            if (here) {
              *reinterpret_cast<float4*>(ck) = make_float4(h[0], h[1], h[2], h[3]);
            }
          } else {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              if (here && j < my_states) {
                ck[j] = h[j];
              }
            }
          }
          ck += here ? size : 0;
        }
        float2 const v = xrow[r * lanes];  // Δ, Δ x
        float4 const bv = *reinterpret_cast<float4 const*>(brow + r * S);
        float4 const cv = *reinterpret_cast<float4 const*>(crow + r * S);
        h[0] = fmaf(exp2_approx(v.x * a2[0]), h[0], v.y * bv.x);
        h[1] = fmaf(exp2_approx(v.x * a2[1]), h[1], v.y * bv.y);
        h[2] = fmaf(exp2_approx(v.x * a2[2]), h[2], v.y * bv.z);
        h[3] = fmaf(exp2_approx(v.x * a2[3]), h[3], v.y * bv.w);
        part[i] = fmaf(cv.w, h[3], fmaf(cv.z, h[2], fmaf(cv.y, h[1], cv.x * h[0])));  // a chain: measured faster
      }
      ysum[g] = quad_sum_scatter(part, q);  // token 4 g + q, over the launch's 16 states
    }
    // The tokens this lane finishes: every value first, then the stores (predicated), so that the gate's
    // exponentials overlap instead of waiting a token at a time behind a branch each.
    float* const y_row = p.y + y_at;  // token 4 g + q at y_row + g · y_quad
    float yv[NB / 4];
#pragma unroll
    for (int g = 0; g < NB / 4; ++g) {
      float const before = n0 != 0 && g < quads_in ? y_row[g * y_quad] : 0.0f;  // the earlier launches' states
      yv[g] = fmaf(dskip, x_s[buf][4 * g + q][cb], n0 == 0 ? ysum[g] : ysum[g] + before);
    }
#pragma unroll
    for (int g = 0; g < NB / 4; ++g) {
      if (g < quads_in) {
        y_row[g * y_quad] = yv[g];
      }
    }
    // store_gated's stores, a batch at a time: the output pointers tested once per batch, not per token (through
    // store_gated's per-token tests the forward measured 3 % slower as the model calls it)
    if (gate) {
#pragma unroll
      for (int g = 0; g < NB / 4; ++g) {
        yv[g] *= silu_fast(Aligned ? zs[buf][4 * g + q][cb] : zv[g]);
      }
      if (p.gated != nullptr) {
        float* const row = p.gated + y_at;
#pragma unroll
        for (int g = 0; g < NB / 4; ++g) {
          if (g < quads_in) {
            row[g * y_quad] = yv[g];
          }
        }
      }
      if (p.gated_rounded != nullptr) {
        bfloat16* const row = p.gated_rounded + y_at;
#pragma unroll
        for (int g = 0; g < NB / 4; ++g) {
          if (g < quads_in) {
            row[g * y_quad] = bfloat16(yv[g]);
          }
        }
      }
    }
    if (next_valid > 0) {  // that buffer's last readers finished before the previous barrier
      if constexpr (Aligned) {
        make_delta(buf ^ 1, next_valid);
      } else {
        store(buf ^ 1, next_valid);
      }
    }
    __syncthreads();
    buf ^= 1;
    y_at += NB * p.ed, z_at += NB * p.ld_z;
  }
  store_final_states(p, s, my_n0, ch, live, h);
}

// ---------------------------------------------------------------------------------------------------------------
// Backward: the same split, walked in reverse. B, C, x, Δ and dy of one 64-token interval (last first) sit in shared
// memory (B, C as pairs), each interval loaded while the later one is walked (the earlier intervals lie wholly inside
// the sequence, so their loads go unmasked, by offsets moved a batch at a time); per 8-token batch, last first, each
// thread recomputes the batch's states and decays in registers from the batch's checkpoint and walks it backwards:
//   g = dy C + u (∂L/∂h_t), u ← a_t g, dB_t += g Δ x, dC_t += dy h_t, dΔ += g (A a h_{t-1} + x B), dx += g Δ B,
//   dA += g Δ a h_{t-1}.
// The thread's u carries from batch to batch and interval to interval in registers: no cross-thread scan. With a
// gate, each warp takes dy back through it (and writes dz) where it stores the rows it staged. dx and dΔ are summed
// over the warps (the states) like y in the forward, and the final ddt over the tokens for dt's bias gradient; dB
// and dC over the 32 channels (the lanes, through shared memory) into the per-32-channel partials that block_parallel's
// backward writes, finished by the same fixed-order reductions. The backward holds about twice the forward's registers
// per state, so it splits the states 4 per thread whatever the forward's NT: at the 130M shape every block is then
// resident at once.

inline constexpr int split_backward_states = 4;  // states per thread in the backward
inline constexpr int split_backward_batch = 8;   // tokens whose states and decays a thread holds in registers

template <int WG, int NT>
struct backward_split_smem {
  static constexpr int L = split_interval, S = WG * NT, SB = split_backward_batch;
  // [interval, S]: (B, C) of this launch's states side by side, so that the walk gets both from one load
  alignas(16) float2 bc_pairs[L][S];
  float x[L][lanes], dt[L][lanes], dy[L][lanes];      // [interval, lane]: dt holds Δ
  float slope[L][lanes];                              // [interval, lane]: ∂Δ/∂dt, with the fused softplus only
  float dx[2][WG][SB][lanes], ddt[2][WG][SB][lanes];  // [buffer, warp, token, lane]: each warp's share
  // [warp, lane, value]: one state's dB, dC of a batch, summed over the lanes by reading the columns; rows padded
  // to 20 floats so that the 16-byte row stores and the column reads (upper half-warp rotated by 4 rows) are free
  // of bank conflicts.
  alignas(16) float bc[WG][lanes][2 * SB + 4];
};

template <int WG, int NT>
__global__ void __launch_bounds__(WG* lanes, 3) backward_state_split_kernel(backward_params p, std::int64_t n0) {
  constexpr int L = split_interval, SB = split_backward_batch, S = WG * NT;
  static_assert(SB % WG == 0, "each warp finishes SB / WG tokens of a batch");
  extern __shared__ __align__(16) unsigned char raw_smem[];
  auto& sm = *reinterpret_cast<backward_split_smem<WG, NT>*>(raw_smem);
  forward_params const& f = p.f;
  auto const [lane, w, s, group, ch, live, t0, t1, n_intervals, size, ck0, my_n0, dskip, dt_bias] =
      split_thread_of<NT>(f, n0);  // D·dy joins warp 0's share of dx in the first launch; later ones add to dx, dΔ
  float a2[NT], u[NT], da[NT];     // [NT]: A log2(e); states past N: A = 0, B = C = 0, nothing written
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    bool const ok = live && my_n0 + j < f.ns;
    std::int64_t const at = (my_n0 + j) * f.ed + ch;
    a2[j] = load_or_zero(f.a, at, ok) * log2e;
    u[j] = p.d_final != nullptr ? load_or_zero(p.d_final, s * size + at, ok) : 0.0f;
    da[j] = 0.0f;
  }
  float dd = 0.0f;
  // Σ of the final ddt over the tokens this thread finishes (the launch that finishes ddt, when asked for); the
  // warps' sums are added in warp order at the end.
  bool const sum_dbias = p.partial_dbias != nullptr && n0 + S >= f.ns;
  float dbias = 0.0f;
  // x, dt, dy of SB tokens (this thread's lane; tokens w, w + WG, ...) carried in registers like bc_rows' B, C;
  // Δ (and its slope) are made from dt as they are stored, and dy taken back through the gate (z and y loaded with
  // the rest; dz written by the first launch).
  constexpr int XR = SB / WG;
  float cx[XR], cdt[XR], cdy[XR], cz[XR], cy[XR];
  bool const gated = p.gate.z != nullptr, write_dz = gated && n0 == 0;
  auto load_xs = [&](std::int64_t t_first) {
#pragma unroll
    for (int r = 0; r < XR; ++r) {
      std::int64_t const t = t_first + r * WG + w;
      bool const ok = live && t < t1;  // masked tokens: x = Δ = dy = 0, an identity step
      cx[r] = load_or_zero(f.x, t * f.ed + ch, ok);
      cdt[r] = load_or_zero(f.dt, t * f.ed + ch, ok);
      cdy[r] = load_or_zero(p.dy, t * f.ed + ch, ok);
      cz[r] = gated ? load_or_zero(p.gate.z, t * p.gate.ld_z + ch, ok) : 0.0f;
      cy[r] = write_dz ? load_or_zero(p.gate.y, t * f.ed + ch, ok) : 0.0f;
    }
  };
  // The loaded rows r into staged rows row0 + r · WG + w: every value first, under one uniform branch for the
  // softplus and one for the gate, then the stores, so that the rows' exponentials overlap instead of waiting a row
  // at a time behind a branch each. Masked tokens (not ok(r)) get Δ = 0; dz, when written, goes to dz_at(r).
  auto stage_rows = [&](int row0, auto ok, auto dz_at) {
    float delta[XR], slope[XR], dyg[XR], dz[XR];  // [rows]
    if (f.dt_softplus) {
#pragma unroll
      for (int r = 0; r < XR; ++r) {
        delta[r] = delta_of(f, cdt[r], dt_bias), slope[r] = delta_slope(f, cdt[r], dt_bias);
      }
    } else {
#pragma unroll
      for (int r = 0; r < XR; ++r) {
        delta[r] = cdt[r], slope[r] = 1.0f;
      }
    }
    if (gated) {
#pragma unroll
      for (int r = 0; r < XR; ++r) {
        dyg[r] = gate_backward(cdy[r], cz[r], cy[r], dz[r]);
      }
    } else {
#pragma unroll
      for (int r = 0; r < XR; ++r) {
        dyg[r] = cdy[r], dz[r] = 0.0f;
      }
    }
#pragma unroll
    for (int r = 0; r < XR; ++r) {
      int const row = row0 + r * WG + w;
      sm.x[row][lane] = cx[r];
      sm.dy[row][lane] = dyg[r];
      sm.dt[row][lane] = ok(r) ? delta[r] : 0.0f;
      if (f.dt_softplus) {
        sm.slope[row][lane] = slope[r];
      }
    }
    if (write_dz) {
#pragma unroll
      for (int r = 0; r < XR; ++r) {
        if (ok(r)) {
          store_dz(p, dz_at(r), dz[r]);
        }
      }
    }
  };
  auto store_xs = [&](int row0, std::int64_t t_first) {
    stage_rows(
        row0, [&](int r) { return live && t_first + r * WG + w < t1; },
        [&](int r) { return (t_first + r * WG + w) * p.gate.ld_dz + ch; });
  };
  // The same for the earlier intervals, which are whole (every token in the sequence), by an offset that moves SB
  // tokens back a batch instead of t · ED + channel for each load: t_a is this thread's first row staged during a
  // batch, a_ed its offset in the [T, ED] layouts (the batch being walked is L tokens after it).
  auto t_a = static_cast<std::int32_t>(t0 + (n_intervals - 1) * L - SB + w);  // tokens ≤ 2^30 (checked at launch)
  std::int64_t a_ed = static_cast<std::int64_t>(t_a) * f.ed + ch;
  auto load_xs_whole = [&] {
#pragma unroll
    for (int r = 0; r < XR; ++r) {
      std::int64_t const at = a_ed + r * WG * f.ed;
      cx[r] = live ? __ldg(f.x + at) : 0.0f;
      cdt[r] = live ? __ldg(f.dt + at) : 0.0f;
      cdy[r] = live ? __ldg(p.dy + at) : 0.0f;
      cz[r] = gated && live ? __ldg(p.gate.z + static_cast<std::int64_t>(t_a + r * WG) * p.gate.ld_z + ch) : 0.0f;
      cy[r] = write_dz && live ? __ldg(p.gate.y + at) : 0.0f;
    }
  };
  auto store_xs_whole = [&](int row0) {
    stage_rows(
        row0, [&](int) { return live; },
        [&](int r) { return static_cast<std::int64_t>(t_a + r * WG) * p.gate.ld_dz + ch; });
  };
  // The state entering token t_first (a multiple of SB into the sequence); zeros for a batch wholly past the
  // sequence, which has no checkpoint (its tokens are identity steps whose states reach no output).
  auto load_checkpoint = [&](std::int64_t t_first, float(&h)[NT]) {
    std::int64_t const row = ck0 + (t_first - t0) / SB;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      bool const ok = live && my_n0 + j < f.ns && t_first < t1;
      h[j] = load_or_zero(p.ck, ok ? row * size + checkpoint_at(my_n0 + j, ch, f.ns, f.ed) : 0, ok);
    }
  };
  // The last interval is staged here; each earlier one is loaded batch by batch while the later one is walked, into
  // the rows that batch has just freed (the same token offsets). Each batch's checkpoint is loaded a batch ahead.
  static_assert(SB == state_split<NT>::checkpoint_interval, "a checkpoint per batch");
  float h_ck[NT];  // [NT]: the checkpoint of the batch about to be walked
  {
    // An empty sequence stages from its own start, where every load is masked (its rows would lie before it).
    std::int64_t const tc = t0 + (n_intervals > 0 ? n_intervals - 1 : 0) * L;
    stage_bc<L, S, WG * lanes>([&](int tok, int j, float b, float c) { sm.bc_pairs[tok][j] = make_float2(b, c); }, f,
                               tc, t1, n0);
    for (int row0 = 0; row0 < L; row0 += SB) {
      load_xs(tc + row0);
      store_xs(row0, tc + row0);
    }
    load_checkpoint(tc + L - SB, h_ck);
  }
  bc_rows<SB, S, WG * lanes> coming;  // the earlier interval's B, C for the rows of the batch being walked
  // dB, dC go to partial_bc[group, kind, n, t]: lanes 0 .. SB - 1 write dB of tokens first + lane, lanes SB .. 2 SB - 1
  // dC; this lane's row of the first state, advanced by `tokens` per state.
  bool const bc_lane = lane < 2 * SB;
  // Σ over the 32 lanes of red[v], left in lanes v and v + 16 (2 SB = 16 values): each lane stores its row, then
  // sums half a column (16 rows, in a fixed order) and adds the other half's sum. About 40 instructions per state
  // and batch against 62 for a shuffle reduce-scatter, whose selects cost as much as its shuffles and adds.
  static_assert(2 * SB == 16, "the column sums assume 16 values");
  auto sum_over_lanes = [&](float const(&red)[2 * SB]) {
    float(&rows)[lanes][2 * SB + 4] = sm.bc[w];
#pragma unroll
    for (int v = 0; v < 2 * SB; v += 4) {
      *reinterpret_cast<float4*>(&rows[lane][v]) = make_float4(red[v], red[v + 1], red[v + 2], red[v + 3]);
    }
    __syncwarp();
    int const col = lane % 16, half = lane / 16;
    float part[4] = {};
#pragma unroll
    for (int m = 0; m < 16; ++m) {
      part[m % 4] += rows[half * 16 + (m + 4 * half) % 16][col];
    }
    float total = (part[0] + part[1]) + (part[2] + part[3]);
    total += __shfl_xor_sync(0xffffffffu, total, 16);  // a + b == b + a: both halves hold the same bits
    __syncwarp();                                      // every lane has read the rows before the next state's stores
    return total;
  };
  float* const bc_row = p.partial_bc + ((group * 2 + (bc_lane ? lane / SB : 0)) * f.ns + my_n0) * p.tokens + lane % SB;
  int const my_states = static_cast<int>(std::clamp<std::int64_t>(f.ns - my_n0, 0, NT));  // states < N
  static_assert(NT == 4, "checkpoint_at puts 4 states side by side");
  std::int64_t const ck_in_row = my_states > 0 ? checkpoint_at(my_n0, ch, f.ns, f.ed) : 0;
  // The next batch's checkpoint: row ck_row of the sequence's, one back a batch.
  std::int64_t ck_row = n_intervals * (L / SB) - 2;
  int buf = 0;
  for (std::int64_t k = n_intervals - 1; k >= 0; --k) {
    std::int64_t const tc = t0 + k * L;
    bool const ahead = k > 0;  // an earlier interval (whole) is loaded during this one's walk
    __syncthreads();           // this interval's rows are in; every warp is done with the later interval
    for (int q = L / SB - 1; q >= 0; --q) {
      int const first = q * SB;                                       // the batch's first token in the interval
      float xv[SB], dtv[SB], dyv[SB], hs[SB + 1][NT], decay[SB][NT];  // hs[i] = h_{t-1}, hs[i + 1] = h_t
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        hs[0][j] = h_ck[j];
      }
      if (ck_row >= 0) {  // the next batch walked: this interval's previous one or the last of the one before
        bool const has = live && t0 + ck_row * SB < t1;  // a batch wholly past the sequence has no checkpoint
        float const* const ck = p.ck + (ck0 + ck_row) * size + ck_in_row;  // the 4 states side by side
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          h_ck[j] = has && j < my_states ? __ldg(ck + j) : 0.0f;
        }
      }
      if (ahead) {
        coming.load(f, tc - L + first, t1, n0);
        load_xs_whole();
      }
#pragma unroll
      for (int i = 0; i < SB; ++i) {
        xv[i] = sm.x[first + i][lane], dtv[i] = sm.dt[first + i][lane], dyv[i] = sm.dy[first + i][lane];
        float bv[NT];
#pragma unroll
        for (int j = 0; j < NT; j += 2) {  // the B of two pairs
          float4 const v = *reinterpret_cast<float4 const*>(&sm.bc_pairs[first + i][w * NT + j]);
          bv[j] = v.x, bv[j + 1] = v.z;
        }
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          decay[i][j] = exp2_approx(dtv[i] * a2[j]);
          hs[i + 1][j] = fmaf(decay[i][j], hs[i][j], (dtv[i] * xv[i]) * bv[j]);
        }
      }
      float gb[SB], ddt_share[SB];  // [SB]: Σ over this warp's states of g B, and of A log2(e) g a h_{t-1}
#pragma unroll
      for (int i = 0; i < SB; ++i) {
        gb[i] = 0.0f, ddt_share[i] = 0.0f;
      }
      std::int64_t const t_first = tc + first;
      float* bc_out = bc_row + t_first;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        float red[2 * SB];  // dB (0 .. SB - 1) and dC (SB .. 2 SB - 1) of each token, for this state
#pragma unroll
        for (int i = SB - 1; i >= 0; --i) {
          float2 const bc = sm.bc_pairs[first + i][w * NT + j];
          float const bj = bc.x, cj = bc.y;
          float const g = fmaf(dyv[i], cj, u[j]);  // ∂L/∂h_t
          float const ug = decay[i][j] * g;        // ∂L/∂h_{t-1} through the recurrence
          float const gah = ug * hs[i][j];         // g a_t h_{t-1}
          red[i] = g * (dtv[i] * xv[i]);           // one multiply: dtv[i] * xv[i] is shared with the recompute
          red[SB + i] = dyv[i] * hs[i + 1][j];
          gb[i] = fmaf(g, bj, gb[i]);
          ddt_share[i] = fmaf(a2[j], gah, ddt_share[i]);  // A log2(e) g a h_{t-1}: ln 2 applied once below
          da[j] = fmaf(dtv[i], gah, da[j]);
          u[j] = ug;
        }
        float const r = sum_over_lanes(red);
        if (bc_lane && j < my_states && t_first + lane % SB < t1) {
          *bc_out = r;
        }
        bc_out += p.tokens;
      }
      // dx = Σ_n g Δ B (+ D dy), dΔ = Σ_n g (A a h_{t-1} + x B): the B terms share Σ_n g B.
      float dx_share[SB];
#pragma unroll
      for (int i = 0; i < SB; ++i) {
        dx_share[i] = fmaf(dtv[i], gb[i], dskip * dyv[i]);
        ddt_share[i] = fmaf(xv[i], gb[i], ddt_share[i] * ln2);
      }
      if (w == 0) {
#pragma unroll
        for (int i = 0; i < SB; ++i) {
          dd = fmaf(dyv[i], xv[i], dd);
        }
      }
#pragma unroll
      for (int i = 0; i < SB; ++i) {
        sm.dx[buf][w][i][lane] = dx_share[i];
        sm.ddt[buf][w][i][lane] = ddt_share[i];
      }
      __syncthreads();  // every warp's share of this batch is in, and every warp is done with its rows
#pragma unroll
      for (int r = 0; r < SB / WG; ++r) {
        int const i = r * WG + w;  // warp w finishes tokens w, w + WG, ... (the rows it stores below)
        bool const ok = live && tc + first + i < t1;
        std::int64_t const at = a_ed + (L + r * WG) * f.ed;     // L tokens after the rows staged
        float sx = n0 != 0 && ok ? p.dx[at] : 0.0f, st = 0.0f;  // the earlier launches' states first
        float const st_before = n0 != 0 && ok ? p.ddt[at] : 0.0f;
#pragma unroll
        for (int g = 0; g < WG; ++g) {  // the sums outside the branch below, so that they overlap it
          sx += sm.dx[buf][g][i][lane];
          st += sm.ddt[buf][g][i][lane];
        }
        if (f.dt_softplus) {
          st *= sm.slope[first + i][lane];  // read before this thread's store_xs below replaces it
        }
        float const ddt = st + st_before;
        if (ok) {
          p.dx[at] = sx;
          store_ddt(p, at, ddt);
          if (sum_dbias) {
            dbias += ddt;
          }
        }
      }
      if (ahead) {
        coming.store_pairs(sm.bc_pairs, first);
        store_xs_whole(first);
      }
      buf ^= 1;  // the next batch writes the other buffers; the barrier above orders the reuse after next
      t_a -= SB, a_ed -= SB * f.ed;
      ck_row -= 1;
    }
  }
  if (live) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      if (my_n0 + j < f.ns) {
        std::int64_t const at = s * size + (my_n0 + j) * f.ed + ch;
        p.partial_da[at] = da[j];
        if (p.d_init != nullptr) {
          p.d_init[at] = u[j];  // ∂L/∂(the initial state)
        }
      }
    }
    if (n0 == 0 && w == 0) {
      p.partial_dd[s * f.ed + ch] = dd;
    }
  }
  if (sum_dbias) {  // buffer `buf` was last read before the last batch's barrier
    sm.dx[buf][w][0][lane] = dbias;
    __syncthreads();
    if (w == 0 && live) {
      float total = 0.0f;
#pragma unroll
      for (int g = 0; g < WG; ++g) {
        total += sm.dx[buf][g][0][lane];
      }
      p.partial_dbias[s * f.ed + ch] = total;
    }
  }
}

//! The forward of NT = 1, 2 or 8 (`forward_state_split_kernel`): warps of NT states each, as many as the states
//! need (a power of two, at most 8), in launches of at most 16 states.
template <int NT>
void launch_forward_state_split(forward_params const& p, std::int64_t blocks, std::int64_t states, bool many_blocks,
                                cudaStream_t stream) {
  std::int64_t const groups = (states + NT - 1) / NT;  // warps the states need
  auto launch = [&]<int WG>() {
    auto const kernel = [&] {
      if constexpr (WG == 8) {
        return many_blocks ? &forward_state_split_kernel<NT, WG, 4> : &forward_state_split_kernel<NT, WG, 3>;
      } else {
        constexpr int min_blocks = WG == 1 ? 1 : 16 / WG;
        return &forward_state_split_kernel<NT, WG, min_blocks>;
      }
    }();
    for (std::int64_t n0 = 0; n0 < states; n0 += std::int64_t{WG} * NT) {  // later launches add to y, in order
      kernel<<<static_cast<unsigned>(blocks), WG * lanes, 0, stream>>>(p, n0);
      backends::cuda_check_launch("forward_state_split_kernel");
    }
  };
  constexpr int max_warps = std::min(8, split_max_states / NT);          // at least 2
  std::int64_t const warps = std::min<std::int64_t>(groups, max_warps);  // launched as the power of two at or below it
  if (warps >= 8) {
    launch.template operator()<std::min(8, max_warps)>();
  } else if (warps >= 4) {
    launch.template operator()<std::min(4, max_warps)>();
  } else if (warps >= 2) {
    launch.template operator()<2>();
  } else {
    launch.template operator()<1>();
  }
}

}  // namespace detail

//! Forward scan; the contract of the block_parallel overload, but with checkpoints every 8 tokens whose rows hold the
//! states in groups of 4 (`detail::checkpoint_at`): only this policy's backward reads them.
template <int NT>
void selective_scan_forward(state_split<NT>, backends::cuda const& be, device_sequences const& seqs,
                            selective_scan_args<float> const& a, float* y, float* checkpoints, float* final_state,
                            void* workspace = nullptr, gate_output const& gate = {}) {
  detail::check_forward_args(seqs, a, y, gate);
  check_arg(a.channels <= std::int64_t{1} << 26, "channels", a.channels, "must be at most 2^26 for state_split");
  check_arg(a.ld_bc <= std::int64_t{1} << 26, "ld_bc", a.ld_bc, "must be at most 2^26 for state_split");
  check_arg(gate.z == nullptr || gate.ld_z <= std::int64_t{1} << 26, "gate ld_z", gate.ld_z,
            "must be at most 2^26 for state_split");
  detail::workspace_layout const layout(seqs, a.channels, a.states);
  ops::cuda::scratch ws(workspace, layout.forward_bytes, be.stream);
  auto const* ck_offsets = detail::checkpoint_offsets_for(seqs, state_split<NT>::checkpoint_interval,
                                                          ws.at<std::int64_t>(layout.ck_offsets), be.stream);
  auto const p = detail::make_forward_params(seqs, a, ck_offsets, detail::lanes, y, checkpoints, final_state, gate);
  std::int64_t const blocks = detail::block_count(seqs.count, p.groups);
  if (blocks == 0) {
    return;
  }
  bool const many_blocks = blocks > 3 * detail::sm_count();
  if constexpr (NT == 4) {
    // 3 blocks per SM allow 168 registers, 4 cap them at 128: more registers for small grids, all blocks resident at
    // once for larger ones.
    using ops::cuda::aligned16;
    bool const aligned = a.states % 4 == 0 && a.channels % 4 == 0 && a.ld_bc % 4 == 0 && aligned16(checkpoints) &&
                         aligned16(a.x) && aligned16(a.dt) && aligned16(a.b) && aligned16(a.c) &&
                         (gate.z == nullptr || (gate.ld_z % 4 == 0 && aligned16(gate.z)));
    auto const kernel =
        aligned ? (many_blocks ? &detail::forward_quad_kernel<4, true> : &detail::forward_quad_kernel<3, true>)
                : (many_blocks ? &detail::forward_quad_kernel<4, false> : &detail::forward_quad_kernel<3, false>);
    for (std::int64_t n0 = 0; n0 < a.states; n0 += detail::quad_states) {  // later launches add to y, in order
      kernel<<<static_cast<unsigned>(blocks), detail::quad_warps * detail::lanes, 0, be.stream>>>(p, n0);
      backends::cuda_check_launch("forward_quad_kernel");
    }
  } else {
    detail::launch_forward_state_split<NT>(p, blocks, a.states, many_blocks, be.stream);
  }
}

//! Backward from the forward's checkpoints; the contract of the block_parallel overload. Deterministic: no atomics.
template <int NT>
void selective_scan_backward(state_split<NT>, backends::cuda const& be, device_sequences const& seqs,
                             selective_scan_args<float> const& a, float const* checkpoints,
                             selective_scan_grads<float> const& g, void* workspace = nullptr,
                             bfloat16* ddt_rounded = nullptr, gate_gradient const& gate = {}) {
  detail::check_backward_args(seqs, a, checkpoints, g, gate);
  check_arg(seqs.tokens <= std::int64_t{1} << 30, "tokens", seqs.tokens,
            "must be at most 2^30 for state_split's backward (its token rows are 32-bit)");
  detail::workspace_layout const layout(seqs, a.channels, a.states);
  ops::cuda::scratch ws(workspace, layout.backward_bytes, be.stream);
  auto const p = detail::make_backward_params(seqs, a, checkpoints, g, ddt_rounded, gate, layout, ws,
                                              state_split<NT>::checkpoint_interval, detail::lanes, be.stream);
  std::int64_t const blocks = detail::block_count(seqs.count, p.f.groups);
  if (blocks > 0) {
    constexpr int bnt = detail::split_backward_states;
    std::int64_t const groups = (a.states + bnt - 1) / bnt;  // warps the states need
    auto launch = [&]<int WG>() {
      auto kernel = detail::backward_state_split_kernel<WG, bnt>;
      std::size_t const shared = sizeof(detail::backward_split_smem<WG, bnt>);
      detail::allow_shared_memory(kernel, shared);
      // 3 blocks of 66 KB need most of the SM's 228 KB as shared memory (the rest stays L1).
      detail::cuda_check(
          cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared),
          "cudaFuncSetAttribute(PreferredSharedMemoryCarveout)");
      for (std::int64_t n0 = 0; n0 < a.states; n0 += std::int64_t{WG} * bnt) {  // later launches add to dx, dΔ
        kernel<<<static_cast<unsigned>(blocks), WG * detail::lanes, shared, be.stream>>>(p, n0);
        backends::cuda_check_launch("backward_state_split_kernel");
      }
    };
    if (groups >= 4) {
      launch.template operator()<4>();
    } else if (groups >= 2) {
      launch.template operator()<2>();
    } else {
      launch.template operator()<1>();
    }
  }
  detail::launch_reductions(p, g, p.f.groups, seqs.count, be.stream, true);
}

}  // namespace ssmlen::scan::cuda
