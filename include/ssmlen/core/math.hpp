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
  // Clamp to [-87, 88] on the bit pattern: integer selects vectorize, float compares do not (trapping math).
  // As unsigned, every negative float above -87 is below -87's pattern; as signed, floats order as integers.
  std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  u = u < 0xC2AE0000u ? u : 0xC2AE0000u;  // -87.0f
  auto i = static_cast<std::int32_t>(u);
  i = i < 0x42B00000 ? i : 0x42B00000;  // 88.0f
  x = std::bit_cast<float>(i);
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

//! log(1 + y) for float y in [0, 1], vectorizable: log(u) for u = 1 + y by exponent/mantissa split and a
//! polynomial (Cephes' logf coefficients), plus the rounding error of u corrected to first order.
SSMLEN_HD inline float log1p_unit(float y) {
  float const u = 1.0f + y;
  float const lost = y - (u - 1.0f);  // exact: what rounding 1 + y dropped
  auto const bits = std::bit_cast<std::int32_t>(u);
  std::int32_t const k = (bits - 0x3F3504F3) >> 23;  // so that the mantissa lands in [sqrt(1/2), sqrt(2))
  float const m = std::bit_cast<float>(bits - (k << 23)) - 1.0f;
  float const e = static_cast<float>(k);
  float const z = m * m;
  float p = 7.0376836292e-2f;
  p = p * m - 1.1514610310e-1f;
  p = p * m + 1.1676998740e-1f;
  p = p * m - 1.2420140846e-1f;
  p = p * m + 1.4249322787e-1f;
  p = p * m - 1.6668057665e-1f;
  p = p * m + 2.0000714765e-1f;
  p = p * m - 2.4999993993e-1f;
  p = p * m + 3.3333331174e-1f;
  float r = m * z * p - 2.12194440e-4f * e - 0.5f * z;
  r = (m + r) + 0.693359375f * e;
  return r + lost / u;
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

//! log(1 + e^x) = max(x, 0) + log1p(e^-|x|). The float version is branch-free (sign handled on the bit
//! pattern) so loops over it vectorize; double uses libm for exact gradient checks.
template <class T>
SSMLEN_HD inline T softplus(T x) {
  if constexpr (sizeof(T) == sizeof(float)) {
    auto const bits = std::bit_cast<std::int32_t>(x);
    float const pos = std::bit_cast<float>(bits & ~(bits >> 31));  // max(x, 0): zero when the sign bit is set
    float const neg_abs = std::bit_cast<float>(bits | static_cast<std::int32_t>(0x80000000u));  // -|x|
    return pos + log1p_unit(exp_fast(neg_abs));
  } else {
    return x > T(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
  }
}

}  // namespace ssmlen
