// Checks shared by the task tests that a generator samples the distribution its documentation states.
#pragma once

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace ssmlen::testing {

//! Every count is within 5 standard deviations of its expectation when the draws are uniform over the buckets:
//! loose enough never to fail by chance, tight enough to catch a bucket drawn at a different rate.
inline void check_uniform(std::vector<std::int64_t> const& counts) {
  REQUIRE(counts.size() >= 2);
  auto const total = static_cast<double>(std::accumulate(counts.begin(), counts.end(), std::int64_t{0}));
  auto const p = 1.0 / static_cast<double>(counts.size());
  auto const mean = total * p;
  auto const sigma = std::sqrt(total * p * (1.0 - p));
  for (std::size_t i = 0; i < counts.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(static_cast<double>(counts[i]) - mean) < 5.0 * sigma);
  }
}

}  // namespace ssmlen::testing
