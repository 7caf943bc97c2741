// SPDX-License-Identifier: Apache-2.0
//! @file multiplication.hpp
//! Long multiplication a × b of an n-digit number by a 1- or 2-digit number
//! with a four-pointer memory tool (the paper's n×1 and n×2 tasks). The expert
//! writes one partial-product row per digit of b, least significant digit
//! first, as (digit, carry) thoughts; for a 2-digit b it then adds the two rows
//! the same way, and reads the last row back most significant digit first.
//! Every operand of every step, the running carry included, is read through
//! the tool right before it is used, so each model token depends on the last
//! few tokens only: that is what lets a model trained on 10-digit products
//! multiply 1000-digit numbers. The trace format is in docs/tasks.md.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/task_env.hpp>
#include <ssmlen/tools/pointer_memory.hpp>
#include <ssmlen/tools/protocol.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ssmlen::tasks {

//! The operands of a multiplication task.
struct multiplication_instance {
  digits a;  // n digits, most significant first
  digits b;  // 1 or 2 digits
  friend bool operator==(multiplication_instance const&, multiplication_instance const&) = default;
};

//! Schoolbook a × b on digit vectors (most significant first).
inline digits multiply_digits(digits const& a, digits const& b) {
  std::vector<int> acc(a.size() + b.size(), 0);  // least significant first
  for (std::size_t i = 0; i < a.size(); ++i) {
    for (std::size_t j = 0; j < b.size(); ++j) {
      acc[i + j] += a[a.size() - 1 - i] * b[b.size() - 1 - j];
    }
  }
  int carry = 0;
  for (auto& d : acc) {
    d += carry;
    carry = d / 10;
    d %= 10;
  }
  while (acc.size() > 1 && acc.back() == 0) {
    acc.pop_back();
  }
  return digits(acc.rbegin(), acc.rend());
}

//! A positive number drawn uniformly among those with exactly `n` digits (1..9 for one digit).
inline digits random_positive_digits(rng& g, int n) {
  digits d(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    d[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(g.uniform_int(i == 0 ? 1 : 0, 9));
  }
  return d;
}

//! Which second operands a multiplication task draws.
struct multiplication_options {
  int min_b_digits = 1;  // 1 or 2
  int max_b_digits = 2;  // 1 or 2, at least min_b_digits
};

//! a × b with a 4-pointer memory, as specified in docs/tasks.md.
//! Operands are positive: a zero operand would need leading zeros removed from the answer, which no bounded
//! window can decide.
class multiplication {
public:
  using instance = multiplication_instance;
  using tool_type = tools::pointer_memory<4>;
  static constexpr int max_digits = 1 << 20;  // keeps traces (about 60 tokens per digit) in int32 range

  explicit multiplication(multiplication_options options = {}, tools::pointer_memory_limits limits = {})
      : options_(options), vocab_(make_vocab()), limits_(limits) {
    check_arg(options.min_b_digits >= 1 && options.min_b_digits <= 2, "multiplication_options.min_b_digits",
              options.min_b_digits, "must be 1 or 2");
    check_arg(options.max_b_digits >= options.min_b_digits && options.max_b_digits <= 2,
              "multiplication_options.max_b_digits", options.max_b_digits, "must be in [min_b_digits, 2]");
    for (int k = 0; k < 4; ++k) {
      auto const id = [&](std::string_view op) { return vocab_.id(tools::pointer_command_name(k + 1, op)); };
      new_[k] = id("new");
      left_[k] = id("left");
      right_[k] = id("right");
      read_[k] = id("read");
    }
    times_ = vocab_.id("*");
    ans_ = vocab_.id("[ANS]");
    nil_ = vocab_.id("[NIL]");
  }

  //! The addition vocabulary (same ids), then [p4.new] [p4.left] [p4.right] [p4.read] and "*": an addition
  //! trace is a valid trace of this vocabulary, which is what the mixture task relies on.
  static tools::vocab make_vocab() {
    auto v = addition::make_vocab();
    for (auto op : {"new", "left", "right", "read"}) {
      v.add(tools::pointer_command_name(4, op));
    }
    v.add("*");
    return v;
  }

  [[nodiscard]] std::string name() const {
    if (options_.min_b_digits == options_.max_b_digits) {
      return "multiplication_" + std::to_string(options_.min_b_digits);
    }
    return "multiplication";
  }
  [[nodiscard]] tools::vocab const& vocab() const { return vocab_; }
  [[nodiscard]] multiplication_options const& options() const { return options_; }

  //! Training distribution: n1 ~ U{1..n} digits for a, n2 ~ U{min_b_digits..max_b_digits} for b.
  [[nodiscard]] instance sample(rng& g, int n) const {
    check_arg(n >= 1 && n <= max_digits, "n", n, "must be in [1, 2^20] digits");
    auto const n1 = static_cast<int>(g.uniform_int(1, n));
    auto const n2 = static_cast<int>(g.uniform_int(options_.min_b_digits, options_.max_b_digits));
    auto a = random_positive_digits(g, n1);
    return {std::move(a), random_positive_digits(g, n2)};
  }
  //! Test distribution: a has exactly n digits; b as in training.
  [[nodiscard]] instance sample_exact(rng& g, int n) const {
    check_arg(n >= 1 && n <= max_digits, "n", n, "must be in [1, 2^20] digits");
    auto const n2 = static_cast<int>(g.uniform_int(options_.min_b_digits, options_.max_b_digits));
    auto a = random_positive_digits(g, n);
    return {std::move(a), random_positive_digits(g, n2)};
  }
  //! The instance a × b from decimal strings, validated ("--a 907 --b 38").
  [[nodiscard]] instance instance_from_strings(std::string_view a, std::string_view b) const {
    instance x{digits_from_string("a", a), digits_from_string("b", b)};
    check_arg(x.a.size() <= max_digits, "a digits", x.a.size(), "must be at most 2^20");
    check_arg(x.a[0] != 0, "a", a, "must be positive");
    check_arg(x.b[0] != 0, "b", b, "must be positive");
    auto const nb = static_cast<int>(x.b.size());
    check_arg(nb >= options_.min_b_digits && nb <= options_.max_b_digits, "b digits", nb,
              "must be in [" + std::to_string(options_.min_b_digits) + ", " + std::to_string(options_.max_b_digits) +
                  "] for " + name());
    return x;
  }
  [[nodiscard]] nlohmann::json describe(instance const& x) const {
    return {{"a", digits_to_string(x.a)},
            {"b", digits_to_string(x.b)},
            {"product", digits_to_string(multiply_digits(x.a, x.b))}};
  }

  //! `a * b =`, one token per digit, most significant first.
  [[nodiscard]] std::vector<tools::token> prompt(instance const& x) const {
    using T = addition_tokens;
    std::vector<tools::token> p;
    p.reserve(x.a.size() + x.b.size() + 2);
    for (auto d : x.a) {
      p.push_back(T::digit(d));
    }
    p.push_back(times_);
    for (auto d : x.b) {
      p.push_back(T::digit(d));
    }
    p.push_back(T::equals);
    return p;
  }

  [[nodiscard]] bool check(instance const& x, std::span<const tools::token> out) const {
    return addition_tokens::equals_digits(multiply_digits(x.a, x.b), out);
  }
  [[nodiscard]] tool_type make_tool() const { return tool_type(vocab_, limits_); }

  //! The expert episode (docs/tasks.md): locate, one partial-product row per digit of b, the sum of the two
  //! rows for a 2-digit b, then the last row read back. It is written by driving a real tool, so every
  //! observation is the tool's own answer.
  [[nodiscard]] tools::trace expert(instance const& x) const {
    using T = addition_tokens;
    check_arg(!x.a.empty() && x.a[0] != 0, "a", digits_to_string(x.a), "must be positive");
    check_arg(!x.b.empty() && x.b.size() <= 2 && x.b[0] != 0, "b", digits_to_string(x.b),
              "must be a positive 1- or 2-digit number");
    auto const na = static_cast<std::int64_t>(x.a.size());
    writer w(*this, prompt(x), 66 * na + 120);
    constexpr int p1 = 0, p2 = 1, p3 = 2, p4 = 3;
    auto const is_digit = [](tools::token t) { return T::is_digit(t); };
    auto const val = [](tools::token t) { return T::value(t); };
    auto const times = times_;
    auto const nil = nil_;

    // 1. Locate: p1 on the last digit of a; p2 on the last digit of b; p3 on '='.
    w.cmd(new_[p1]);
    w.cmd(new_[p2]);
    w.cmd(new_[p3]);
    while (is_digit(w.read(read_[p1]))) {
      w.cmd(right_[p1]);
      w.cmd(right_[p2]);
      w.cmd(right_[p3]);
    }
    w.cmd(left_[p1]);
    while (w.read(read_[p2]) != T::equals) {
      w.cmd(right_[p3]);  // p3 first: addition moves p2 first, so a model trained on both tells them apart
      w.cmd(right_[p2]);
    }
    w.cmd(left_[p2]);

    // 2. Partial-product rows. A column reads a digit of a (p1; '*' and [NIL] count as 0), the digit of b (p2)
    // and the carry written last (p3; the row separator counts as 0), then writes "digit carry" and moves p1
    // left and p3 onto the new carry. A row ends when p1 is past a and the carry is 0.
    tools::token x_read = w.read(read_[p1]);
    while (true) {
      while (true) {
        auto const y = w.read(read_[p2]);
        auto const c = w.read(read_[p3]);
        if (x_read == nil && val(c) == 0) {
          break;
        }
        int const v = val(x_read) * val(y) + val(c);
        w.store(T::digit(v % 10));
        w.store(T::digit(v / 10));
        if (x_read != nil) {
          w.cmd(left_[p1]);
        }
        w.cmd(right_[p3]);
        w.cmd(right_[p3]);
        x_read = w.read(read_[p1]);
      }
      w.store(T::plus);  // the row separator; p3 rests on it, so the next row starts with carry 0
      w.cmd(right_[p3]);
      w.cmd(left_[p2]);
      if (!is_digit(w.read(read_[p2]))) {
        break;  // p2 reads '*': every digit of b has its row
      }
      // Rewind p1 from before a to '*', which reads as 0: the one-column shift of the second row.
      do {
        w.cmd(right_[p1]);
        x_read = w.read(read_[p1]);
      } while (x_read != times);
    }

    // 3. How many rows? p2 stands on '*': two steps right is b's last digit for a 2-digit b, '=' otherwise.
    w.cmd(right_[p2]);
    w.cmd(right_[p2]);
    if (is_digit(w.read(read_[p2]))) {
      // Sum the two rows: p2 walks row 0 ('=' then row 0), p4 row 1 (after the first '+'), p3 the carries.
      w.cmd(right_[p2]);
      w.cmd(right_[p2]);
      w.cmd(new_[p4]);
      while (true) {
        auto const t = w.read(read_[p4]);
        w.cmd(right_[p4]);
        if (t == T::plus) {
          break;
        }
      }
      while (true) {
        auto const s0 = w.read(read_[p2]);
        auto const s1 = w.read(read_[p4]);
        auto const c = w.read(read_[p3]);
        if (!is_digit(s0) && !is_digit(s1) && val(c) == 0) {
          break;
        }
        int const v = val(s0) + val(s1) + val(c);
        w.store(T::digit(v % 10));
        w.store(T::digit(v / 10));
        if (is_digit(s0)) {
          w.cmd(right_[p2]);
          w.cmd(right_[p2]);
        }
        if (is_digit(s1)) {
          w.cmd(right_[p4]);
          w.cmd(right_[p4]);
        }
        w.cmd(right_[p3]);
        w.cmd(right_[p3]);
      }
      w.store(T::plus);
      w.cmd(right_[p3]);
    }
    w.store(ans_);

    // 4. Output: p3 stands on the last row's separator; walk left, copying every digit slot (skip carries).
    while (true) {
      w.cmd(left_[p3]);
      if (!is_digit(w.read(read_[p3]))) {
        break;
      }
      w.cmd(left_[p3]);
      w.store(w.read(read_[p3]));
    }
    w.end(T::eos);
    return std::move(w.t);
  }

private:
  //! Drives a fresh tool with the expert's tokens and records the trace with roles.
  struct writer {
    tool_type tool;
    tools::trace t;
    tools::token ans;
    bool answering = false;

    writer(multiplication const& task, std::vector<tools::token> const& prompt, std::int64_t reserve)
        : tool(task.make_tool()), ans(task.ans_) {
      t.reserve(prompt.size() + static_cast<std::size_t>(reserve));
      tool.reset(prompt);
      for (auto p : prompt) {
        t.push(p, tools::role::input);
      }
    }
    void cmd(tools::token c) {
      auto const r = tool.feed(c);
      ssmlen::check(r.kind == tools::tool_reply_kind::accepted, "multiplication: the expert's command was refused");
      t.push(c, tools::role::command);
    }
    tools::token read(tools::token c) {
      auto const r = tool.feed(c);
      ssmlen::check(r.kind == tools::tool_reply_kind::observe && r.observation.size() == 1,
                    "multiplication: the expert's read was refused");
      t.push(c, tools::role::command);
      t.push(r.observation[0], tools::role::observation);
      return r.observation[0];
    }
    void store(tools::token s) {
      auto const r = tool.feed(s);
      ssmlen::check(r.kind == tools::tool_reply_kind::stored, "multiplication: the expert's note was refused");
      t.push(s, answering ? tools::role::output : tools::role::thought);
      answering = answering || s == ans;
    }
    void end(tools::token eos) { t.push(eos, tools::role::output); }
  };

  multiplication_options options_;
  tools::vocab vocab_;
  tools::pointer_memory_limits limits_;
  tools::token times_ = 0, ans_ = 0, nil_ = 0;
  std::array<tools::token, 4> new_{}, left_{}, right_{}, read_{};
};

static_assert(task_env<multiplication>);

}  // namespace ssmlen::tasks
