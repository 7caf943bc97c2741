// SPDX-License-Identifier: Apache-2.0
//! @file conv1d.hpp
//! Causal depthwise 1-D convolution over each sequence of a packed batch:
//!   y[t, c] = bias[c] + Σ_k w[c, k] · x[t - (K-1) + k, c]
//! Positions before a sequence's start come from its initial state (the K-1
//! inputs that preceded it) or are zero. The final state is the last K-1 inputs,
//! so a sequence can be continued later; gradients flow through both states.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/param.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace ssmlen::layers {

template <class T>
struct conv1d {
  std::int64_t channels = 0, width = 0;
  param<T> weight;  // [C, K]  (mamba_ssm stores [C, 1, K])
  param<T> bias;    // [C]

  conv1d() = default;
  conv1d(std::int64_t c, std::int64_t k) : channels(c), width(k), weight({c, k}, true), bias({c}, false) {
    check_arg(c > 0, "conv1d channels", c, "must be positive");
    check_arg(k >= 1, "d_conv", k, "must be at least 1");
  }

  //! PyTorch's Conv1d default: U(-1/sqrt(K), 1/sqrt(K)) (fan-in of a depthwise filter is K).
  void init_default(rng& g) {
    double const bound = 1.0 / std::sqrt(static_cast<double>(width));
    for (auto& w : weight.value) {
      w = static_cast<T>(g.uniform(-bound, bound));
    }
    for (auto& b : bias.value) {
      b = static_cast<T>(g.uniform(-bound, bound));
    }
  }

  [[nodiscard]] std::int64_t state_size() const { return (width - 1) * channels; }  // per sequence: [K-1, C]

  //! x: [T, C] (row stride ldx) -> y: [T, C]. init_state, final_state: [S, K-1, C] or null.
  void forward(backends::host const& be, sequences const& seqs, T const* x, std::int64_t ldx, T* y, T const* init_state,
               T* final_state) const {
    be.parallel_for_uneven(seqs.count(), [&](std::int64_t s) {
      std::int64_t const t0 = seqs.begin(s), len = seqs.length(s);
      std::vector<T> ext = extended_input(s, t0, len, x, ldx, init_state);  // [K-1 + len, C]
      T const* w = weight.value.data();
      T const* b = bias.value.data();
      for (std::int64_t t = 0; t < len; ++t) {
        T* yr = y + (t0 + t) * channels;
        for (std::int64_t c = 0; c < channels; ++c) {
          yr[c] = b[c];
        }
        for (std::int64_t k = 0; k < width; ++k) {
          T const* xr = ext.data() + (t + k) * channels;
          for (std::int64_t c = 0; c < channels; ++c) {
            yr[c] += w[c * width + k] * xr[c];
          }
        }
      }
      if (final_state != nullptr) {
        std::copy(ext.begin() + len * channels, ext.end(), final_state + s * state_size());
      }
    });
  }

  //! Accumulates dW, db; writes dx = ∂L/∂x (row stride lddx) and, when non-null, d_init_state.
  //! d_final_state (nullable) is the gradient arriving at the final state.
  void backward(backends::host const& be, sequences const& seqs, T const* x, std::int64_t ldx, T const* dy, T* dx,
                std::int64_t lddx, T const* init_state, T const* d_final_state, T* d_init_state) {
    std::int64_t const km1 = width - 1;
    std::vector<T> partial(static_cast<std::size_t>(seqs.count() * channels * (width + 1)), T(0));  // [S, C, K+1]
    be.parallel_for_uneven(seqs.count(), [&](std::int64_t s) {
      std::int64_t const t0 = seqs.begin(s), len = seqs.length(s);
      std::vector<T> const ext = extended_input(s, t0, len, x, ldx, init_state);  // [K-1 + len, C]
      std::vector<T> dext(ext.size(), T(0));
      if (d_final_state != nullptr) {
        T const* dfs = d_final_state + s * state_size();
        for (std::int64_t i = 0; i < km1 * channels; ++i) {
          dext[static_cast<std::size_t>(len * channels + i)] += dfs[i];
        }
      }
      T const* w = weight.value.data();
      T* pw = partial.data() + s * channels * (width + 1);
      std::vector<T> acc(static_cast<std::size_t>(channels * (width + 1)), T(0));  // [K+1, C]: dW per k, then db
      for (std::int64_t t = 0; t < len; ++t) {
        T const* g = dy + (t0 + t) * channels;
        for (std::int64_t k = 0; k < width; ++k) {
          T const* xr = ext.data() + (t + k) * channels;
          T* dxr = dext.data() + (t + k) * channels;
          T* ak = acc.data() + k * channels;
          for (std::int64_t c = 0; c < channels; ++c) {
            dxr[c] += w[c * width + k] * g[c];
            ak[c] += g[c] * xr[c];
          }
        }
        T* ab = acc.data() + width * channels;
        for (std::int64_t c = 0; c < channels; ++c) {
          ab[c] += g[c];
        }
      }
      for (std::int64_t c = 0; c < channels; ++c) {
        for (std::int64_t k = 0; k <= width; ++k) {
          pw[c * (width + 1) + k] = acc[static_cast<std::size_t>(k * channels + c)];
        }
      }
      for (std::int64_t t = 0; t < len; ++t) {
        for (std::int64_t c = 0; c < channels; ++c) {
          dx[(t0 + t) * lddx + c] = dext[static_cast<std::size_t>((km1 + t) * channels + c)];
        }
      }
      if (d_init_state != nullptr) {
        std::copy(dext.begin(), dext.begin() + km1 * channels, d_init_state + s * state_size());
      }
    });
    for (std::int64_t s = 0; s < seqs.count(); ++s) {  // fixed order: deterministic on any thread count
      T const* pw = partial.data() + s * channels * (width + 1);
      for (std::int64_t c = 0; c < channels; ++c) {
        for (std::int64_t k = 0; k < width; ++k) {
          weight.grad[c * width + k] += pw[c * (width + 1) + k];
        }
        bias.grad[c] += pw[c * (width + 1) + width];
      }
    }
  }

  //! One token of one sequence: x: [C] -> y: [C]; state: [K-1, C] (oldest first) shifts in place.
  void step_row(T const* x, T* y, T* state) const {
    std::int64_t const km1 = width - 1;
    T const* w = weight.value.data();
    for (std::int64_t c = 0; c < channels; ++c) {
      T v = bias.value[c] + w[c * width + km1] * x[c];
      for (std::int64_t k = 0; k < km1; ++k) {
        v += w[c * width + k] * state[k * channels + c];
      }
      y[c] = v;
    }
    if (km1 > 0) {
      std::copy(state + channels, state + km1 * channels, state);
      std::copy(x, x + channels, state + (km1 - 1) * channels);
    }
  }

  //! One token per sequence: x: [B, C] (row stride ldx) -> y: [B, C]; state: [B, K-1, C] shifts in place.
  void step(backends::host const& be, T const* x, std::int64_t ldx, T* y, T* state, std::int64_t batch) const {
    be.parallel_for(batch, [&](std::int64_t b) { step_row(x + b * ldx, y + b * channels, state + b * state_size()); });
  }

private:
  //! The K-1 inputs before the sequence (initial state or zeros) followed by its inputs: [K-1 + len, C].
  std::vector<T> extended_input(std::int64_t s, std::int64_t t0, std::int64_t len, T const* x, std::int64_t ldx,
                                T const* init_state) const {
    std::int64_t const km1 = width - 1;
    std::vector<T> ext(static_cast<std::size_t>((km1 + len) * channels), T(0));
    if (init_state != nullptr) {
      std::copy(init_state + s * state_size(), init_state + (s + 1) * state_size(), ext.begin());
    }
    for (std::int64_t t = 0; t < len; ++t) {
      std::copy(x + (t0 + t) * ldx, x + (t0 + t) * ldx + channels, ext.begin() + (km1 + t) * channels);
    }
    return ext;
  }
};

}  // namespace ssmlen::layers
