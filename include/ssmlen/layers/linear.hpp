// SPDX-License-Identifier: Apache-2.0
//! @file linear.hpp
//! y = x Wᵀ (+ b), applied to every row; the GEMMs are the host backend's.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/reduce.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/layers/param.hpp>
#include <ssmlen/ops/gemm.hpp>

#include <cmath>
#include <cstdint>

namespace ssmlen::layers {

//! y[o] = Σ_i w[o, i] x[i] for a row-major [rows, cols] matrix: one token's projection in the recurrent step.
template <class T>
void matvec(T const* w, std::int64_t rows, std::int64_t cols, T const* x, T* y) {
  for (std::int64_t o = 0; o < rows; ++o) {
    T const* wo = w + o * cols;
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (std::int64_t i = 0; i < cols; ++i) {
      acc += wo[i] * x[i];
    }
    y[o] = acc;
  }
}

template <class T>
struct linear {
  std::int64_t in = 0, out = 0;
  param<T> weight;  // [out, in]
  param<T> bias;    // [out], empty when the layer has none

  linear() = default;
  linear(std::int64_t in_features, std::int64_t out_features, bool with_bias)
      : in(in_features), out(out_features), weight({out_features, in_features}, true) {
    check_arg(in_features > 0, "linear in_features", in_features, "must be positive");
    check_arg(out_features > 0, "linear out_features", out_features, "must be positive");
    if (with_bias) {
      bias = param<T>({out_features}, false);
    }
  }

  //! PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
  void init_default(rng& g) {
    double const bound = 1.0 / std::sqrt(static_cast<double>(in));
    for (auto& w : weight.value) {
      w = static_cast<T>(g.uniform(-bound, bound));
    }
    for (auto& b : bias.value) {
      b = static_cast<T>(g.uniform(-bound, bound));
    }
  }

  //! y = x Wᵀ without the bias, for callers that fuse the bias into their next sweep over y.
  void forward_no_bias(backends::host const& be, T const* x, std::int64_t ldx, T* y, std::int64_t ldy,
                       std::int64_t rows) const {
    ops::gemm(be, ops::trans::n, ops::trans::t, rows, out, in, T(1), x, ldx, weight.value.data(), in, T(0), y, ldy);
  }

  //! y = x Wᵀ + b for `rows` rows; x: [rows, in] with row stride ldx, y: [rows, out] with row stride ldy.
  void forward(backends::host const& be, T const* x, std::int64_t ldx, T* y, std::int64_t ldy,
               std::int64_t rows) const {
    forward_no_bias(be, x, ldx, y, ldy, rows);
    if (!bias.empty()) {
      T const* b = bias.value.data();
      be.parallel_for(rows, [&](std::int64_t r) {
        for (std::int64_t o = 0; o < out; ++o) {
          y[r * ldy + o] += b[o];
        }
      });
    }
  }

  //! Accumulates dW += dyᵀ x and db += Σ dy; writes (or adds to, when accumulate) dx = dy W unless dx is null.
  void backward(backends::host const& be, T const* x, std::int64_t ldx, T const* dy, std::int64_t ldy, T* dx,
                std::int64_t lddx, std::int64_t rows, bool accumulate = false) {
    ops::gemm(be, ops::trans::t, ops::trans::n, out, in, rows, T(1), dy, ldy, x, ldx, T(1), weight.grad.data(), in);
    if (!bias.empty()) {
      if (ldy == out) {
        add_column_sums(be, dy, rows, out, bias.grad.data());
      } else {
        tensor<T> packed({rows, out});  // dy is a column slice: pack it so the reduction sees dense rows
        be.parallel_for(rows, [&](std::int64_t r) {
          for (std::int64_t o = 0; o < out; ++o) {
            packed[r * out + o] = dy[r * ldy + o];
          }
        });
        add_column_sums(be, packed.data(), rows, out, bias.grad.data());
      }
    }
    if (dx != nullptr) {
      ops::gemm(be, ops::trans::n, ops::trans::n, rows, in, out, T(1), dy, ldy, weight.value.data(), in,
                accumulate ? T(1) : T(0), dx, lddx);
    }
  }
};

}  // namespace ssmlen::layers
