// SPDX-License-Identifier: Apache-2.0
//! @file conv1d.hpp
//! Causal depthwise 1-D convolution over each sequence of a packed batch:
//!   y[t, c] = bias[c] + Σ_k w[c, k] · x[t - (K-1) + k, c]
//! Positions before a sequence's start come from its initial state (the K-1
//! inputs that preceded it) or are zero. The final state is the last K-1 inputs,
//! so a sequence can be continued later; gradients flow through both states.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/math.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/param.hpp>

#include <algorithm>
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
  //! y_silu (nullable): also receives silu(y), the activation Mamba applies next, while the row is in cache.
  void forward(backends::host const& be, sequences const& seqs, T const* x, std::int64_t ldx, T* y, T const* init_state,
               T* final_state, T* y_silu = nullptr) const {
    std::vector<T> const wt = taps();
    std::vector<T> const zeros(static_cast<std::size_t>(channels), T(0));
    be.parallel_for_uneven(seqs.count(), [&](std::int64_t s) {
      std::int64_t const t0 = seqs.begin(s), len = seqs.length(s);
      input_rows const in{x + t0 * ldx, ldx,       init_state ? init_state + s * state_size() : nullptr,
                          zeros.data(), width - 1, channels};
      T const* b = bias.value.data();
      for (std::int64_t t = 0; t < len; ++t) {
        T* yr = y + (t0 + t) * channels;
        for (std::int64_t c = 0; c < channels; ++c) {
          yr[c] = b[c];
        }
        for (std::int64_t k = 0; k < width; ++k) {
          T const* xr = in.row(t + k);
          T const* wk = wt.data() + k * channels;
          for (std::int64_t c = 0; c < channels; ++c) {
            yr[c] += wk[c] * xr[c];
          }
        }
        if (y_silu != nullptr) {
          T* ar = y_silu + (t0 + t) * channels;
          for (std::int64_t c = 0; c < channels; ++c) {
            ar[c] = silu(yr[c]);
          }
        }
      }
      if (final_state != nullptr) {
        for (std::int64_t i = 0; i < width - 1; ++i) {
          T const* xr = in.row(len + i);
          std::copy(xr, xr + channels, final_state + s * state_size() + i * channels);
        }
      }
    });
  }

  //! Accumulates dW, db; writes dx = ∂L/∂x (row stride lddx) and, when non-null, d_init_state.
  //! d_final_state (nullable) is the gradient arriving at the final state.
  //! y_pre (nullable): forward's y, when dy is the gradient of silu(y) (forward's y_silu) rather than of y.
  void backward(backends::host const& be, sequences const& seqs, T const* x, std::int64_t ldx, T const* dy, T* dx,
                std::int64_t lddx, T const* init_state, T const* d_final_state, T* d_init_state,
                T const* y_pre = nullptr) {
    std::int64_t const km1 = width - 1;
    std::vector<T> const wt = taps();
    std::vector<T> const zeros(static_cast<std::size_t>(channels), T(0));
    std::vector<T> partial(static_cast<std::size_t>(seqs.count() * channels * (width + 1)), T(0));  // [S, C, K+1]
    be.parallel_for_uneven(seqs.count(), [&](std::int64_t s) {
      std::int64_t const t0 = seqs.begin(s), len = seqs.length(s);
      input_rows const in{x + t0 * ldx, ldx, init_state ? init_state + s * state_size() : nullptr,
                          zeros.data(), km1, channels};
      // ∂L/∂y of the last K tokens; through the SiLU when y_pre is given, each row computed once
      std::vector<T> ring(y_pre != nullptr ? static_cast<std::size_t>(width * channels) : 0);
      auto grad_row = [&](std::int64_t t) -> T const* {
        return y_pre != nullptr ? ring.data() + (t % width) * channels : dy + (t0 + t) * channels;
      };
      T const* dfs = d_final_state != nullptr ? d_final_state + s * state_size() : nullptr;
      std::vector<T> acc(static_cast<std::size_t>(channels * (width + 1)), T(0));  // [K+1, C]: dW per k, then db
      for (std::int64_t e = 0; e < km1 + len; ++e) {  // e: row of the extended input (K-1 initial rows, then x)
        if (e < len) {                                // token e's ∂L/∂y, then its share of dW and db
          if (y_pre != nullptr) {
            T const* gy = dy + (t0 + e) * channels;
            T const* yp = y_pre + (t0 + e) * channels;
            T* gr = ring.data() + (e % width) * channels;
            for (std::int64_t c = 0; c < channels; ++c) {
              gr[c] = gy[c] * silu_grad(yp[c]);
            }
          }
          T const* gr = grad_row(e);
          for (std::int64_t k = 0; k < width; ++k) {
            T const* xr = in.row(e + k);
            T* ak = acc.data() + k * channels;
            for (std::int64_t c = 0; c < channels; ++c) {
              ak[c] += gr[c] * xr[c];
            }
          }
          T* ab = acc.data() + width * channels;
          for (std::int64_t c = 0; c < channels; ++c) {
            ab[c] += gr[c];
          }
        }
        // ∂L/∂ext[e] = Σ_k w_k ∂L/∂y[e - k], summed in the order a scatter over ascending tokens would, after the
        // final state's gradient
        T* out = e < km1 ? (d_init_state != nullptr ? d_init_state + s * state_size() + e * channels : nullptr)
                         : dx + (t0 + e - km1) * lddx;
        if (out == nullptr) {
          continue;
        }
        T const* start = e >= len && dfs != nullptr ? dfs + (e - len) * channels : zeros.data();
        for (std::int64_t c = 0; c < channels; ++c) {
          out[c] = start[c];
        }
        for (std::int64_t k = std::min(km1, e); k >= 0 && e - k < len; --k) {
          T const* gr = grad_row(e - k);
          T const* wk = wt.data() + k * channels;
          for (std::int64_t c = 0; c < channels; ++c) {
            out[c] += wk[c] * gr[c];
          }
        }
      }
      T* pw = partial.data() + s * channels * (width + 1);
      for (std::int64_t c = 0; c < channels; ++c) {
        for (std::int64_t k = 0; k <= width; ++k) {
          pw[c * (width + 1) + k] = acc[static_cast<std::size_t>(k * channels + c)];
        }
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
  //! Row e of a sequence's extended input: the K-1 inputs before it (initial state or zeros), then its own rows.
  struct input_rows {
    T const* x;  // the sequence's first row, row stride ldx
    std::int64_t ldx;
    T const* init;  // [K-1, C] or null
    T const* zeros;
    std::int64_t km1, channels;

    [[nodiscard]] T const* row(std::int64_t e) const {
      if (e >= km1) {
        return x + (e - km1) * ldx;
      }
      return init != nullptr ? init + e * channels : zeros;
    }
  };

  //! The weight as [K, C], so that loops over channels read each tap contiguously.
  [[nodiscard]] std::vector<T> taps() const {
    std::vector<T> wt(static_cast<std::size_t>(width * channels));
    for (std::int64_t c = 0; c < channels; ++c) {
      for (std::int64_t k = 0; k < width; ++k) {
        wt[static_cast<std::size_t>(k * channels + c)] = weight.value[c * width + k];
      }
    }
    return wt;
  }
};

}  // namespace ssmlen::layers
