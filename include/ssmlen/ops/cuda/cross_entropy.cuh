// SPDX-License-Identifier: Apache-2.0
//! @file cross_entropy.cuh
//! Masked softmax cross-entropy on a CUDA device, float32 logits, with the semantics of ops/cross_entropy.hpp: per
//! counted token -log softmax(logits)[target], and in the same pass dlogits = scale · (softmax − onehot) / count,
//! the gradient of scale × the mean loss. Masked-out tokens add nothing, get a zero gradient, and their logits and
//! targets are not read. The totals (loss summed over counted tokens, count) land in a device
//! ops::cross_entropy_result, so nothing waits for the host; its mean() is the mean loss.
//!
//! Three launches: the count (integers: exact in any order), then one warp per token (an online max and sum of
//! exponentials in one read of the row, then the gradient from a second read that hits cache), each block of 64
//! tokens summing its losses in token order, and a final fixed-order sum of the block partials in double: the same
//! bits on every run. A counted token whose target lies outside [0, vocab) cannot throw from the device: its loss
//! and gradient row are NaN, so the mean loss the caller reads is NaN.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/ops/cross_entropy.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace ssmlen::ops::cuda {

namespace detail {

inline constexpr int ce_threads = 256;
inline constexpr int ce_block_tokens = 64;  // tokens per partial sum: fixed, so the reduction order is too

template <class T>
struct ce_params {
  std::int64_t tokens, vocab;
  T const* logits;               // [tokens, vocab]
  std::int32_t const* targets;   // [tokens]
  std::uint8_t const* mask;      // [tokens] or null
  T* dlogits;                    // [tokens, vocab] or null
  T scale;                       // dlogits = scale (softmax - onehot) / count
  std::int64_t* count;           // [1], workspace
  double* partial;               // [ceil(tokens / 64)], workspace
  cross_entropy_result* result;  // [1]
};

//! Counted tokens, one block; integer sums are exact, so the order does not matter.
template <class T>
__global__ void __launch_bounds__(ce_threads) ce_count_kernel(ce_params<T> p) {
  __shared__ std::int64_t part[ce_threads];
  std::int64_t n = 0;
  for (std::int64_t t = threadIdx.x; t < p.tokens; t += ce_threads) {
    n += p.mask == nullptr || p.mask[t] != 0 ? 1 : 0;
  }
  std::int64_t const total = block_sum<ce_threads>(n, part);
  if (threadIdx.x == 0) {
    *p.count = total;
    p.result->count = total;
  }
}

//! Merges two (max, Σ exp(x − max)) pairs; an empty pair has max = −∞ and adds nothing.
template <class T>
__device__ inline void merge_lse(T& m, T& s, T om, T os) {
  T const mx = om > m ? om : m;
  T const a = m == -INFINITY ? T(0) : s * exp(m - mx);
  T const b = om == -INFINITY ? T(0) : os * exp(om - mx);
  m = mx;
  s = a + b;  // the partner computes b + a: the same bits
}

//! One warp per token, a block per 64 tokens; partial[block] = Σ of its tokens' losses in token order.
template <class T>
__global__ void __launch_bounds__(ce_threads) ce_loss_kernel(ce_params<T> p) {
  __shared__ double loss[ce_block_tokens];
  int const lane = static_cast<int>(threadIdx.x) % warp_lanes, warp = static_cast<int>(threadIdx.x) / warp_lanes;
  constexpr int warps = ce_threads / warp_lanes;
  std::int64_t const first = blockIdx.x * std::int64_t{ce_block_tokens};
  T const scale = *p.count > 0 ? p.scale / static_cast<T>(*p.count) : T(0);
  for (int i = warp; i < ce_block_tokens; i += warps) {
    std::int64_t const t = first + i;
    double token_loss = 0;
    if (t < p.tokens) {
      T* d = p.dlogits != nullptr ? p.dlogits + t * p.vocab : nullptr;  // [vocab]
      if (p.mask != nullptr && p.mask[t] == 0) {
        if (d != nullptr) {
          for (std::int64_t v = lane; v < p.vocab; v += warp_lanes) {
            d[v] = T(0);
          }
        }
      } else {
        T const* x = p.logits + t * p.vocab;  // [vocab]
        std::int32_t const y = p.targets[t];
        T m = -INFINITY, s = 0;  // this lane's running max and Σ exp(x − max)
        for (std::int64_t v = lane; v < p.vocab; v += warp_lanes) {
          T const xv = x[v];
          if (xv > m) {
            s = (m == -INFINITY ? T(0) : s * exp(m - xv)) + T(1);
            m = xv;
          } else {
            s += exp(xv - m);
          }
        }
#pragma unroll
        for (int h = warp_lanes / 2; h >= 1; h /= 2) {
          T const om = __shfl_xor_sync(0xffffffffu, m, h), os = __shfl_xor_sync(0xffffffffu, s, h);
          merge_lse(m, s, om, os);
        }
        bool const ok = y >= 0 && y < p.vocab;
        T const xy = ok ? x[y] : T(NAN);
        token_loss = (log(static_cast<double>(s)) + static_cast<double>(m)) - static_cast<double>(xy);
        if (d != nullptr) {
          T const k = ok ? scale / s : T(NAN);
          for (std::int64_t v = lane; v < p.vocab; v += warp_lanes) {
            T const e = exp(x[v] - m) * k;
            d[v] = v == y ? e - scale : e;
          }
        }
      }
    }
    if (lane == 0) {
      loss[i] = token_loss;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double sum = 0;
    for (int i = 0; i < ce_block_tokens; ++i) {
      sum += loss[i];
    }
    p.partial[blockIdx.x] = sum;
  }
}

//! result->loss = Σ partials: each thread sums a fixed strided subset in order, then a fixed tree.
template <class T>
__global__ void __launch_bounds__(ce_threads) ce_total_kernel(ce_params<T> p, std::int64_t blocks) {
  __shared__ double part[ce_threads];
  double sum = 0;
  for (std::int64_t b = threadIdx.x; b < blocks; b += ce_threads) {
    sum += p.partial[b];
  }
  double const total = block_sum<ce_threads>(sum, part);
  if (threadIdx.x == 0) {
    p.result->loss = total;
  }
}

inline std::int64_t ce_blocks(std::int64_t tokens) { return (tokens + ce_block_tokens - 1) / ce_block_tokens; }

}  // namespace detail

//! Device workspace bytes softmax_cross_entropy needs (pass at least this much, or null to allocate per call).
inline std::size_t cross_entropy_workspace_bytes(std::int64_t tokens) {
  return align_bytes(sizeof(std::int64_t)) + static_cast<std::size_t>(detail::ce_blocks(tokens)) * sizeof(double);
}

//! Softmax cross-entropy over logits [tokens, vocab] (dense rows) with targets [tokens] and mask [tokens] (nonzero
//! bytes count; null counts every token), on `be.stream`, all device pointers. Writes *result = {loss summed over
//! counted tokens, count} and, when dlogits is not null, dlogits = scale · (softmax − onehot(target)) / count for
//! counted tokens and 0 for the others (scale = 1: the gradient of the mean loss).
inline void softmax_cross_entropy(backends::cuda const& be, std::int64_t tokens, std::int64_t vocab,
                                  float const* logits, std::int32_t const* targets, std::uint8_t const* mask,
                                  float* dlogits, float scale, cross_entropy_result* result,
                                  void* workspace = nullptr) {
  check_arg(tokens >= 0, "cross_entropy tokens", tokens, "must be non-negative");
  check_arg(vocab >= 1, "cross_entropy vocab", vocab, "must be positive");
  check(tokens == 0 || (logits != nullptr && targets != nullptr),
        "cross_entropy (cuda): logits and targets must be device pointers, not null");
  check(result != nullptr, "cross_entropy (cuda): result must be a device pointer, not null");
  std::int64_t const blocks = detail::ce_blocks(tokens);
  check_arg(blocks <= INT_MAX, "cross_entropy tokens", tokens, "must be at most (2^31 - 1) · 64");
  scratch ws(workspace, cross_entropy_workspace_bytes(tokens), be.stream);
  detail::ce_params<float> const p{tokens,
                                   vocab,
                                   logits,
                                   targets,
                                   mask,
                                   dlogits,
                                   scale,
                                   ws.at<std::int64_t>(0),
                                   ws.at<double>(align_bytes(sizeof(std::int64_t))),
                                   result};
  detail::ce_count_kernel<float><<<1, detail::ce_threads, 0, be.stream>>>(p);
  backends::cuda_check_launch("ce_count_kernel");
  if (blocks > 0) {
    detail::ce_loss_kernel<float><<<static_cast<unsigned>(blocks), detail::ce_threads, 0, be.stream>>>(p);
    backends::cuda_check_launch("ce_loss_kernel");
  }
  detail::ce_total_kernel<float><<<1, detail::ce_threads, 0, be.stream>>>(p, blocks);
  backends::cuda_check_launch("ce_total_kernel");
}

}  // namespace ssmlen::ops::cuda
