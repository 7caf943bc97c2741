// SPDX-License-Identifier: Apache-2.0
//! @file mlp.hpp
//! The Transformer's feed-forward block: y = W2 gelu(W1 x + b1) + b2, with GELU's tanh form (GPT-NeoX's).
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/tensor.hpp>
#include <ssmlen/layers/linear.hpp>

#include <cmath>
#include <cstdint>

namespace ssmlen::layers {

template <class T>
struct mlp {
  linear<T> fc1;  // D -> F
  linear<T> fc2;  // F -> D

  struct cache {
    tensor<T> pre, act;  // [T, F] each: W1 x + b1, and its GELU
    tensor<T> d_act;     // backward: [T, F]
  };

  mlp() = default;
  mlp(std::int64_t d, std::int64_t hidden) : fc1(d, hidden, true), fc2(hidden, d, true) {}

  void init_default(rng& g) {
    fc1.init_default(g);
    fc2.init_default(g);
  }

  //! x: [T, D] -> y: [T, D]
  void forward(backends::host const& be, T const* x, T* y, cache& k, std::int64_t rows) const {
    std::int64_t const f = fc1.out;
    k.pre.resize({rows, f});
    k.act.resize({rows, f});
    fc1.forward(be, x, fc1.in, k.pre.data(), f, rows);
    be.parallel_for(rows, [&](std::int64_t r) {
      for (std::int64_t j = 0; j < f; ++j) {
        k.act[r * f + j] = gelu(k.pre[r * f + j]);
      }
    });
    fc2.forward(be, k.act.data(), f, y, fc2.out, rows);
  }

  //! dy: [T, D] -> accumulates the weights' gradients; dx: [T, D] written (added to when accumulate).
  void backward(backends::host const& be, T const* x, T const* dy, T* dx, bool accumulate, cache& k,
                std::int64_t rows) {
    std::int64_t const f = fc1.out;
    k.d_act.resize({rows, f});
    fc2.backward(be, k.act.data(), f, dy, fc2.out, k.d_act.data(), f, rows);
    be.parallel_for(rows, [&](std::int64_t r) {
      for (std::int64_t j = 0; j < f; ++j) {
        k.d_act[r * f + j] *= gelu_slope(k.pre[r * f + j]);
      }
    });
    fc1.backward(be, x, fc1.in, k.d_act.data(), f, dx, fc1.in, rows, accumulate);
  }

  //! One row: x: [D] -> y: [D]; scratch: [F].
  void step_row(T const* x, T* y, T* scratch) const {
    std::int64_t const f = fc1.out;
    matvec(fc1.weight.value.data(), f, fc1.in, x, scratch);
    for (std::int64_t j = 0; j < f; ++j) {
      scratch[j] = gelu(scratch[j] + fc1.bias.value[j]);
    }
    matvec(fc2.weight.value.data(), fc2.out, f, scratch, y);
    for (std::int64_t o = 0; o < fc2.out; ++o) {
      y[o] += fc2.bias.value[o];
    }
  }

  static T gelu(T v) {
    T const u = c0 * (v + c1 * v * v * v);
    return T(0.5) * v * (T(1) + std::tanh(u));
  }

  static T gelu_slope(T v) {
    T const th = std::tanh(c0 * (v + c1 * v * v * v));
    return T(0.5) * (T(1) + th) + T(0.5) * v * (T(1) - th * th) * c0 * (T(1) + T(3) * c1 * v * v);
  }

private:
  static constexpr T c0 = T(0.7978845608028654);  // sqrt(2 / π)
  static constexpr T c1 = T(0.044715);
};

}  // namespace ssmlen::layers
