// SPDX-License-Identifier: Apache-2.0
//! @file adamw.hpp
//! AdamW with decoupled weight decay (applied only to parameters marked `decay`:
//! matrices and embeddings) and gradient clipping by global norm. The global norm
//! is summed in a fixed order, so updates are bit-identical on any thread count.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/layers/param.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ssmlen::train {

struct adamw_config {
  double lr = 3e-3;
  double beta1 = 0.9;
  double beta2 = 0.98;
  double eps = 1e-8;
  double weight_decay = 0.01;
  double clip_norm = 1.0;  // 0 disables clipping

  void validate() const {
    check_arg(lr > 0, "lr", lr, "must be positive");
    check_arg(beta1 >= 0 && beta1 < 1, "beta1", beta1, "must be in [0, 1)");
    check_arg(beta2 >= 0 && beta2 < 1, "beta2", beta2, "must be in [0, 1)");
    check_arg(eps > 0, "eps", eps, "must be positive");
    check_arg(weight_decay >= 0, "weight_decay", weight_decay, "must be non-negative");
    check_arg(clip_norm >= 0, "clip_norm", clip_norm, "must be non-negative (0 disables clipping)");
  }
};

template <class T>
class adamw {
public:
  adamw(adamw_config const& cfg, std::vector<layers::named_param<T>> params) : cfg_(cfg), params_(std::move(params)) {
    cfg_.validate();
    for (auto const& p : params_) {
      m_.emplace_back(p.p->value.shape());
      v_.emplace_back(p.p->value.shape());
    }
  }

  //! Global L2 norm of all gradients, summed in parameter order.
  [[nodiscard]] double grad_norm() const {
    double s = 0;
    for (auto const& p : params_) {
      for (T g : p.p->grad) {
        s += static_cast<double>(g) * static_cast<double>(g);
      }
    }
    return std::sqrt(s);
  }

  //! One update at learning rate `lr`; returns the gradient norm before clipping.
  double step(backends::host const& be, double lr) {
    double const norm = grad_norm();
    check(std::isfinite(norm), "gradient norm is not finite (" + std::to_string(norm) + "): training diverged");
    double const clip = cfg_.clip_norm > 0 && norm > cfg_.clip_norm ? cfg_.clip_norm / norm : 1.0;
    ++steps_;
    double const bc1 = 1 - std::pow(cfg_.beta1, static_cast<double>(steps_));
    double const bc2 = 1 - std::pow(cfg_.beta2, static_cast<double>(steps_));
    for (std::size_t i = 0; i < params_.size(); ++i) {
      auto& p = *params_[i].p;
      T* w = p.value.data();
      T const* g = p.grad.data();
      T* m = m_[i].data();
      T* v = v_[i].data();
      auto const b1 = static_cast<T>(cfg_.beta1), b2 = static_cast<T>(cfg_.beta2), c = static_cast<T>(clip);
      auto const step_size = static_cast<T>(lr / bc1), inv_bc2 = static_cast<T>(1 / bc2);
      auto const eps = static_cast<T>(cfg_.eps);
      auto const decay = static_cast<T>(p.decay ? lr * cfg_.weight_decay : 0.0);
      be.parallel_for((p.value.size() + 1023) / 1024, [&](std::int64_t blk) {
        std::int64_t const e = std::min(p.value.size(), (blk + 1) * 1024);
        for (std::int64_t j = blk * 1024; j < e; ++j) {
          T const gj = g[j] * c;
          m[j] = b1 * m[j] + (T(1) - b1) * gj;
          v[j] = b2 * v[j] + (T(1) - b2) * gj * gj;
          w[j] -= decay * w[j];  // decoupled: shrink the weight, not the gradient
          w[j] -= step_size * m[j] / (std::sqrt(v[j] * inv_bc2) + eps);
        }
      });
    }
    return norm;
  }

  [[nodiscard]] std::int64_t steps() const { return steps_; }
  void set_steps(std::int64_t s) { steps_ = s; }
  [[nodiscard]] adamw_config const& config() const { return cfg_; }
  [[nodiscard]] std::vector<layers::named_param<T>> const& params() const { return params_; }
  //! First and second moments, parallel to params() (saved in training checkpoints).
  [[nodiscard]] std::vector<tensor<T>>& first_moments() { return m_; }
  [[nodiscard]] std::vector<tensor<T>>& second_moments() { return v_; }

private:
  adamw_config cfg_;
  std::vector<layers::named_param<T>> params_;
  std::vector<tensor<T>> m_, v_;
  std::int64_t steps_ = 0;
};

}  // namespace ssmlen::train
