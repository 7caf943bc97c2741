// SPDX-License-Identifier: Apache-2.0
//! @file math.hpp
//! Scalar math used inside hot loops, written so the compiler vectorizes it:
//! no branches, no calls into libm for float. `exp_fast` is accurate to about
//! 2 ulp on [-87, 88]; double precision keeps std::exp so gradient checks are exact.
#pragma once

#include <ssmlen/config.hpp>

#include <bit>
#include <cmath>
#include <cstdint>

namespace ssmlen {

//! e^x for float: range reduction x = n ln2 + r, a degree-6 polynomial for e^r, 2^n from the exponent bits.
SSMLEN_HD inline float exp_fast(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  float const fn = (x * 1.44269504088896341f + round_magic) - round_magic;
  float const r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;  // ln2 split in two for accuracy
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = (p * r * r + r) + 1.0f;
  auto const n = static_cast<std::int32_t>(fn);
  return p * std::bit_cast<float>(static_cast<std::uint32_t>(n + 127) << 23);
}

//! e^x at the precision of T: exp_fast for float, std::exp otherwise.
template <class T>
SSMLEN_HD inline T exp_of(T x) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return exp_fast(x);
  } else {
    return std::exp(x);
  }
}

template <class T>
SSMLEN_HD inline T sigmoid(T x) {
  return T(1) / (T(1) + exp_of(-x));
}

template <class T>
SSMLEN_HD inline T silu(T x) {
  return x * sigmoid(x);
}

//! d silu / dx = s (1 + x (1 - s)) with s = sigmoid(x).
template <class T>
SSMLEN_HD inline T silu_grad(T x) {
  T const s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

//! log(1 + e^x), linear above 20 as in PyTorch (the difference is below float precision there).
template <class T>
SSMLEN_HD inline T softplus(T x) {
  return x > T(20) ? x : std::log1p(exp_of(x));
}

}  // namespace ssmlen
