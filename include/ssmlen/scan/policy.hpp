// SPDX-License-Identifier: Apache-2.0
//! @file policy.hpp
//! Scan policies say *how* a linear recurrence h_t = a_t ⊙ h_{t-1} + b_t is
//! evaluated over a sequence; the layer that uses it says *what* a_t and b_t are.
//! Policies are empty structural values, usable as template arguments.
//!   recurrent    one pass per sequence, state in registers/L1 (the reference)
//!   chunked<C>   chunks of C tokens scanned in parallel from a zero state, then
//!                the carried states are combined across chunks and added back
#pragma once

#include <concepts>
#include <cstdint>
#include <string>

namespace ssmlen::scan {

enum class algorithm { recurrent, chunked };

struct recurrent {
  static constexpr algorithm kind = algorithm::recurrent;
  static constexpr std::int64_t checkpoint_interval = 64;  // states kept for the backward pass, every 64 tokens
  static std::string name() { return "recurrent"; }
  friend constexpr bool operator==(recurrent, recurrent) { return true; }
};

template <std::int64_t C>
struct chunked {
  static_assert(C >= 1, "chunk length must be positive");
  static constexpr algorithm kind = algorithm::chunked;
  static constexpr std::int64_t chunk = C;
  static constexpr std::int64_t checkpoint_interval = C;  // the carried chunk-start states double as checkpoints
  static std::string name() { return "chunked<" + std::to_string(C) + ">"; }
  friend constexpr bool operator==(chunked, chunked) { return true; }
};

template <class P>
concept policy = std::regular<P> && requires {
  { P::kind } -> std::convertible_to<algorithm>;
  { P::checkpoint_interval } -> std::convertible_to<std::int64_t>;
  { P::name() } -> std::convertible_to<std::string>;
};

static_assert(policy<recurrent> && policy<chunked<64>>);

}  // namespace ssmlen::scan
