// SPDX-License-Identifier: Apache-2.0
//! @file adamw.cuh
//! AdamW on a CUDA device over a list of float32 tensors, with the math of train/adamw.hpp: gradients clipped by
//! the global L2 norm, first and second moments, bias correction, and decoupled weight decay on the tensors marked
//! `decay`. One step is three launches on the optimizer's stream and never waits for the host:
//!   1. Σ g² per chunk of 4096 elements of one tensor (double, a fixed tree inside the block),
//!   2. one block sums the chunk partials in a fixed order: the norm, and the clip factor next to it,
//!   3. one fused update over every chunk of every tensor, reading the clip factor from device memory.
//! The norm is therefore the same bits on every run. A tensor with a bf16 copy (what bf16 GEMMs read) gets its copy
//! rewritten by the update, the new value rounded to nearest even, with no pass of its own. The host optimizer throws
//! when the norm is not finite; here the update is skipped instead (parameters and moments stay as they were) and the
//! caller sees the norm through grad_norm() or grad_norm_device().
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>
#include <ssmlen/train/adamw.hpp>

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ssmlen::train::cuda {

//! One parameter tensor and its optimizer state, all device pointers to `size` floats (the caller owns them; m and
//! v start at zero for a fresh optimizer, or hold restored moments).
struct adamw_tensor {
  float* value = nullptr;
  float const* grad = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  std::int64_t size = 0;
  bool decay = false;           // decoupled weight decay applies (matrices and embeddings)
  bfloat16* rounded = nullptr;  // `size` bf16: the value rounded, rewritten with it; or null
};

namespace detail {

inline constexpr int adamw_threads = 256;
inline constexpr std::int64_t adamw_chunk = 4096;  // elements per block: fixed, so the norm's sum order is too

//! Elements [begin, end) of one tensor: the unit of work of a block.
struct adamw_chunk_ref {
  std::int64_t tensor, begin, end;
};

//! The update's scalars for one step, rounded to float the way the host optimizer rounds them.
struct adamw_scalars {
  float b1, b2, one_minus_b1, one_minus_b2, step_size, inv_bc2, eps, decay;
};

template <class T>
__global__ void __launch_bounds__(adamw_threads)
    adamw_sum_squares_kernel(adamw_tensor const* tensors, adamw_chunk_ref const* chunks, double* partial) {
  __shared__ double shared[adamw_threads];
  adamw_chunk_ref const c = chunks[blockIdx.x];
  T const* g = tensors[c.tensor].grad;
  double s = 0;
  for (std::int64_t j = c.begin + threadIdx.x; j < c.end; j += adamw_threads) {
    s += static_cast<double>(g[j]) * static_cast<double>(g[j]);
  }
  double const total = ops::cuda::block_sum<adamw_threads>(s, shared);
  if (threadIdx.x == 0) {
    partial[blockIdx.x] = total;
  }
}

//! norm[0] = sqrt(Σ partials), norm[1] = the clip factor (1 when clipping is off or not needed).
template <class T>
__global__ void __launch_bounds__(adamw_threads)
    adamw_norm_kernel(double const* partial, std::int64_t chunks, double clip_norm, double* norm) {
  __shared__ double shared[adamw_threads];
  double s = 0;
  for (std::int64_t b = threadIdx.x; b < chunks; b += adamw_threads) {
    s += partial[b];
  }
  double const total = ops::cuda::block_sum<adamw_threads>(s, shared);
  if (threadIdx.x == 0) {
    double const n = sqrt(total);
    norm[0] = n;
    norm[1] = clip_norm > 0 && n > clip_norm ? clip_norm / n : 1.0;
  }
}

template <class T>
__global__ void __launch_bounds__(adamw_threads)
    adamw_update_kernel(adamw_tensor const* tensors, adamw_chunk_ref const* chunks, double const* norm,
                        adamw_scalars s) {
  if (!isfinite(norm[0])) {
    return;  // diverged: leave everything as it was
  }
  adamw_chunk_ref const c = chunks[blockIdx.x];
  adamw_tensor const t = tensors[c.tensor];
  auto const clip = static_cast<T>(norm[1]);
  T const decay = t.decay ? s.decay : T(0);
  for (std::int64_t j = c.begin + threadIdx.x; j < c.end; j += adamw_threads) {
    T const gj = t.grad[j] * clip;
    T const m = s.b1 * t.m[j] + s.one_minus_b1 * gj;
    T const v = s.b2 * t.v[j] + s.one_minus_b2 * gj * gj;
    T w = t.value[j];
    w -= decay * w;  // decoupled: shrink the weight, not the gradient
    w -= s.step_size * m / (sqrt(v * s.inv_bc2) + s.eps);
    t.m[j] = m;
    t.v[j] = v;
    t.value[j] = w;
    if (t.rounded != nullptr) {
      t.rounded[j] = bfloat16(static_cast<float>(w));
    }
  }
}

}  // namespace detail

//! The optimizer over a fixed list of device tensors; work is enqueued on the stream given at construction.
class adamw {
public:
  adamw(adamw_config const& cfg, std::vector<adamw_tensor> const& tensors, backends::cuda const& be = {})
      : cfg_(cfg), be_(be) {
    cfg_.validate();
    std::vector<detail::adamw_chunk_ref> chunks;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      auto const& t = tensors[i];
      std::string name = "adamw tensor ";  // appended, not operator+: g++ 12 misreports -Wrestrict on that
      name += std::to_string(i);
      name += " size";
      check_arg(t.size >= 0, name, t.size, "must be non-negative");
      check_arg(t.size == 0 || (t.value != nullptr && t.grad != nullptr && t.m != nullptr && t.v != nullptr), name,
                t.size, "needs value, grad, m and v device pointers");
      for (std::int64_t b = 0; b < t.size; b += detail::adamw_chunk) {
        chunks.push_back(
            {static_cast<std::int64_t>(i), b, b + detail::adamw_chunk < t.size ? b + detail::adamw_chunk : t.size});
      }
    }
    check_arg(chunks.size() <= INT_MAX, "adamw chunks of 4096 elements", chunks.size(), "must fit a grid (2^31 - 1)");
    tensors_ = backends::device_buffer<adamw_tensor>(std::span<adamw_tensor const>(tensors));
    chunks_ = backends::device_buffer<detail::adamw_chunk_ref>(std::span<detail::adamw_chunk_ref const>(chunks));
    partial_ = backends::device_buffer<double>(chunks.size());
    norm_ = backends::device_buffer<double>(2);
  }

  //! Enqueues one update at learning rate `lr`: the gradient norm (before clipping), then the update.
  void step(double lr) {
    check_arg(lr > 0, "lr", lr, "must be positive");
    ++steps_;
    double const bc1 = 1 - std::pow(cfg_.beta1, static_cast<double>(steps_));
    double const bc2 = 1 - std::pow(cfg_.beta2, static_cast<double>(steps_));
    auto const b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
    detail::adamw_scalars const s{b1,
                                  b2,
                                  1.0f - b1,
                                  1.0f - b2,
                                  static_cast<float>(lr / bc1),
                                  static_cast<float>(1 / bc2),
                                  static_cast<float>(cfg_.eps),
                                  static_cast<float>(lr * cfg_.weight_decay)};
    auto const chunks = static_cast<std::int64_t>(chunks_.size());
    if (chunks > 0) {
      detail::adamw_sum_squares_kernel<float><<<static_cast<unsigned>(chunks), detail::adamw_threads, 0, be_.stream>>>(
          tensors_.data(), chunks_.data(), partial_.data());
      backends::cuda_check_launch("adamw_sum_squares_kernel");
    }
    detail::adamw_norm_kernel<float>
        <<<1, detail::adamw_threads, 0, be_.stream>>>(partial_.data(), chunks, cfg_.clip_norm, norm_.data());
    backends::cuda_check_launch("adamw_norm_kernel");
    if (chunks > 0) {
      detail::adamw_update_kernel<float><<<static_cast<unsigned>(chunks), detail::adamw_threads, 0, be_.stream>>>(
          tensors_.data(), chunks_.data(), norm_.data(), s);
      backends::cuda_check_launch("adamw_update_kernel");
    }
  }

  //! Device pointer to the last step's gradient norm before clipping ([1] double; [1] after it: the clip factor).
  [[nodiscard]] double const* grad_norm_device() const { return norm_.data(); }
  //! The last step's gradient norm; waits for the stream.
  [[nodiscard]] double grad_norm() const {
    be_.synchronize();
    return norm_.to_host()[0];
  }

  [[nodiscard]] std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t s) { steps_ = s; }
  [[nodiscard]] adamw_config const& config() const { return cfg_; }

private:
  adamw_config cfg_;
  backends::cuda be_;
  backends::device_buffer<adamw_tensor> tensors_;
  backends::device_buffer<detail::adamw_chunk_ref> chunks_;
  backends::device_buffer<double> partial_, norm_;
  std::int64_t steps_ = 0;
};

}  // namespace ssmlen::train::cuda
