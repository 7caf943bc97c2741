// SPDX-License-Identifier: Apache-2.0
//! @file calculator.hpp
//! A single-turn calculator tool, for the ablation that hands the whole
//! problem to a tool in one call: the prompt is `a + b =`, the model emits the
//! command `[add]`, and the tool inserts every digit of a + b as the
//! observation; the model then copies them. Long inputs then need long copies
//! from a single observation, which is the kind of step that does not
//! length-generalize (compare the pointer-memory tool).
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/tools/protocol.hpp>
#include <ssmlen/tools/tool.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ssmlen::tools {

struct calculator_limits {
  std::int64_t max_calls = 64;                      // [add] commands answered in one episode
  std::int64_t max_stored = std::int64_t{1} << 24;  // other tokens accepted in one episode
};

class calculator {
public:
  //! Looks up the digits `0`..`9`, `+`, `=` and the command `[add]` in `v`, which must define them.
  explicit calculator(vocab const& v, calculator_limits limits = {}) : limits_(limits), vocab_size_(v.size()) {
    check_arg(limits.max_calls >= 0, "calculator_limits.max_calls", limits.max_calls, "must be non-negative");
    check_arg(limits.max_stored >= 0, "calculator_limits.max_stored", limits.max_stored, "must be non-negative");
    for (int d = 0; d < 10; ++d) {
      digit_[static_cast<std::size_t>(d)] = v.id(std::string(1, static_cast<char>('0' + d)));
    }
    plus_ = v.id("+");
    equals_ = v.id("=");
    add_ = v.id("[add]");
  }

  //! Parses the prompt `a + b =` (digits, most significant first); a malformed prompt makes [add] invalid.
  void reset(std::span<const token> prompt) {
    calls_ = 0;
    stored_ = 0;
    sum_.clear();
    prompt_ok_ = parse(prompt);
  }

  tool_reply feed(token t) {
    if (t <= vocab::pad || t >= vocab_size_) {
      return invalid(t == vocab::pad ? "<PAD> emitted" : "token id outside the vocabulary");
    }
    if (t != add_) {
      if (stored_ >= limits_.max_stored) {
        return invalid("memory limit reached");
      }
      ++stored_;
      return {tool_reply_kind::stored};
    }
    if (!prompt_ok_) {
      return invalid("[add] needs a prompt of the form `a + b =`");
    }
    if (calls_ >= limits_.max_calls) {
      return invalid("[add] call limit reached");
    }
    ++calls_;
    return {tool_reply_kind::observe, sum_};
  }

  [[nodiscard]] std::int64_t calls() const { return calls_; }

private:
  static tool_reply invalid(std::string_view why) { return {tool_reply_kind::invalid, {}, why}; }

  [[nodiscard]] int value(token t) const {
    auto const it = std::find(digit_.begin(), digit_.end(), t);
    return it == digit_.end() ? -1 : static_cast<int>(it - digit_.begin());
  }

  // Fills sum_ with the digit tokens of a + b; false unless the prompt is `digits + digits =`.
  bool parse(std::span<const token> p) {
    auto const plus = std::find(p.begin(), p.end(), plus_);
    if (p.size() < 4 || p.back() != equals_ || plus == p.end() || plus == p.begin() || plus + 2 > p.end() - 1) {
      return false;
    }
    std::span<const token> const a(p.begin(), plus), b(plus + 1, p.end() - 1);
    auto all_digits = [&](std::span<const token> s) {
      return std::all_of(s.begin(), s.end(), [&](token t) { return value(t) >= 0; });
    };
    if (!all_digits(a) || !all_digits(b)) {
      return false;
    }
    std::vector<std::uint8_t> r(std::max(a.size(), b.size()) + 1, 0);
    int carry = 0;
    for (std::size_t i = 0; i < r.size(); ++i) {
      int s = carry;
      s += i < a.size() ? value(a[a.size() - 1 - i]) : 0;
      s += i < b.size() ? value(b[b.size() - 1 - i]) : 0;
      r[r.size() - 1 - i] = static_cast<std::uint8_t>(s % 10);
      carry = s / 10;
    }
    std::size_t first = 0;
    while (first + 1 < r.size() && r[first] == 0) {
      ++first;
    }
    sum_.reserve(r.size() - first);
    for (std::size_t i = first; i < r.size(); ++i) {
      sum_.push_back(digit_[r[i]]);
    }
    return true;
  }

  calculator_limits limits_;
  std::int64_t vocab_size_;
  std::array<token, 10> digit_{};
  token plus_ = 0, equals_ = 0, add_ = 0;
  std::vector<token> sum_;
  std::int64_t calls_ = 0;
  std::int64_t stored_ = 0;
  bool prompt_ok_ = false;
};

}  // namespace ssmlen::tools
