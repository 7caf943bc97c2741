// Finite-difference gradient checking for tests (double precision).
#pragma once

#include <ssmlen/core/rng.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ssmlen::testing {

//! A block of values whose gradient is checked: the values (perturbed in place) and the analytic gradient.
struct grad_target {
  std::string name;
  double* values;
  double const* analytic;
  std::int64_t count;
};

//! Central differences of `loss` for the entries of every target (all of them, or `max_entries` spread evenly
//! over each target); returns the worst ||a - n|| / ||n|| over targets.
inline double check_gradients(std::function<double()> const& loss, std::vector<grad_target> const& targets,
                              double step = 1e-6, std::int64_t max_entries = -1) {
  double worst = 0;
  for (auto const& t : targets) {
    double diff2 = 0, ref2 = 0;
    std::int64_t const checked = max_entries > 0 && t.count > max_entries ? max_entries : t.count;
    for (std::int64_t k = 0; k < checked; ++k) {
      std::int64_t const i = k * t.count / checked;
      double const keep = t.values[i];
      t.values[i] = keep + step;
      double const up = loss();
      t.values[i] = keep - step;
      double const down = loss();
      t.values[i] = keep;
      double const numeric = (up - down) / (2 * step);
      diff2 += (numeric - t.analytic[i]) * (numeric - t.analytic[i]);
      ref2 += numeric * numeric;
    }
    double const rel = std::sqrt(diff2) / std::max(std::sqrt(ref2), 1e-30);
    INFO("gradient of ", t.name, ": relative error ", rel, " (|grad| = ", std::sqrt(ref2), ")");
    CHECK(rel < 1e-6);
    CHECK(ref2 > 0);  // a gradient that is identically zero checks nothing
    worst = std::max(worst, rel);
  }
  return worst;
}

//! Fills v with N(0, scale²) values (never all zeros).
template <class V>
void fill_normal(V& v, rng& g, double scale = 1.0) {
  for (auto& x : v) {
    x = static_cast<std::remove_reference_t<decltype(x)>>(scale * g.normal());
  }
}

//! Σ w ⊙ y: a scalar loss whose gradient with respect to y is w.
inline double weighted_sum(double const* y, std::vector<double> const& w) {
  double s = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    s += y[i] * w[i];
  }
  return s;
}

}  // namespace ssmlen::testing
