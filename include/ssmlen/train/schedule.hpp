// SPDX-License-Identifier: Apache-2.0
//! @file schedule.hpp
//! Learning-rate schedule: linear warm-up from 0, then cosine decay to
//! `min_ratio` of the peak at the last step.
#pragma once

#include <ssmlen/core/error.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ssmlen::train {

struct warmup_cosine {
  double peak = 3e-3;
  std::int64_t warmup = 100;
  std::int64_t total = 1000;
  double min_ratio = 0.1;

  void validate() const {
    check_arg(peak > 0, "lr", peak, "must be positive");
    check_arg(warmup >= 0, "warmup", warmup, "must be non-negative");
    check_arg(total > 0, "steps", total, "must be positive");
    check_arg(min_ratio >= 0 && min_ratio <= 1, "min_lr_ratio", min_ratio, "must be in [0, 1]");
  }

  //! The rate for 0-based step `s`.
  [[nodiscard]] double operator()(std::int64_t s) const {
    if (s < warmup) {
      return peak * static_cast<double>(s + 1) / static_cast<double>(warmup);
    }
    double const span = static_cast<double>(std::max<std::int64_t>(1, total - warmup));
    double const progress = std::min(1.0, static_cast<double>(s - warmup) / span);
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + std::cos(3.141592653589793 * progress)));
  }
};

}  // namespace ssmlen::train
