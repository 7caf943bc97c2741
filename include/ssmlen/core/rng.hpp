// SPDX-License-Identifier: Apache-2.0
//! @file rng.hpp
//! A counter-based random number generator (Philox-4x32-10). A value is a pure
//! function of (seed, stream, counter), so the same seed gives the same numbers on
//! any backend and any thread count: parallel code gives each item its own stream
//! or counter range instead of sharing one sequential generator.
#pragma once

#include <ssmlen/config.hpp>

#include <array>
#include <cmath>
#include <cstdint>

namespace ssmlen {

//! One Philox-4x32-10 block: 128 random bits from a 128-bit counter and a 64-bit key.
SSMLEN_HD inline std::array<std::uint32_t, 4> philox4x32(std::array<std::uint32_t, 4> c,
                                                         std::array<std::uint32_t, 2> k) {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;  // multipliers
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;  // key schedule (golden ratio, sqrt 3)
  for (int round = 0; round < 10; ++round) {
    std::uint64_t const p0 = std::uint64_t{m0} * c[0];
    std::uint64_t const p1 = std::uint64_t{m1} * c[2];
    auto const hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    auto const hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += w0;
    k[1] += w1;
  }
  return c;
}

//! Everything needed to resume a generator exactly (saved in training checkpoints).
struct rng_state {
  std::uint64_t seed = 0;
  std::uint64_t stream = 0;
  std::uint64_t block = 0;  // index of the next Philox block
  std::uint32_t used = 4;   // words of the current block already handed out
  friend bool operator==(rng_state const&, rng_state const&) = default;
};

//! A sequential view of one Philox stream: next() walks the counter.
class rng {
public:
  SSMLEN_HD explicit rng(std::uint64_t seed = 0, std::uint64_t stream = 0) : s_{seed, stream, 0, 4} {}
  SSMLEN_HD explicit rng(rng_state const& s) : s_(s) {
    if (s_.used < 4) {
      refill(s_.block - 1);
    }
  }

  //! An independent generator for sub-task `id` (a batch row, a layer, a worker).
  [[nodiscard]] SSMLEN_HD rng fork(std::uint64_t id) const {
    return rng(s_.seed, s_.stream * 0x9E3779B97F4A7C15ull + id + 1);
  }

  [[nodiscard]] SSMLEN_HD rng_state state() const { return s_; }

  SSMLEN_HD std::uint32_t next_u32() {
    if (s_.used == 4) {
      refill(s_.block++);
      s_.used = 0;
    }
    return buf_[s_.used++];
  }

  SSMLEN_HD std::uint64_t next_u64() {
    std::uint64_t const hi = next_u32();
    return (hi << 32) | next_u32();
  }

  //! Uniform in [0, 1) with 24 random bits.
  SSMLEN_HD float uniform() { return static_cast<float>(next_u32() >> 8) * (1.0f / 16777216.0f); }

  //! Uniform in [0, 1) with 53 random bits.
  SSMLEN_HD double uniform_double() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

  //! Uniform in [lo, hi).
  SSMLEN_HD double uniform(double lo, double hi) { return lo + (hi - lo) * uniform_double(); }

  //! Uniform integer in [lo, hi], inclusive, without modulo bias (Lemire's method).
  SSMLEN_HD std::int64_t uniform_int(std::int64_t lo, std::int64_t hi) {
    auto const range = static_cast<std::uint64_t>(hi - lo) + 1;  // 0 means the full 2^64 range
    if (range == 0) {
      return static_cast<std::int64_t>(next_u64());
    }
    if (range <= 0xFFFFFFFFull) {
      auto const r32 = static_cast<std::uint32_t>(range);
      std::uint64_t m = std::uint64_t{next_u32()} * r32;
      auto low = static_cast<std::uint32_t>(m);
      if (low < r32) {
        std::uint32_t const threshold = static_cast<std::uint32_t>(-r32) % r32;
        while (low < threshold) {
          m = std::uint64_t{next_u32()} * r32;
          low = static_cast<std::uint32_t>(m);
        }
      }
      return lo + static_cast<std::int64_t>(m >> 32);
    }
    std::uint64_t const limit = ~std::uint64_t{0} - (~std::uint64_t{0} % range);
    std::uint64_t x = next_u64();
    while (x >= limit) {
      x = next_u64();
    }
    return lo + static_cast<std::int64_t>(x % range);
  }

  //! Standard normal (Box-Muller on 53-bit uniforms).
  SSMLEN_HD double normal() {
    double const u1 = 1.0 - uniform_double();  // (0, 1]: log is finite
    double const u2 = uniform_double();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

private:
  SSMLEN_HD void refill(std::uint64_t block) {
    buf_ = philox4x32({static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                       static_cast<std::uint32_t>(s_.stream), static_cast<std::uint32_t>(s_.stream >> 32)},
                      {static_cast<std::uint32_t>(s_.seed), static_cast<std::uint32_t>(s_.seed >> 32)});
  }

  rng_state s_;
  std::array<std::uint32_t, 4> buf_{};
};

}  // namespace ssmlen
