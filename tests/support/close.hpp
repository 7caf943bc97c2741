// Shared by the double-precision scan tests: two results agree to within 1e-12 of the larger magnitude.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace ssmlen::testing {

//! Requires equal sizes and max |got − want| ≤ 1e-12 · max(max |want|, 1), with `want` not all zeros (a comparison
//! of two zero vectors would pass whatever the code did).
inline void require_close(std::vector<double> const& got, std::vector<double> const& want, char const* what) {
  REQUIRE(got.size() == want.size());
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  INFO(what, ": max abs difference ", worst, " at scale ", scale);
  CHECK(worst <= 1e-12 * std::max(scale, 1.0));
  CHECK(scale > 0);
}

}  // namespace ssmlen::testing
