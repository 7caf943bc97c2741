// SPDX-License-Identifier: Apache-2.0
//! @file conv1d.cuh
//! Causal depthwise 1-D convolution on a CUDA device, float32, with the semantics of layers/conv1d.hpp:
//!   y[t, c] = bias[c] + Σ_k w[c, k] · x[t − (K−1) + k, c]
//! per sequence of a packed batch, restarting at every sequence boundary; positions before a sequence's start come
//! from its initial state ([S, K−1, C], the K−1 inputs that preceded it) or are zero, and the final state is its
//! last K−1 inputs. The backward gives dx, d_init_state (gradients through both states) and adds dweight, dbias;
//! step advances one token per sequence of a batch of recurrent states.
//!
//! The kernels are memory-bound (a few flops per byte), so each reads every row once. Forward and backward give a
//! thread 4 channels (16-byte loads and stores when the channel count, the row strides and the pointers allow it;
//! 1 channel otherwise) over a run of consecutive tokens, and the threads of a warp take neighbouring channel groups
//! of the same run, so every row access is coalesced. The thread keeps its taps and a sliding window of the K-1
//! neighbouring rows in registers (aligned in 4 or 8 slots so that every register index is a compile-time
//! constant), has its rows copied into shared memory asynchronously, many in flight without holding registers, and
//! finds its sequence once per run (a binary search), stepping to the next one where the run crosses a start.
//! Forward walks 16 tokens, refilling the window from the initial state (or zeros) at each sequence start. The
//! backward is one walk backwards over 128 tokens that reads each dy and x row once and gives both dx (from the next
//! K-1 rows of dy, masking rows past the sequence end, where the final state's gradient enters) and the dweight,
//! dbias sums. Those are deterministic without atomics: one partial per (block of 128 tokens, k, channel), summed
//! in token order, which a second kernel adds in a fixed order. Widths past 8 take kernels that read every tap from
//! memory, dx and the partials apart.
//!
//! Fused forms, each saving the Mamba block a pass over [T, C]: the forward can also write silu(y) and its bf16
//! rounding (the SSM input and its copy for bf16 GEMMs) from the registers that hold y, and then need not write y
//! itself; the backward can take dy as the gradient of silu(y), recomputing y from the x window it holds anyway
//! (K multiply-adds per element, no stored y), and can write dx rounded to bf16 (an operand of the in_proj GEMMs).
//! The results are those of the separate passes, except that silu and silu' are made on the multi-function unit
//! (within a few 1e-7 of the host's).
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/cuda/device_sequences.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>

#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace ssmlen::layers::cuda {

//! What the step writes: the convolution, or its SiLU (the Mamba block's step needs only the activation, so the
//! fused form saves a launch and a [B, C] round trip per layer and token).
enum class conv_activation { none, silu };

//! The layer's parameters as device pointers.
struct conv1d_weights {
  std::int64_t channels = 0, width = 0;  // C, K
  float const* weight = nullptr;         // [C, K]
  float const* bias = nullptr;           // [C]
};

namespace detail {

inline constexpr int conv_threads = 256;
inline constexpr int conv_forward_threads = 128;    // 16 KB of staged rows per block (8 tokens × 16 bytes a thread)
inline constexpr int conv_backward_threads = 64;    // small blocks: the backward has few threads to spread
inline constexpr std::int64_t conv_run_tokens = 8;  // tokens per forward thread: twice the threads of 16 (10 % faster)
inline constexpr int conv_backward_batch = 4;       // rows of a backward batch; two batches in flight
inline constexpr std::int64_t conv_block_tokens = 128;  // tokens per backward thread and dweight partial: fixed, so
                                                        // the sum order is too
inline constexpr std::int64_t conv_max_window = 8;      // widest d_conv kept in registers

template <class T>
struct conv_params {
  std::int64_t const* offsets;
  std::int64_t count, tokens, channels, width;
  T const *weight, *bias, *x, *init;  // init: [S, K-1, C] or null
  std::int64_t ldx;
  T *y, *final_state;                          // forward
  T* y_silu;                                   // forward, or null: silu(y), [T, C]
  bfloat16* y_silu16;                          // forward, or null: silu(y) rounded, [T, C]
  T const *dy, *d_final;                       // backward
  conv_activation dy_of;                       // backward: dy is ∂L/∂y, or ∂L/∂silu(y) (y recomputed from x)
  bfloat16 const* dy_add;                      // backward, or null: [T, C] more of dy, added to it as it is read
  T *dx, *d_init, *partial, *dweight, *dbias;  // backward; dx may be null when dx16 is not
  bfloat16* dx16;                              // backward, or null: dx rounded, row stride lddx
  std::int64_t lddx;
};

using ops::cuda::aligned16;
using ops::cuda::aligned8;
using ops::cuda::float_vec;  // V consecutive channels in registers
using ops::cuda::load_floats;
using ops::cuda::store_floats;
using ops::cuda::store_rounded;

//! acc += a · b per channel.
template <int V>
__device__ inline void multiply_add(float_vec<V>& acc, float_vec<V> const& a, float_vec<V> const& b) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    acc.v[j] += a.v[j] * b.v[j];
  }
}

//! The sequence holding token t: the last s with offsets[s] <= t (empty sequences are skipped that way).
__device__ inline std::int64_t sequence_of(std::int64_t const* offsets, std::int64_t count, std::int64_t t) {
  std::int64_t lo = 0, hi = count;
  while (hi - lo > 1) {
    std::int64_t const mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= t) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

//! When token t has reached `next` (the start of the sequence after s), moves s to the sequence holding t (skipping
//! empty ones) and t0, next to its bounds; true when it moved, i.e. a sequence starts at t.
__device__ inline bool enter_sequence(std::int64_t const* offsets, std::int64_t t, std::int64_t& s, std::int64_t& t0,
                                      std::int64_t& next) {
  if (t < next) {
    return false;
  }
  while (t >= offsets[s + 1]) {
    ++s;
  }
  t0 = offsets[s];
  next = offsets[s + 1];
  return true;
}

//! Input at position `pos` of sequence s (starting at token t0), channels [c, c + V): x for pos >= 0, else the
//! initial state's row K-1+pos, or zeros.
template <int V, class T>
__device__ inline float_vec<V> input_at(conv_params<T> const& p, std::int64_t s, std::int64_t t0, std::int64_t pos,
                                        std::int64_t c) {
  if (pos >= 0) {
    return load_floats<V>(p.x + (t0 + pos) * p.ldx + c);
  }
  if (p.init != nullptr) {
    return load_floats<V>(p.init + (s * (p.width - 1) + p.width - 1 + pos) * p.channels + c);
  }
  return float_vec<V>{};
}

//! The convolution at position pos >= 0 of sequence s (starting at token t0), channels [c, c + V), summed in the
//! forward kernels' order (the bias, then k ascending), so that it has the bits the forward wrote.
template <int V, class T>
__device__ inline float_vec<V> output_at(conv_params<T> const& p, std::int64_t s, std::int64_t t0, std::int64_t pos,
                                         std::int64_t c) {
  float_vec<V> acc;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    acc.v[j] = p.bias[c + j];
  }
  for (std::int64_t k = 0; k < p.width; ++k) {
    float_vec<V> const xv = input_at<V>(p, s, t0, pos - (p.width - 1) + k, c);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      acc.v[j] += p.weight[(c + j) * p.width + k] * xv.v[j];
    }
  }
  return acc;
}

using ops::cuda::silu_fast;  // silu on the multi-function unit: with the host's exp and IEEE division the forward
                             // and the backward were bound by their instruction counts, not by their bytes

//! g *= silu'(y) per channel: ∂L/∂y from ∂L/∂silu(y).
template <int V>
__device__ inline void through_silu(float_vec<V>& g, float_vec<V> const& y) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    g.v[j] *= ops::cuda::silu_slope(y.v[j], ops::cuda::sigmoid_fast(y.v[j]));
  }
}

//! g += the V bf16 values at p, widened.
template <int V>
__device__ inline void add_widened(float_vec<V>& g, bfloat16 const* p) {
  float_vec<V> const a = ops::cuda::load_widened<V>(p);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    g.v[j] += a.v[j];
  }
}

//! ∂L/∂y at position pos >= 0 of sequence s, channels [c, c + V): dy, or dy · silu'(y) with y recomputed.
template <int V, class T>
__device__ inline float_vec<V> grad_at(conv_params<T> const& p, std::int64_t s, std::int64_t t0, std::int64_t pos,
                                       std::int64_t c) {
  std::int64_t const at = (t0 + pos) * p.channels + c;
  float_vec<V> g = load_floats<V>(p.dy + at);
  if (p.dy_add != nullptr) {
    add_widened(g, p.dy_add + at);
  }
  if (p.dy_of == conv_activation::silu) {
    through_silu(g, output_at<V>(p, s, t0, pos, c));
  }
  return g;
}

//! Writes y's channels [c, c + V) of token t (unless y is null) and, where asked, their SiLU and its bf16 rounding
//! (the rounding of the fp32 activation written beside it).
template <int V, class T>
__device__ inline void store_output(conv_params<T> const& p, std::int64_t t, std::int64_t c, float_vec<V> const& y) {
  std::int64_t const at = t * p.channels + c;
  if (p.y != nullptr) {
    store_floats<V>(p.y + at, y);
  }
  if (p.y_silu != nullptr || p.y_silu16 != nullptr) {
    float_vec<V> a;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      a.v[j] = silu_fast(y.v[j]);
    }
    if (p.y_silu != nullptr) {
      store_floats<V>(p.y_silu + at, a);
    }
    if (p.y_silu16 != nullptr) {
      store_rounded<V>(p.y_silu16 + at, a);
    }
  }
}

//! Writes dx's channels [c, c + V) of token t (its final value: the kernels overwrite dx) and/or its bf16
//! rounding, whichever is asked for.
template <int V, class T>
__device__ inline void store_dx(conv_params<T> const& p, std::int64_t t, std::int64_t c, float_vec<V> const& g) {
  if (p.dx != nullptr) {
    store_floats<V>(p.dx + t * p.lddx + c, g);
  }
  if (p.dx16 != nullptr) {
    store_rounded<V>(p.dx16 + t * p.lddx + c, g);
  }
}

//! A thread's place in the run-structured kernels: channels [c, c + V) of tokens [t_begin, t_end).
struct conv_run {
  std::int64_t c, t_begin, t_end;
};

//! Item i of `groups` channel groups × runs of `run_tokens`: consecutive items take consecutive channel groups.
template <int V, class T>
__device__ inline conv_run run_of(conv_params<T> const& p, std::int64_t i, std::int64_t run_tokens) {
  std::int64_t const groups = p.channels / V, run = i / groups;
  std::int64_t const t_begin = run * run_tokens;
  return {(i - run * groups) * V, t_begin, t_begin + run_tokens < p.tokens ? t_begin + run_tokens : p.tokens};
}

//! How load_taps places the K taps in KMAX slots.
enum class tap_order {
  right_aligned,  // tap[KMAX - K + k] = w[c, k]
  left_aligned,   // tap[k] = w[c, k]
  reversed,       // tap[j] = w[c, K-1-j]
};

//! The taps of channels [c, c + V) in KMAX slots, placed as `order` says. Slots outside the width stay zero.
template <int V, int KMAX, tap_order order, class T>
__device__ inline void load_taps(conv_params<T> const& p, std::int64_t c, float_vec<V> (&tap)[KMAX]) {
  int const width = static_cast<int>(p.width), lead = KMAX - width;
#pragma unroll
  for (int m = 0; m < KMAX; ++m) {
    tap[m] = float_vec<V>{};
    int const k = order == tap_order::reversed ? width - 1 - m : order == tap_order::left_aligned ? m : m - lead;
    if (k >= 0 && k < width) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        tap[m].v[j] = p.weight[(c + j) * p.width + k];
      }
    }
  }
}

//! win[m] (m in [KMAX-K, KMAX-1)) = input at position pos0 + m of sequence s: the K-1 inputs before a token whose
//! position is pos0 + KMAX - 1. Slots before KMAX-K are unused.
template <int V, int KMAX, class T>
__device__ inline void fill_window(conv_params<T> const& p, std::int64_t s, std::int64_t t0, std::int64_t pos0,
                                   std::int64_t c, float_vec<V> (&win)[KMAX - 1]) {
  int const lead = KMAX - static_cast<int>(p.width);
#pragma unroll
  for (int m = 0; m < KMAX - 1; ++m) {
    win[m] = m >= lead ? input_at<V>(p, s, t0, pos0 + m, c) : float_vec<V>{};
  }
}

//! Drops the oldest window row and appends `newest`.
template <int V, int N>
__device__ inline void shift_in(float_vec<V> (&win)[N], float_vec<V> const& newest) {
#pragma unroll
  for (int m = 0; m + 1 < N; ++m) {
    win[m] = win[m + 1];
  }
  win[N - 1] = newest;
}

//! Forward over runs of conv_run_tokens; the window holds the K-1 inputs before the current token, and is refilled
//! from the initial state (or zeros) where a sequence starts. Sums in the host's order: bias, then k ascending. The
//! run's rows of x arrive in shared memory by asynchronous copies, all at once and while the taps, the bias and the
//! window load, each thread into its own slots: no rows held in registers (70 instead of 105) and 8 in flight. With
//! silu on the multi-function unit, 98 → 87 µs per layer at the paper shape; alone, the staging changed nothing
//! while the host's exp and division in silu bounded the kernel; runs of 8 tokens instead of 16, 94 → 85 µs
//! (docs/perf.md).
template <int V, int KMAX, class T>
__global__ void __launch_bounds__(conv_forward_threads) conv_forward_kernel(conv_params<T> p) {
  constexpr int R = static_cast<int>(conv_run_tokens);
  __shared__ __align__(16) float rows[R][conv_forward_threads * V];  // [token of the run, thread]: x
  int const slot = static_cast<int>(threadIdx.x) * V;
  std::int64_t const runs = (p.tokens + conv_run_tokens - 1) / conv_run_tokens, total = runs * (p.channels / V);
  int const lead = KMAX - static_cast<int>(p.width);
  for (std::int64_t i = blockIdx.x * std::int64_t{conv_forward_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * conv_forward_threads) {
    conv_run const r = run_of<V>(p, i, conv_run_tokens);
#pragma unroll
    for (int u = 0; u < R; ++u) {
      if (r.t_begin + u < r.t_end) {
        __pipeline_memcpy_async(&rows[u][slot], p.x + (r.t_begin + u) * p.ldx + r.c, sizeof(float) * V);
      }
    }
    __pipeline_commit();
    float_vec<V> tap[KMAX], win[KMAX - 1];
    load_taps<V, KMAX, tap_order::right_aligned>(p, r.c, tap);
    float_vec<V> bias;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      bias.v[j] = p.bias[r.c + j];  // one at a time: the vector test does not cover the bias pointer
    }
    std::int64_t s = sequence_of(p.offsets, p.count, r.t_begin), t0 = p.offsets[s], next = p.offsets[s + 1];
    fill_window<V, KMAX>(p, s, t0, r.t_begin - t0 - (KMAX - 1), r.c, win);
    __pipeline_wait_prior(0);
#pragma unroll
    for (int u = 0; u < R; ++u) {
      std::int64_t const t = r.t_begin + u;
      if (t < r.t_end) {
        if (enter_sequence(p.offsets, t, s, t0, next)) {  // a sequence starts at t: its window is before it
          fill_window<V, KMAX>(p, s, t0, -(KMAX - 1), r.c, win);
        }
        float_vec<V> const xv = load_floats<V>(&rows[u][slot]);
        float_vec<V> acc = bias;
#pragma unroll
        for (int m = 0; m < KMAX - 1; ++m) {
          if (m >= lead) {
            multiply_add(acc, tap[m], win[m]);
          }
        }
        multiply_add(acc, tap[KMAX - 1], xv);
        store_output<V>(p, t, r.c, acc);
        shift_in(win, xv);
      }
    }
  }
}

//! The forward for widths past conv_max_window: one thread per (token, channel group), every tap from memory.
template <int V, class T>
__global__ void __launch_bounds__(conv_threads) conv_forward_any_width_kernel(conv_params<T> p) {
  std::int64_t const groups = p.channels / V, total = p.tokens * groups;
  for (std::int64_t i = blockIdx.x * std::int64_t{conv_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * conv_threads) {
    std::int64_t const t = i / groups, c = (i % groups) * V;
    std::int64_t const s = sequence_of(p.offsets, p.count, t), t0 = p.offsets[s];
    float_vec<V> acc;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      acc.v[j] = p.bias[c + j];
    }
    for (std::int64_t k = 0; k < p.width; ++k) {
      float_vec<V> const xv = input_at<V>(p, s, t0, t - t0 - (p.width - 1) + k, c);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        acc.v[j] += p.weight[(c + j) * p.width + k] * xv.v[j];
      }
    }
    store_output<V>(p, t, c, acc);
  }
}

//! final_state[s, j, c] = input at position len - (K-1) + j: the last K-1 inputs (reaching into the initial state
//! when the sequence is shorter than K-1).
template <class T>
__global__ void __launch_bounds__(conv_threads) conv_final_state_kernel(conv_params<T> p) {
  std::int64_t const km1 = p.width - 1, per_seq = km1 * p.channels, total = p.count * per_seq;
  for (std::int64_t i = blockIdx.x * std::int64_t{conv_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * conv_threads) {
    std::int64_t const s = i / per_seq, j = (i % per_seq) / p.channels, c = i % p.channels;
    std::int64_t const t0 = p.offsets[s], len = p.offsets[s + 1] - t0;
    p.final_state[i] = input_at<1>(p, s, t0, len - km1 + j, c).v[0];
  }
}

//! Gradient at extended position e (0 .. K-2: the initial state; K-1+pos: token pos) of sequence s:
//! Σ_k w[c, k] dy[e - k] over tokens e - k in [0, len), plus the final state's gradient for e >= len, summed in
//! the host's order (the final state's gradient first, then tokens in increasing order).
template <int V, class T>
__device__ inline float_vec<V> extended_grad(conv_params<T> const& p, std::int64_t s, std::int64_t t0, std::int64_t len,
                                             std::int64_t e, std::int64_t c) {
  float_vec<V> acc{};
  if (e >= len && p.d_final != nullptr) {
    acc = load_floats<V>(p.d_final + (s * (p.width - 1) + e - len) * p.channels + c);
  }
  for (std::int64_t k = p.width - 1; k >= 0; --k) {
    std::int64_t const tp = e - k;
    if (tp >= 0 && tp < len) {
      float_vec<V> const g = grad_at<V>(p, s, t0, tp, c);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        acc.v[j] += p.weight[(c + j) * p.width + k] * g.v[j];
      }
    }
  }
  return acc;
}

//! dx and the dweight, dbias partials of a block of conv_block_tokens tokens, walked backwards; each dy and x row
//! is read once. The window is left-aligned (win[k] = the input at t-(K-1)+k, k < K; x[t] at k = K-1), so that the
//! walk brings each older input in at slot 0 and shifts the rest up; it is refilled where the walk enters an earlier
//! sequence. `ahead` holds g = ∂L/∂y of rows t+1 .. t+KMAX-1, whichever sequence they belong to, and a row counts
//! only when it lies before the end of t's sequence. dx[t] is extended_grad's sum (the final state's gradient within
//! K-1 of the sequence end, then g[t], g[t+1], ...); the partials sum g[t] · input[t-(K-1)+k] and g[t] over the
//! block's tokens, last first. Through the SiLU, y[t] is recomputed from the window in the forward's order.
//! The thread holds far more state than a plain pass (taps, window, the next rows' g, the sums), so its rows come
//! through shared memory by asynchronous copies, two batches of 4 in flight, instead of through registers: with the
//! loads in registers a batch at a time, few blocks fit an SM and too few bytes are in flight to keep DRAM busy.
//! For d_conv <= 4 the registers are capped at 128 (8 blocks per SM, as the shared memory allows; a few bytes spill).
//! AddDy: dy_add is given, staged beside dy. Capped at 128 registers that build spills 150-180 bytes (one took 35 %
//! longer than the plain build); capped at 170 (6 blocks per SM, more than the 130M shape's grid of about 5.5 per SM
//! fills) it spills none and takes 12 % longer.
template <int V, int KMAX, class T, bool AddDy>
__global__ void __launch_bounds__(conv_backward_threads, KMAX <= 4 ? (AddDy ? 6 : 8) : 1)
    conv_backward_kernel(conv_params<T> p) {
  constexpr int NB = conv_backward_batch, NS = 2;  // rows of a batch, batches in flight (each thread's own slots)
  __shared__ __align__(16) float rows[NS][NB][2][conv_backward_threads * V];  // [stage, token, dy | older x, thread]
  // [stage, token, thread]: dy_add's rows, by 8-byte copies (V = 1 reads dy_add from memory: asynchronous copies
  // move 4 bytes at least)
  constexpr bool stage_add = AddDy && V == 4;
  __shared__ __align__(8) bfloat16 rows_add[NS][NB][stage_add ? conv_backward_threads * V : 1];
  int const slot = static_cast<int>(threadIdx.x) * V;
  std::int64_t const blocks = (p.tokens + conv_block_tokens - 1) / conv_block_tokens;
  std::int64_t const total = blocks * (p.channels / V), width = p.width;
  bool const silu = p.dy_of == conv_activation::silu;
  for (std::int64_t i = blockIdx.x * std::int64_t{conv_backward_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * conv_backward_threads) {
    conv_run const r = run_of<V>(p, i, conv_block_tokens);
    float_vec<V> tap[KMAX], back[KMAX], bias;  // tap[k] = w[c, k] (k < K); back[j] = w[c, K-1-j] meets g[t + j]
    load_taps<V, KMAX, tap_order::reversed>(p, r.c, back);
    load_taps<V, KMAX, tap_order::left_aligned>(p, r.c, tap);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      bias.v[j] = p.bias[r.c + j];
    }
    float_vec<V> win[KMAX], ahead[KMAX - 1], sum[KMAX] = {}, bias_sum{};  // sum[k]: tap k
    std::int64_t s = sequence_of(p.offsets, p.count, r.t_end - 1), seq_begin = p.offsets[s], seq_end = p.offsets[s + 1];
#pragma unroll
    for (int m = 0; m < KMAX - 1; ++m) {
      ahead[m] = m + 1 < width && r.t_end + m < seq_end ? grad_at<V>(p, s, seq_begin, r.t_end + m - seq_begin, r.c)
                                                        : float_vec<V>{};
    }
    auto fill = [&](std::int64_t t) {  // the window of token t, in sequence s
#pragma unroll
      for (int k = 0; k < KMAX; ++k) {
        win[k] = k < width ? input_at<V>(p, s, seq_begin, t - seq_begin - (width - 1) + k, r.c) : float_vec<V>{};
      }
    };
    // Batch tb: rows tb-1-u of dy and tb-1-u-K of x (the next window's oldest input), into stage st.
    auto issue = [&](int st, std::int64_t tb) {
#pragma unroll
      for (int u = 0; u < NB; ++u) {
        std::int64_t const t = tb - 1 - u;
        if (t >= r.t_begin) {
          __pipeline_memcpy_async(&rows[st][u][0][slot], p.dy + t * p.channels + r.c, sizeof(float) * V);
          if constexpr (stage_add) {
            __pipeline_memcpy_async(&rows_add[st][u][slot], p.dy_add + t * p.channels + r.c, sizeof(bfloat16) * V);
          }
          if (t - width >= 0) {
            __pipeline_memcpy_async(&rows[st][u][1][slot], p.x + (t - width) * p.ldx + r.c, sizeof(float) * V);
          }
        }
      }
      __pipeline_commit();
    };
    fill(r.t_end - 1);
#pragma unroll
    for (int q = 0; q < NS; ++q) {
      issue(q, r.t_end - q * NB);
    }
    int st = 0;
    for (std::int64_t tb = r.t_end; tb > r.t_begin; tb -= NB, st = st + 1 < NS ? st + 1 : 0) {
      __pipeline_wait_prior(NS - 1);  // this batch has landed; the later ones may still be in flight
      // Token t from row u of the stage. Edge: t may start an earlier sequence, lie within K-1 of its sequence's
      // end (the final state's gradient, rows of ahead past the end) or within K of its start (the window's next
      // input from the initial state); batches wholly inside a sequence skip those checks.
      auto token = [&]<bool Edge>(int u, std::int64_t t) {
        if (Edge && t < seq_begin) {  // t is the last token of an earlier sequence (skipping empty ones)
          while (t < p.offsets[s]) {
            --s;
          }
          seq_begin = p.offsets[s];
          seq_end = p.offsets[s + 1];
          fill(t);
        }
        float_vec<V> g = load_floats<V>(&rows[st][u][0][slot]);
        if constexpr (AddDy) {
          add_widened(g, stage_add ? &rows_add[st][u][slot] : p.dy_add + t * p.channels + r.c);
        }
        if (silu) {
          float_vec<V> y = bias;
#pragma unroll
          for (int k = 0; k < KMAX; ++k) {
            if (k < width) {
              multiply_add(y, tap[k], win[k]);
            }
          }
          through_silu(g, y);
        }
#pragma unroll
        for (int k = 0; k < KMAX; ++k) {
          if (k < width) {
            multiply_add(sum[k], g, win[k]);
          }
        }
#pragma unroll
        for (int j = 0; j < V; ++j) {
          bias_sum.v[j] += g.v[j];
        }
        std::int64_t const rows_left = Edge ? seq_end - t : width;  // t and the rows after it in its sequence
        float_vec<V> acc{};
        if (Edge && rows_left < width && p.d_final != nullptr) {
          acc = load_floats<V>(p.d_final + (s * (width - 1) + width - 1 - rows_left) * p.channels + r.c);
        }
        multiply_add(acc, back[0], g);
#pragma unroll
        for (int j = 1; j < KMAX; ++j) {
          if (j < width && (!Edge || j < rows_left)) {
            multiply_add(acc, back[j], ahead[j - 1]);
          }
        }
        store_dx<V>(p, t, r.c, acc);
#pragma unroll
        for (int m = KMAX - 2; m > 0; --m) {
          ahead[m] = ahead[m - 1];
        }
        ahead[0] = g;
#pragma unroll
        for (int k = KMAX - 1; k > 0; --k) {
          win[k] = win[k - 1];
        }
        if (!Edge || t - width >= seq_begin) {  // t - 1's oldest input
          win[0] = load_floats<V>(&rows[st][u][1][slot]);
        } else if (t > seq_begin) {  // from the initial state; at a sequence start the window is refilled instead
          win[0] = input_at<V>(p, s, seq_begin, t - width - seq_begin, r.c);
        }
      };
      if (tb - NB >= r.t_begin && tb - NB - width >= seq_begin && tb - 1 + width <= seq_end) {
#pragma unroll
        for (int u = 0; u < NB; ++u) {
          token.template operator()<false>(u, tb - 1 - u);
        }
      } else {
#pragma unroll
        for (int u = 0; u < NB; ++u) {
          if (tb - 1 - u >= r.t_begin) {
            token.template operator()<true>(u, tb - 1 - u);
          }
        }
      }
      issue(st, tb - NS * NB);  // this thread has read the stage's rows above
    }
    __pipeline_wait_prior(0);  // nothing in flight into the slots when the next item starts
    T* out = p.partial + (r.t_begin / conv_block_tokens) * (width + 1) * p.channels + r.c;  // [K+1, C] of the block
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
      if (k < width) {
        store_floats<V>(out + k * p.channels, sum[k]);
      }
    }
    store_floats<V>(out + width * p.channels, bias_sum);
  }
}

//! dx for widths past conv_max_window: one thread per (token, channel group), every tap from memory.
template <int V, class T>
__global__ void __launch_bounds__(conv_threads) conv_backward_dx_any_width_kernel(conv_params<T> p) {
  std::int64_t const groups = p.channels / V, total = p.tokens * groups;
  for (std::int64_t i = blockIdx.x * std::int64_t{conv_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * conv_threads) {
    std::int64_t const t = i / groups, c = (i % groups) * V;
    std::int64_t const s = sequence_of(p.offsets, p.count, t), t0 = p.offsets[s], len = p.offsets[s + 1] - t0;
    store_dx<V>(p, t, c, extended_grad<V>(p, s, t0, len, p.width - 1 + t - t0, c));
  }
}

template <class T>
__global__ void __launch_bounds__(conv_threads) conv_backward_init_kernel(conv_params<T> p) {
  std::int64_t const km1 = p.width - 1, per_seq = km1 * p.channels, total = p.count * per_seq;
  for (std::int64_t i = blockIdx.x * std::int64_t{conv_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * conv_threads) {
    std::int64_t const s = i / per_seq, j = (i % per_seq) / p.channels, c = i % p.channels;
    std::int64_t const t0 = p.offsets[s], len = p.offsets[s + 1] - t0;
    p.d_init[i] = extended_grad<1>(p, s, t0, len, j, c).v[0];
  }
}

//! The partials for widths past conv_max_window: blockIdx.x = token block; threads over the (K+1)·C columns.
template <class T>
__global__ void __launch_bounds__(conv_threads) conv_dweight_partial_any_width_kernel(conv_params<T> p) {
  std::int64_t const cols = (p.width + 1) * p.channels;
  std::int64_t const t_begin = blockIdx.x * conv_block_tokens;
  std::int64_t const t_end = t_begin + conv_block_tokens < p.tokens ? t_begin + conv_block_tokens : p.tokens;
  std::int64_t const s_begin = sequence_of(p.offsets, p.count, t_begin);
  for (std::int64_t q = blockIdx.y * std::int64_t{conv_threads} + threadIdx.x; q < cols;
       q += std::int64_t{gridDim.y} * conv_threads) {
    std::int64_t const k = q / p.channels, c = q % p.channels;
    std::int64_t s = s_begin;
    T acc = 0;
    for (std::int64_t t = t_begin; t < t_end; ++t) {
      while (t >= p.offsets[s + 1]) {
        ++s;
      }
      std::int64_t const t0 = p.offsets[s];
      T const g = grad_at<1>(p, s, t0, t - t0, c).v[0];
      acc += k == p.width ? g : g * input_at<1>(p, s, t0, t - t0 - (p.width - 1) + k, c).v[0];
    }
    p.partial[blockIdx.x * cols + q] = acc;
  }
}

//! dweight[c, k] += Σ_b partial[b, k, c] and dbias[c] += Σ_b partial[b, K, c]: a block per 32 columns, warp w
//! summing block rows w, w + 8, ... in order, then lane c of warp 0 the 8 sums in warp order (a fixed order, so the
//! result is deterministic; one thread per column summing every row left most SMs idle).
inline constexpr int conv_reduce_warps = 8;

template <class T>
__global__ void __launch_bounds__(conv_reduce_warps * 32)
    conv_dweight_reduce_kernel(conv_params<T> p, std::int64_t blocks) {
  __shared__ T part[conv_reduce_warps][32];
  std::int64_t const cols = (p.width + 1) * p.channels;
  int const lane = static_cast<int>(threadIdx.x) % 32, w = static_cast<int>(threadIdx.x) / 32;
  for (std::int64_t q0 = blockIdx.x * std::int64_t{32}; q0 < cols; q0 += std::int64_t{gridDim.x} * 32) {
    std::int64_t const q = q0 + lane;
    T sum = 0;
    if (q < cols) {
      for (std::int64_t b = w; b < blocks; b += conv_reduce_warps) {
        sum += p.partial[b * cols + q];
      }
    }
    part[w][lane] = sum;
    __syncthreads();
    if (w == 0 && q < cols) {
      T total = 0;
#pragma unroll
      for (int g = 0; g < conv_reduce_warps; ++g) {
        total += part[g][lane];
      }
      std::int64_t const k = q / p.channels, c = q % p.channels;
      if (k < p.width) {
        p.dweight[c * p.width + k] += total;
      } else {
        p.dbias[c] += total;
      }
    }
    __syncthreads();  // part is read before the next columns' sums replace it
  }
}

}  // namespace detail

//! One causal conv step of one channel, before the activation: bias + w[K-1] x + Σ_k w[k] win[k] (the host's order:
//! the newest tap first, then the window oldest to newest), then the window moves on in registers, x entering last.
//! w: the channel's K taps; win: its K-1 = km1 ≤ KM1 values, oldest first (those past km1 unused).
template <int KM1, class T>
__device__ inline T conv_window_step(T const* w, T bias, T x, T (&win)[KM1], int km1) {
  T v = bias + w[km1] * x;
#pragma unroll
  for (int k = 0; k < KM1; ++k) {
    if (k < km1) {
      v += w[k] * win[k];
    }
  }
#pragma unroll
  for (int k = 0; k < KM1; ++k) {
    if (k < km1) {
      win[k] = k + 1 < km1 ? win[k + 1] : x;
    }
  }
  return v;
}

namespace detail {

//! One token per sequence: x [B, C] (row stride ldx) -> y [B, C] (and its bf16 rounding y16, when not null);
//! state [B, K-1, C] (oldest first) shifts in place. Channels on the grid's x, rows on its y: no division. KM1 > 0
//! is the state's row count K-1 at compile time (Mamba's d_conv 4 and the smaller ones): the window is loaded into
//! registers, all its loads in flight at once, before any store; KM1 = 0 walks any width from memory.
template <class T, int KM1>
__global__ void __launch_bounds__(conv_threads)
    conv_step_kernel(std::int64_t batch, std::int64_t channels, std::int64_t width, T const* weight, T const* bias,
                     T const* x, std::int64_t ldx, T* y, bfloat16* y16, T* state, conv_activation act) {
  std::int64_t const km1 = width - 1;
  for (std::int64_t c = blockIdx.x * std::int64_t{conv_threads} + threadIdx.x; c < channels;
       c += std::int64_t{gridDim.x} * conv_threads) {
    T const* w = weight + c * width;  // [K]
    for (std::int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
      T const xv = x[b * ldx + c];
      T* st = km1 > 0 ? state + b * km1 * channels + c : nullptr;  // column c of [K-1, C]
      T v;
      if constexpr (KM1 > 0) {
        T win[KM1];  // [K-1]: the window, oldest first
#pragma unroll
        for (int k = 0; k < KM1; ++k) {
          win[k] = st[k * channels];
        }
        v = conv_window_step(w, bias[c], xv, win, KM1);
#pragma unroll
        for (int k = 0; k < KM1; ++k) {
          st[k * channels] = win[k];
        }
      } else {
        v = bias[c] + w[km1] * xv;  // conv_window_step's order, the window walked in memory
        for (std::int64_t k = 0; k < km1; ++k) {
          v += w[k] * st[k * channels];
        }
        for (std::int64_t k = 0; k + 1 < km1; ++k) {
          st[k * channels] = st[(k + 1) * channels];
        }
        if (km1 > 0) {
          st[(km1 - 1) * channels] = xv;
        }
      }
      T const out = act == conv_activation::silu ? silu_fast(v) : v;
      if (y != nullptr) {
        y[b * channels + c] = out;
      }
      if (y16 != nullptr) {
        y16[b * channels + c] = bfloat16(static_cast<float>(out));
      }
    }
  }
}

inline void check_conv(device_sequences const& seqs, conv1d_weights const& w, std::int64_t ldx) {
  check_arg(seqs.count >= 0, "sequence count", seqs.count, "must be non-negative");
  check_arg(seqs.tokens >= 0, "token count", seqs.tokens, "must be non-negative");
  check_arg(seqs.count > 0 || seqs.tokens == 0, "token count", seqs.tokens, "must be 0 without sequences");
  check(seqs.count == 0 || seqs.offsets != nullptr, "conv1d (cuda): sequence offsets must be a device pointer");
  check_arg(w.channels >= 1, "conv1d channels", w.channels, "must be positive");
  check_arg(w.width >= 1, "d_conv", w.width, "must be at least 1");
  check_arg(ldx >= w.channels, "conv1d ldx", ldx, "must be at least the channel count");
  check(w.weight != nullptr && w.bias != nullptr, "conv1d (cuda): weight and bias must be device pointers");
}

//! What forward and backward both pass their kernels: the sequences, the weights, the input and the initial state.
inline conv_params<float> input_params(device_sequences const& seqs, conv1d_weights const& w, float const* x,
                                       std::int64_t ldx, float const* init_state) {
  conv_params<float> p{};
  p.offsets = seqs.offsets;
  p.count = seqs.count;
  p.tokens = seqs.tokens;
  p.channels = w.channels;
  p.width = w.width;
  p.weight = w.weight;
  p.bias = w.bias;
  p.x = x;
  p.init = init_state;
  p.ldx = ldx;
  return p;
}

//! Calls launch(V, KMAX) as std::integral_constants: V = 4 channels per thread when `vec4`, else 1; KMAX the
//! narrowest register window that holds the width, or 0 past conv_max_window.
template <class Launch>
void by_shape(bool vec4, std::int64_t width, Launch&& launch) {
  auto with_vector = [&](auto kmax) {
    if (vec4) {
      launch(std::integral_constant<int, 4>{}, kmax);
    } else {
      launch(std::integral_constant<int, 1>{}, kmax);
    }
  };
  if (width <= 4) {
    with_vector(std::integral_constant<int, 4>{});
  } else if (width <= conv_max_window) {
    with_vector(std::integral_constant<int, conv_max_window>{});
  } else {
    with_vector(std::integral_constant<int, 0>{});
  }
}

//! Items of the run-structured kernels: channel groups × runs of `run_tokens`.
inline std::int64_t run_items(conv_params<float> const& p, bool vec4, std::int64_t run_tokens) {
  return (vec4 ? p.channels / 4 : p.channels) * ((p.tokens + run_tokens - 1) / run_tokens);
}

//! Vector forms need 16-byte rows and pointers: C and the strides multiples of 4, every float pointer 16-byte
//! aligned and every bf16 pointer (4 channels: one 8-byte store) 8-byte aligned.
inline bool forward_vec4(conv_params<float> const& p) {
  return p.channels % 4 == 0 && p.ldx % 4 == 0 && aligned16(p.x) && aligned16(p.y) && aligned16(p.init) &&
         aligned16(p.y_silu) && aligned8(p.y_silu16);
}
inline bool backward_vec4(conv_params<float> const& p) {
  return p.channels % 4 == 0 && p.ldx % 4 == 0 && p.lddx % 4 == 0 && aligned16(p.x) && aligned16(p.init) &&
         aligned16(p.dy) && aligned8(p.dy_add) && aligned16(p.dx) && aligned16(p.d_final) && aligned8(p.dx16) &&
         aligned16(p.partial);
}

//! The forward over runs of conv_run_tokens or, for widths past conv_max_window, a thread per token and channel group.
inline void launch_forward(conv_params<float> const& p, cudaStream_t stream) {
  bool const vec4 = forward_vec4(p);
  by_shape(vec4, p.width, [&](auto v, auto kmax) {
    constexpr int V = decltype(v)::value, KMAX = decltype(kmax)::value;
    if constexpr (KMAX == 0) {
      conv_forward_any_width_kernel<V, float>
          <<<ops::cuda::grid_blocks(p.tokens * (p.channels / V), conv_threads), conv_threads, 0, stream>>>(p);
    } else {
      conv_forward_kernel<V, KMAX, float>
          <<<ops::cuda::grid_blocks(run_items(p, vec4, conv_run_tokens), conv_forward_threads), conv_forward_threads, 0,
             stream>>>(p);
    }
  });
  backends::cuda_check_launch("conv_forward_kernel");
}

//! dx and the per-block partials of dweight and dbias (`blocks` token blocks) in one walk, or for widths past
//! conv_max_window in two kernels; then the partials' sum in a fixed order.
inline void launch_backward(conv_params<float> const& p, std::int64_t blocks, cudaStream_t stream) {
  bool const vec4 = backward_vec4(p);
  std::int64_t const cols = (p.width + 1) * p.channels;
  by_shape(vec4, p.width, [&](auto v, auto kmax) {
    constexpr int V = decltype(v)::value, KMAX = decltype(kmax)::value;
    if constexpr (KMAX == 0) {
      conv_backward_dx_any_width_kernel<V, float>
          <<<ops::cuda::grid_blocks(p.tokens * (p.channels / V), conv_threads), conv_threads, 0, stream>>>(p);
      backends::cuda_check_launch("conv_backward_dx_any_width_kernel");
      dim3 const grid(static_cast<unsigned>(blocks), ops::cuda::grid_blocks(cols, conv_threads, 64));
      conv_dweight_partial_any_width_kernel<float><<<grid, conv_threads, 0, stream>>>(p);
      backends::cuda_check_launch("conv_dweight_partial_any_width_kernel");
    } else {
      auto const kernel = p.dy_add != nullptr ? &conv_backward_kernel<V, KMAX, float, true>
                                              : &conv_backward_kernel<V, KMAX, float, false>;
      kernel<<<ops::cuda::grid_blocks(run_items(p, vec4, conv_block_tokens), conv_backward_threads),
               conv_backward_threads, 0, stream>>>(p);
      backends::cuda_check_launch("conv_backward_kernel");
    }
  });
  conv_dweight_reduce_kernel<float><<<ops::cuda::grid_blocks(cols, 32), conv_reduce_warps * 32, 0, stream>>>(p, blocks);
  backends::cuda_check_launch("conv_dweight_reduce_kernel");
}

}  // namespace detail

//! The forward's optional activated outputs, written by the pass that writes y (device pointers, null: not
//! written): y = silu of the convolution, and y16 = the same values rounded to bf16 (nearest even, as
//! backends::round_to_bf16 of y). Both [T, C] like the plain output.
struct conv_silu_out {
  float* y = nullptr;       // [T, C]
  bfloat16* y16 = nullptr;  // [T, C]
};

//! Forward on `be.stream`, device pointers: x [T, C] (row stride ldx) -> y [T, C]; init_state and final_state
//! [S, K-1, C] or null; silu_out (null pointers: none) also receives silu(y). y may be null when silu_out is not:
//! a backward given dy_of = silu recomputes y.
inline void conv1d_forward(backends::cuda const& be, device_sequences const& seqs, conv1d_weights const& w,
                           float const* x, std::int64_t ldx, float* y, float const* init_state, float* final_state,
                           conv_silu_out const& silu_out = {}) {
  detail::check_conv(seqs, w, ldx);
  check(seqs.tokens == 0 || (x != nullptr && (y != nullptr || silu_out.y != nullptr || silu_out.y16 != nullptr)),
        "conv1d forward (cuda): x must not be null, and y neither unless a silu output is asked for");
  auto const overwrites = [&](void const* q) { return q != nullptr && (q == x || q == y); };
  check(!overwrites(silu_out.y) && !overwrites(silu_out.y16),
        "conv1d forward (cuda): the silu outputs must not overwrite x or y");
  auto p = detail::input_params(seqs, w, x, ldx, init_state);
  p.y = y;
  p.y_silu = silu_out.y;
  p.y_silu16 = silu_out.y16;
  p.final_state = final_state;
  if (seqs.tokens > 0) {
    detail::launch_forward(p, be.stream);
  }
  std::int64_t const state_items = seqs.count * (w.width - 1) * w.channels;
  if (final_state != nullptr && state_items > 0) {
    detail::conv_final_state_kernel<float>
        <<<ops::cuda::grid_blocks(state_items, detail::conv_threads), detail::conv_threads, 0, be.stream>>>(p);
    backends::cuda_check_launch("conv_final_state_kernel");
  }
}

//! Device workspace bytes the backward needs (pass at least this much, or null to allocate per call).
inline std::size_t conv1d_backward_workspace_bytes(std::int64_t tokens, std::int64_t channels, std::int64_t width) {
  std::int64_t const blocks = (tokens + detail::conv_block_tokens - 1) / detail::conv_block_tokens;
  return static_cast<std::size_t>(blocks * (width + 1) * channels) * sizeof(float);
}

//! Backward on `be.stream`, device pointers: writes dx [T, C] (row stride lddx) and, when not null, d_init_state
//! [S, K-1, C]; adds to dweight [C, K] and dbias [C]. dy is [T, C]; init_state (the forward's) and d_final_state
//! (the gradient arriving at the final state) are [S, K-1, C] or null. dx16 (null: not written) also receives dx
//! rounded to bf16 (nearest even, as backends::round_to_bf16 of dx), with dx's row stride; with dx16, dx may be
//! null (a bf16 GEMM's operand needs only the rounding). dy_of = silu: dy is the gradient of silu(y), the
//! forward's silu output (y is recomputed from x; the host layer's backward with y_pre). dy_add ([T, C], or null): more
//! of dy, in bf16, added to it as it is read: the share of the gradient a bf16 GEMM made, which would cost that GEMM
//! a read and a write of dy in fp32 to add itself.
inline void conv1d_backward(backends::cuda const& be, device_sequences const& seqs, conv1d_weights const& w,
                            float const* x, std::int64_t ldx, float const* dy, float* dx, std::int64_t lddx,
                            float const* init_state, float const* d_final_state, float* d_init_state, float* dweight,
                            float* dbias, void* workspace = nullptr, bfloat16* dx16 = nullptr,
                            conv_activation dy_of = conv_activation::none, bfloat16 const* dy_add = nullptr) {
  detail::check_conv(seqs, w, ldx);
  check_arg(lddx >= w.channels, "conv1d lddx", lddx, "must be at least the channel count");
  check(dweight != nullptr && dbias != nullptr, "conv1d backward (cuda): dweight and dbias must not be null");
  check(seqs.tokens == 0 || (x != nullptr && dy != nullptr && (dx != nullptr || dx16 != nullptr)),
        "conv1d backward (cuda): x, dy and dx (or dx16) must not be null");
  check(dx16 == nullptr || static_cast<void const*>(dx16) != dx, "conv1d backward (cuda): dx16 must not overwrite dx");
  std::int64_t const blocks = (seqs.tokens + detail::conv_block_tokens - 1) / detail::conv_block_tokens;
  check_arg(blocks <= INT_MAX, "token count", seqs.tokens, "must be at most (2^31 - 1) · 128");
  ops::cuda::scratch ws(workspace, conv1d_backward_workspace_bytes(seqs.tokens, w.channels, w.width), be.stream);
  auto p = detail::input_params(seqs, w, x, ldx, init_state);
  p.dy = dy;
  p.dy_add = dy_add;
  p.dy_of = dy_of;
  p.d_final = d_final_state;
  p.dx = dx;
  p.dx16 = dx16;
  p.d_init = d_init_state;
  p.partial = ws.at<float>(0);
  p.dweight = dweight;
  p.dbias = dbias;
  p.lddx = lddx;
  if (seqs.tokens > 0) {
    detail::launch_backward(p, blocks, be.stream);
  }
  std::int64_t const state_items = seqs.count * (w.width - 1) * w.channels;
  if (d_init_state != nullptr && state_items > 0) {
    detail::conv_backward_init_kernel<float>
        <<<ops::cuda::grid_blocks(state_items, detail::conv_threads), detail::conv_threads, 0, be.stream>>>(p);
    backends::cuda_check_launch("conv_backward_init_kernel");
  }
}

//! One token per sequence on `be.stream`: x [B, C] (row stride ldx) -> y [B, C] (or silu of it, per `act`);
//! state [B, K-1, C] (oldest row first) shifts in place, as conv1d::step on the host. y16 ([B, C], or null) also
//! receives y rounded to bf16 (nearest even), for GEMMs that read it; y may then be null.
inline void conv1d_step(backends::cuda const& be, conv1d_weights const& w, float const* x, std::int64_t ldx, float* y,
                        float* state, std::int64_t batch, conv_activation act = conv_activation::none,
                        bfloat16* y16 = nullptr) {
  check_arg(batch >= 0, "conv1d step batch", batch, "must be non-negative");
  check_arg(w.channels >= 1, "conv1d channels", w.channels, "must be positive");
  check_arg(w.width >= 1, "d_conv", w.width, "must be at least 1");
  check_arg(ldx >= w.channels, "conv1d ldx", ldx, "must be at least the channel count");
  check(batch == 0 || (w.weight != nullptr && w.bias != nullptr && x != nullptr && (y != nullptr || y16 != nullptr) &&
                       (w.width == 1 || state != nullptr)),
        "conv1d step (cuda): weight, bias, x, y (or y16) and state must be device pointers, not null");
  if (batch == 0) {
    return;
  }
  dim3 const grid(ops::cuda::grid_blocks(w.channels, detail::conv_threads),
                  static_cast<unsigned>(batch < 65535 ? batch : 65535));
  auto launch = [&](auto kernel) {
    kernel<<<grid, detail::conv_threads, 0, be.stream>>>(batch, w.channels, w.width, w.weight, w.bias, x, ldx, y, y16,
                                                         state, act);
  };
  switch (w.width) {
  case 2:
    launch(detail::conv_step_kernel<float, 1>);
    break;
  case 3:
    launch(detail::conv_step_kernel<float, 2>);
    break;
  case 4:
    launch(detail::conv_step_kernel<float, 3>);
    break;
  default:
    launch(detail::conv_step_kernel<float, 0>);
    break;
  }
  backends::cuda_check_launch("conv_step_kernel");
}

}  // namespace ssmlen::layers::cuda
