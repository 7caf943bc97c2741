// Shared by the CUDA parity tests: skipping without a GPU, random inputs, and the norm-wise error they all report.
#pragma once

#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/rng.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

namespace ssmlen::testing {

//! True when a CUDA device is present; without one, says once that the GPU cases are skipped.
inline bool gpu_or_skip() {
  static bool const present = backends::cuda_device_available();
  static bool said = false;
  if (!present && !said) {
    std::printf("no CUDA device: GPU cases skipped\n");
    said = true;
  }
  return present;
}

//! n normal draws times `scale` from rng(seed): random inputs, never zeros.
inline std::vector<float> normal(std::size_t n, double scale, std::uint64_t seed) {
  rng g(seed);
  std::vector<float> v(n);
  for (auto& e : v) {
    e = static_cast<float>(scale * g.normal());
  }
  return v;
}

//! ‖got − want‖₂ / ‖want‖₂ (‖got − want‖₂ when want is zero), or infinity when any element of got is not finite:
//! outputs are poisoned with NaN first, so an element never written shows up here.
template <class A, class B>
double rel_error(A const* got, B const* want, std::int64_t n) {
  double num = 0, den = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(static_cast<double>(got[i]))) {
      return std::numeric_limits<double>::infinity();
    }
    double const diff = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += diff * diff;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

template <class A, class B>
double rel_error(std::vector<A> const& got, std::vector<B> const& want) {
  REQUIRE(got.size() == want.size());
  return rel_error(got.data(), want.data(), static_cast<std::int64_t>(got.size()));
}

//! How many elements of `rounded` are not the bf16 rounding (nearest even) of the same element of `values`: a bf16
//! copy written beside fp32 values must give 0.
inline std::size_t mismatched_roundings(std::vector<bfloat16> const& rounded, std::vector<float> const& values) {
  REQUIRE(rounded.size() == values.size());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    bad += rounded[i].bits != bfloat16(values[i]).bits ? 1 : 0;
  }
  return bad;
}

}  // namespace ssmlen::testing
