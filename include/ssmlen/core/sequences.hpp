// SPDX-License-Identifier: Apache-2.0
//! @file sequences.hpp
//! A batch of variable-length sequences packed back to back: token rows
//! [offsets[s], offsets[s+1]) belong to sequence s. Every sequence layer takes
//! this layout, so no work is spent on padding and scans restart per sequence.
#pragma once

#include <ssmlen/core/error.hpp>

#include <cstdint>
#include <span>
#include <vector>

namespace ssmlen {

class sequences {
public:
  sequences() : offsets_{0} {}

  //! From the length of each sequence.
  static sequences from_lengths(std::span<const std::int64_t> lengths) {
    sequences s;
    for (auto n : lengths) {
      check_arg(n >= 0, "sequence length", n, "must be non-negative");
      s.offsets_.push_back(s.offsets_.back() + n);
    }
    return s;
  }

  //! `count` sequences of `length` tokens each.
  static sequences uniform(std::int64_t count, std::int64_t length) {
    std::vector<std::int64_t> const lengths(static_cast<std::size_t>(count), length);
    return from_lengths(lengths);
  }

  [[nodiscard]] std::int64_t count() const { return static_cast<std::int64_t>(offsets_.size()) - 1; }
  [[nodiscard]] std::int64_t tokens() const { return offsets_.back(); }
  [[nodiscard]] std::int64_t begin(std::int64_t s) const { return offsets_[static_cast<std::size_t>(s)]; }
  [[nodiscard]] std::int64_t end(std::int64_t s) const { return offsets_[static_cast<std::size_t>(s) + 1]; }
  [[nodiscard]] std::int64_t length(std::int64_t s) const { return end(s) - begin(s); }
  [[nodiscard]] std::int64_t max_length() const {
    std::int64_t m = 0;
    for (std::int64_t s = 0; s < count(); ++s) {
      m = length(s) > m ? length(s) : m;
    }
    return m;
  }

private:
  std::vector<std::int64_t> offsets_;
};

}  // namespace ssmlen
