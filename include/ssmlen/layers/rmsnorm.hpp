// SPDX-License-Identifier: Apache-2.0
//! @file rmsnorm.hpp
//! RMSNorm: y = x · rsqrt(mean(x²) + eps) · w, per row. Forward keeps the
//! per-row rsqrt for the backward pass.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/reduce.hpp>
#include <ssmlen/layers/param.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace ssmlen::layers {

template <class T>
struct rmsnorm {
  std::int64_t dim = 0;
  double eps = 1e-5;
  param<T> weight;  // [D]

  rmsnorm() = default;
  explicit rmsnorm(std::int64_t d, double epsilon = 1e-5) : dim(d), eps(epsilon), weight({d}, false) {
    check_arg(d > 0, "rmsnorm dim", d, "must be positive");
    check_arg(epsilon > 0, "rmsnorm eps", epsilon, "must be positive");
    weight.value.fill(T(1));
  }

  //! x: [rows, D] -> y: [rows, D]; rstd: [rows] (may be null when no backward follows)
  void forward(backends::host const& be, T const* x, T* y, T* rstd, std::int64_t rows) const {
    be.parallel_for(rows, [&](std::int64_t r) {
      T const s = apply_row(x + r * dim, y + r * dim);
      if (rstd != nullptr) {
        rstd[r] = s;
      }
    });
  }

  //! One row: x: [D] -> y: [D]; returns the row's rsqrt(mean(x²) + eps).
  T apply_row(T const* x, T* y) const {
    T ss = 0;
    for (std::int64_t d = 0; d < dim; ++d) {
      ss += x[d] * x[d];
    }
    T const s = T(1) / std::sqrt(ss / static_cast<T>(dim) + static_cast<T>(eps));
    for (std::int64_t d = 0; d < dim; ++d) {
      y[d] = x[d] * s * weight.value[d];
    }
    return s;
  }

  //! dx (+)= ∂L/∂x and dw += Σ dy · x̂, given x, rstd from forward and dy.
  void backward(backends::host const& be, T const* x, T const* rstd, T const* dy, T* dx, std::int64_t rows,
                bool accumulate) {
    T const* w = weight.value.data();
    std::vector<T> xhat_dy(static_cast<std::size_t>(rows * dim));  // [rows, D]: dy · x̂ for the weight gradient
    be.parallel_for(rows, [&](std::int64_t r) {
      T const* xr = x + r * dim;
      T const* g = dy + r * dim;
      T const s = rstd[r];
      T dot = 0;  // Σ_d (dy·w)_d x̂_d
      for (std::int64_t d = 0; d < dim; ++d) {
        dot += g[d] * w[d] * xr[d] * s;
      }
      T const mean_dot = dot / static_cast<T>(dim);
      for (std::int64_t d = 0; d < dim; ++d) {
        T const xh = xr[d] * s;
        T const v = s * (g[d] * w[d] - xh * mean_dot);
        dx[r * dim + d] = accumulate ? dx[r * dim + d] + v : v;
        xhat_dy[static_cast<std::size_t>(r * dim + d)] = g[d] * xh;
      }
    });
    add_column_sums(be, xhat_dy.data(), rows, dim, weight.grad.data());
  }
};

}  // namespace ssmlen::layers
