// SPDX-License-Identifier: Apache-2.0
//! @file bfloat16.hpp
//! bfloat16 storage: the top 16 bits of an IEEE float32, converted with
//! round-to-nearest-even. Arithmetic happens in float; this type only stores.
#pragma once

#include <ssmlen/config.hpp>

#include <cstdint>
#include <cstring>

namespace ssmlen {

struct bfloat16 {
  std::uint16_t bits = 0;

  bfloat16() = default;
  SSMLEN_HD explicit bfloat16(float f) : bits(from_float(f)) {}
  SSMLEN_HD explicit operator float() const { return to_float(bits); }

  SSMLEN_HD static std::uint16_t from_float(float f) {
    std::uint32_t u = 0;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu) != 0) {
      return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // NaN stays a (quiet) NaN
    }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    // The same rounding in one conversion instruction (the bit arithmetic below takes several, and kernels bound by
    // issue write bf16 copies); NaNs keep the branch above, so both give the same bits for every input.
    std::uint16_t r = 0;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
#else
    u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return static_cast<std::uint16_t>(u >> 16);
#endif
  }

  SSMLEN_HD static float to_float(std::uint16_t b) {
    std::uint32_t const u = std::uint32_t{b} << 16;
    float f = 0;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
};

//! Element types a checkpoint or buffer can hold.
enum class dtype { f32, bf16, f64 };

}  // namespace ssmlen
