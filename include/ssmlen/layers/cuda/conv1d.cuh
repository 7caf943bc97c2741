// SPDX-License-Identifier: Apache-2.0
//! @file conv1d.cuh
//! Causal depthwise 1-D convolution on a CUDA device, float32, with the semantics of layers/conv1d.hpp:
//!   y[t, c] = bias[c] + Σ_k w[c, k] · x[t − (K−1) + k, c]
//! per sequence of a packed batch, restarting at every sequence boundary; positions before a sequence's start come
//! from its initial state ([S, K−1, C], the K−1 inputs that preceded it) or are zero, and the final state is its
//! last K−1 inputs. The backward gives dx, d_init_state (gradients through both states) and adds dweight, dbias;
//! step advances one token per sequence of a batch of recurrent states.
//!
//! Forward and dx: one thread per (token, 4 channels) with 16-byte loads and stores when the channel count, the row
//! strides and the pointers allow it (one per channel otherwise); a binary search over the device offsets finds the
//! token's sequence. dweight and dbias are deterministic without atomics: each block of 128 tokens writes one
//! partial per (k, channel), and a second kernel adds the partials in block order.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/cuda/device_sequences.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>

#include <cuda_runtime.h>

#include <climits>
#include <cstddef>
#include <cstdint>

namespace ssmlen::layers::cuda {

//! The layer's parameters as device pointers.
struct conv1d_weights {
  std::int64_t channels = 0, width = 0;  // C, K
  float const* weight = nullptr;         // [C, K]
  float const* bias = nullptr;           // [C]
};

namespace detail {

inline constexpr int conv_threads = 256;
inline constexpr std::int64_t conv_block_tokens = 128;  // tokens per dweight partial: fixed, so the sum order is too

template <class T>
struct conv_params {
  std::int64_t const* offsets;
  std::int64_t count, tokens, channels, width;
  T const *weight, *bias, *x, *init;  // init: [S, K-1, C] or null
  std::int64_t ldx;
  T *y, *final_state;  // forward
  T const *dy, *d_final;
  T *dx, *d_init, *partial, *dweight, *dbias;  // backward
  std::int64_t lddx;
};

//! V consecutive channels in registers; V = 4 moves them as one 16-byte vector.
template <int V>
struct lanes_of {
  float v[V];
};

template <int V>
__device__ inline lanes_of<V> load_vec(float const* p) {
  lanes_of<V> r;
  if constexpr (V == 4) {
    float4 const q = *reinterpret_cast<float4 const*>(p);
    r.v[0] = q.x;
    r.v[1] = q.y;
    r.v[2] = q.z;
    r.v[3] = q.w;
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      r.v[j] = p[j];
    }
  }
  return r;
}

template <int V>
__device__ inline void store_vec(float* p, lanes_of<V> const& r) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      p[j] = r.v[j];
    }
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

//! Input at position `pos` of sequence s (starting at token t0), channels [c, c + V): x for pos >= 0, else the
//! initial state's row K-1+pos, or zeros.
template <int V, class T>
__device__ inline lanes_of<V> input_at(conv_params<T> const& p, std::int64_t s, std::int64_t t0, std::int64_t pos,
                                       std::int64_t c) {
  if (pos >= 0) {
    return load_vec<V>(p.x + (t0 + pos) * p.ldx + c);
  }
  if (p.init != nullptr) {
    return load_vec<V>(p.init + (s * (p.width - 1) + p.width - 1 + pos) * p.channels + c);
  }
  return lanes_of<V>{};
}

template <int V, class T>
__global__ void __launch_bounds__(conv_threads) conv_forward_kernel(conv_params<T> p) {
  std::int64_t const groups = p.channels / V, total = p.tokens * groups;
  for (std::int64_t i = blockIdx.x * std::int64_t{conv_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * conv_threads) {
    std::int64_t const t = i / groups, c = (i % groups) * V;
    std::int64_t const s = sequence_of(p.offsets, p.count, t), t0 = p.offsets[s];
    lanes_of<V> acc;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      acc.v[j] = p.bias[c + j];
    }
    for (std::int64_t k = 0; k < p.width; ++k) {
      lanes_of<V> const xv = input_at<V>(p, s, t0, t - t0 - (p.width - 1) + k, c);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        acc.v[j] += p.weight[(c + j) * p.width + k] * xv.v[j];
      }
    }
    store_vec<V>(p.y + t * p.channels + c, acc);
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
__device__ inline lanes_of<V> extended_grad(conv_params<T> const& p, std::int64_t s, std::int64_t t0, std::int64_t len,
                                            std::int64_t e, std::int64_t c) {
  lanes_of<V> acc{};
  if (e >= len && p.d_final != nullptr) {
    acc = load_vec<V>(p.d_final + (s * (p.width - 1) + e - len) * p.channels + c);
  }
  for (std::int64_t k = p.width - 1; k >= 0; --k) {
    std::int64_t const tp = e - k;
    if (tp >= 0 && tp < len) {
      lanes_of<V> const g = load_vec<V>(p.dy + (t0 + tp) * p.channels + c);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        acc.v[j] += p.weight[(c + j) * p.width + k] * g.v[j];
      }
    }
  }
  return acc;
}

template <int V, class T>
__global__ void __launch_bounds__(conv_threads) conv_backward_dx_kernel(conv_params<T> p) {
  std::int64_t const groups = p.channels / V, total = p.tokens * groups;
  for (std::int64_t i = blockIdx.x * std::int64_t{conv_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * conv_threads) {
    std::int64_t const t = i / groups, c = (i % groups) * V;
    std::int64_t const s = sequence_of(p.offsets, p.count, t), t0 = p.offsets[s], len = p.offsets[s + 1] - t0;
    store_vec<V>(p.dx + t * p.lddx + c, extended_grad<V>(p, s, t0, len, p.width - 1 + t - t0, c));
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

//! partial[b, k, c] = Σ over tokens of block b (in order) of dy[t, c] · input[t - (K-1) + k, c], and for k = K of
//! dy[t, c] (the bias). blockIdx.x = token block; threads over the (K+1)·C columns.
template <class T>
__global__ void __launch_bounds__(conv_threads) conv_dweight_partial_kernel(conv_params<T> p) {
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
      T const g = p.dy[t * p.channels + c];
      std::int64_t const t0 = p.offsets[s];
      acc += k == p.width ? g : g * input_at<1>(p, s, t0, t - t0 - (p.width - 1) + k, c).v[0];
    }
    p.partial[blockIdx.x * cols + q] = acc;
  }
}

//! dweight[c, k] += Σ_b partial[b, k, c] and dbias[c] += Σ_b partial[b, K, c], blocks in order.
template <class T>
__global__ void __launch_bounds__(conv_threads) conv_dweight_reduce_kernel(conv_params<T> p, std::int64_t blocks) {
  std::int64_t const cols = (p.width + 1) * p.channels;
  for (std::int64_t q = blockIdx.x * std::int64_t{conv_threads} + threadIdx.x; q < cols;
       q += std::int64_t{gridDim.x} * conv_threads) {
    T sum = 0;
    for (std::int64_t b = 0; b < blocks; ++b) {
      sum += p.partial[b * cols + q];
    }
    std::int64_t const k = q / p.channels, c = q % p.channels;
    if (k < p.width) {
      p.dweight[c * p.width + k] += sum;
    } else {
      p.dbias[c] += sum;
    }
  }
}

//! One token per sequence: x [B, C] (row stride ldx) -> y [B, C]; state [B, K-1, C] (oldest first) shifts in place.
template <class T>
__global__ void __launch_bounds__(conv_threads)
    conv_step_kernel(std::int64_t batch, std::int64_t channels, std::int64_t width, T const* weight, T const* bias,
                     T const* x, std::int64_t ldx, T* y, T* state) {
  std::int64_t const total = batch * channels, km1 = width - 1;
  for (std::int64_t i = blockIdx.x * std::int64_t{conv_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * conv_threads) {
    std::int64_t const b = i / channels, c = i % channels;
    T const xv = x[b * ldx + c];
    T const* w = weight + c * width;                             // [K]
    T* st = km1 > 0 ? state + b * km1 * channels + c : nullptr;  // column c of [K-1, C]
    T v = bias[c] + w[km1] * xv;
    for (std::int64_t k = 0; k < km1; ++k) {
      v += w[k] * st[k * channels];
    }
    y[b * channels + c] = v;
    for (std::int64_t k = 0; k + 1 < km1; ++k) {
      st[k * channels] = st[(k + 1) * channels];
    }
    if (km1 > 0) {
      st[(km1 - 1) * channels] = xv;
    }
  }
}

inline bool aligned16(void const* p) { return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

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

template <class Kernel4, class Kernel1>
void launch_by_width(bool vec4, std::int64_t tokens, std::int64_t channels, cudaStream_t stream,
                     conv_params<float> const& p, Kernel4 k4, Kernel1 k1, char const* name) {
  std::int64_t const items = tokens * (vec4 ? channels / 4 : channels);
  unsigned const blocks = ops::cuda::grid_blocks(items, conv_threads);
  if (vec4) {
    k4<<<blocks, conv_threads, 0, stream>>>(p);
  } else {
    k1<<<blocks, conv_threads, 0, stream>>>(p);
  }
  backends::cuda_check_launch(name);
}

}  // namespace detail

//! Forward on `be.stream`, device pointers: x [T, C] (row stride ldx) -> y [T, C]; init_state and final_state
//! [S, K-1, C] or null.
inline void conv1d_forward(backends::cuda const& be, device_sequences const& seqs, conv1d_weights const& w,
                           float const* x, std::int64_t ldx, float* y, float const* init_state, float* final_state) {
  detail::check_conv(seqs, w, ldx);
  check(seqs.tokens == 0 || (x != nullptr && y != nullptr), "conv1d forward (cuda): x and y must not be null");
  auto p = detail::input_params(seqs, w, x, ldx, init_state);
  p.y = y;
  p.final_state = final_state;
  if (seqs.tokens > 0) {
    bool const vec4 = w.channels % 4 == 0 && ldx % 4 == 0 && detail::aligned16(x) && detail::aligned16(y) &&
                      detail::aligned16(init_state);
    detail::launch_by_width(vec4, seqs.tokens, w.channels, be.stream, p, detail::conv_forward_kernel<4, float>,
                            detail::conv_forward_kernel<1, float>, "conv_forward_kernel");
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
//! (the gradient arriving at the final state) are [S, K-1, C] or null.
inline void conv1d_backward(backends::cuda const& be, device_sequences const& seqs, conv1d_weights const& w,
                            float const* x, std::int64_t ldx, float const* dy, float* dx, std::int64_t lddx,
                            float const* init_state, float const* d_final_state, float* d_init_state, float* dweight,
                            float* dbias, void* workspace = nullptr) {
  detail::check_conv(seqs, w, ldx);
  check_arg(lddx >= w.channels, "conv1d lddx", lddx, "must be at least the channel count");
  check(dweight != nullptr && dbias != nullptr, "conv1d backward (cuda): dweight and dbias must not be null");
  check(seqs.tokens == 0 || (x != nullptr && dy != nullptr && dx != nullptr),
        "conv1d backward (cuda): x, dy and dx must not be null");
  std::int64_t const blocks = (seqs.tokens + detail::conv_block_tokens - 1) / detail::conv_block_tokens;
  check_arg(blocks <= INT_MAX, "token count", seqs.tokens, "must be at most (2^31 - 1) · 128");
  ops::cuda::scratch ws(workspace, conv1d_backward_workspace_bytes(seqs.tokens, w.channels, w.width), be.stream);
  auto p = detail::input_params(seqs, w, x, ldx, init_state);
  p.dy = dy;
  p.d_final = d_final_state;
  p.dx = dx;
  p.d_init = d_init_state;
  p.partial = ws.at<float>(0);
  p.dweight = dweight;
  p.dbias = dbias;
  p.lddx = lddx;
  if (seqs.tokens > 0) {
    bool const vec4 = w.channels % 4 == 0 && lddx % 4 == 0 && detail::aligned16(dy) && detail::aligned16(dx) &&
                      detail::aligned16(d_final_state);
    detail::launch_by_width(vec4, seqs.tokens, w.channels, be.stream, p, detail::conv_backward_dx_kernel<4, float>,
                            detail::conv_backward_dx_kernel<1, float>, "conv_backward_dx_kernel");
    std::int64_t const cols = (w.width + 1) * w.channels;
    dim3 const grid(static_cast<unsigned>(blocks), ops::cuda::grid_blocks(cols, detail::conv_threads, 64));
    detail::conv_dweight_partial_kernel<float><<<grid, detail::conv_threads, 0, be.stream>>>(p);
    backends::cuda_check_launch("conv_dweight_partial_kernel");
    detail::conv_dweight_reduce_kernel<float>
        <<<ops::cuda::grid_blocks(cols, detail::conv_threads), detail::conv_threads, 0, be.stream>>>(p, blocks);
    backends::cuda_check_launch("conv_dweight_reduce_kernel");
  }
  std::int64_t const state_items = seqs.count * (w.width - 1) * w.channels;
  if (d_init_state != nullptr && state_items > 0) {
    detail::conv_backward_init_kernel<float>
        <<<ops::cuda::grid_blocks(state_items, detail::conv_threads), detail::conv_threads, 0, be.stream>>>(p);
    backends::cuda_check_launch("conv_backward_init_kernel");
  }
}

//! One token per sequence on `be.stream`: x [B, C] (row stride ldx) -> y [B, C]; state [B, K-1, C] (oldest row
//! first) shifts in place, as conv1d::step on the host.
inline void conv1d_step(backends::cuda const& be, conv1d_weights const& w, float const* x, std::int64_t ldx, float* y,
                        float* state, std::int64_t batch) {
  check_arg(batch >= 0, "conv1d step batch", batch, "must be non-negative");
  check_arg(w.channels >= 1, "conv1d channels", w.channels, "must be positive");
  check_arg(w.width >= 1, "d_conv", w.width, "must be at least 1");
  check_arg(ldx >= w.channels, "conv1d ldx", ldx, "must be at least the channel count");
  check(batch == 0 || (w.weight != nullptr && w.bias != nullptr && x != nullptr && y != nullptr &&
                       (w.width == 1 || state != nullptr)),
        "conv1d step (cuda): weight, bias, x, y and state must be device pointers, not null");
  if (batch == 0) {
    return;
  }
  detail::conv_step_kernel<float>
      <<<ops::cuda::grid_blocks(batch * w.channels, detail::conv_threads), detail::conv_threads, 0, be.stream>>>(
          batch, w.channels, w.width, w.weight, w.bias, x, ldx, y, state);
  backends::cuda_check_launch("conv_step_kernel");
}

}  // namespace ssmlen::layers::cuda
