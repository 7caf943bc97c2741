// SPDX-License-Identifier: Apache-2.0
//! @file addition.hpp
//! Multi-digit addition solved with a three-pointer memory tool, the paper's
//! headline task. The expert trace adds column by column, writing carry and
//! sum digit as thoughts, then reads the sum back most significant digit
//! first. Every model token depends only on a few recent tokens, which is why a
//! model trained on 5-digit sums can add 1000-digit numbers. Operands are digit
//! vectors, never machine integers. The trace format is in docs/tasks.md.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/task_env.hpp>
#include <ssmlen/tools/pointer_memory.hpp>
#include <ssmlen/tools/protocol.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ssmlen::tasks {

//! Decimal digits, most significant first.
using digits = std::vector<std::uint8_t>;

//! Two operands of an addition family task.
struct addition_instance {
  digits a;
  digits b;
  friend bool operator==(addition_instance const&, addition_instance const&) = default;
};

//! Schoolbook a + b on digit vectors (most significant first).
inline digits add_digits(digits const& a, digits const& b) {
  digits r;  // least significant first, reversed at the end
  r.reserve(std::max(a.size(), b.size()) + 1);
  int carry = 0;
  for (std::size_t i = 0; i < a.size() || i < b.size() || carry != 0; ++i) {
    int s = carry;
    s += i < a.size() ? a[a.size() - 1 - i] : 0;
    s += i < b.size() ? b[b.size() - 1 - i] : 0;
    r.push_back(static_cast<std::uint8_t>(s % 10));
    carry = s / 10;
  }
  while (r.size() > 1 && r.back() == 0) {
    r.pop_back();  // only 0 + 0 (or operands with leading zeros) gets here
  }
  std::reverse(r.begin(), r.end());
  return r;
}

inline std::string digits_to_string(digits const& d) {
  std::string s(d.size(), '0');
  for (std::size_t i = 0; i < d.size(); ++i) {
    s[i] = static_cast<char>('0' + d[i]);
  }
  return s;
}

//! Parses a non-negative decimal operand ("0", "907"; no sign, no leading zeros).
inline digits digits_from_string(std::string_view name, std::string_view s) {
  std::string quoted = "\"";  // built by appending: g++ 12 warns falsely on "\"" + std::string
  quoted += s;
  quoted += '"';
  check_arg(!s.empty(), name, quoted, "must be a non-empty decimal number");
  digits d(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    check_arg(s[i] >= '0' && s[i] <= '9', name, quoted, "must contain only the digits 0-9");
    d[i] = static_cast<std::uint8_t>(s[i] - '0');
  }
  check_arg(d.size() == 1 || d[0] != 0, name, quoted, "must not have leading zeros");
  return d;
}

//! A number drawn uniformly among those with exactly `n` digits (no leading zero; 0 counts as one digit).
inline digits random_digits(rng& g, int n) {
  digits d(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    d[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(g.uniform_int(i == 0 && n > 1 ? 1 : 0, 9));
  }
  return d;
}

//! Sampling and parsing shared by addition and its ablations. Sizes are digit counts.
struct addition_operands {
  static constexpr int max_digits = 1 << 20;  // keeps traces (about 26 tokens per digit) in int32 range

  //! Training distribution: digit counts n1, n2 ~ U{1..n}, operands uniform with those digit counts.
  static addition_instance sample(rng& g, int n) {
    check_arg(n >= 1 && n <= max_digits, "n", n, "must be in [1, 2^20] digits");
    auto const n1 = static_cast<int>(g.uniform_int(1, n));
    auto const n2 = static_cast<int>(g.uniform_int(1, n));
    return {random_digits(g, n1), random_digits(g, n2)};
  }
  //! Test distribution: both operands have exactly n digits.
  static addition_instance sample_exact(rng& g, int n) {
    check_arg(n >= 1 && n <= max_digits, "n", n, "must be in [1, 2^20] digits");
    auto a = random_digits(g, n);
    return {std::move(a), random_digits(g, n)};
  }
  //! The instance a + b from decimal strings, validated ("--a 57 --b 68").
  static addition_instance from_strings(std::string_view a, std::string_view b) {
    addition_instance x{digits_from_string("a", a), digits_from_string("b", b)};
    check_arg(x.a.size() <= max_digits, "a digits", x.a.size(), "must be at most 2^20");
    check_arg(x.b.size() <= max_digits, "b digits", x.b.size(), "must be at most 2^20");
    return x;
  }
  static nlohmann::json describe(addition_instance const& x) {
    return {
        {"a", digits_to_string(x.a)}, {"b", digits_to_string(x.b)}, {"sum", digits_to_string(add_digits(x.a, x.b))}};
  }
};

//! Token ids of the vocabulary every addition variant starts with: <PAD>, 0..9 (ids 1..10), + = <EOS>.
struct addition_tokens {
  static constexpr tools::token digit0 = 1;
  static constexpr tools::token plus = 11;
  static constexpr tools::token equals = 12;
  static constexpr tools::token eos = 13;

  static tools::vocab base_vocab() {
    tools::vocab v{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "=", "<EOS>"};
    return v;
  }
  static constexpr bool is_digit(tools::token t) { return t >= digit0 && t < digit0 + 10; }
  static constexpr tools::token digit(int d) { return digit0 + d; }
  static constexpr int value(tools::token t) { return is_digit(t) ? t - digit0 : 0; }

  //! `a + b =`, one token per digit, most significant first.
  static std::vector<tools::token> prompt(addition_instance const& x) {
    std::vector<tools::token> p;
    p.reserve(x.a.size() + x.b.size() + 2);
    for (auto d : x.a) {
      p.push_back(digit(d));
    }
    p.push_back(plus);
    for (auto d : x.b) {
      p.push_back(digit(d));
    }
    p.push_back(equals);
    return p;
  }
  //! Whether `out` is exactly the given digits (optionally least significant first).
  static bool equals_digits(digits const& want, std::span<const tools::token> out, bool reversed = false) {
    if (out.size() != want.size()) {
      return false;
    }
    for (std::size_t i = 0; i < want.size(); ++i) {
      if (out[i] != digit(want[reversed ? want.size() - 1 - i : i])) {
        return false;
      }
    }
    return true;
  }
};

//! The members every addition variant shares: instances, sampling, parsing, prompts.
struct addition_family {
  using instance = addition_instance;

  [[nodiscard]] instance sample(rng& g, int n) const { return addition_operands::sample(g, n); }
  [[nodiscard]] instance sample_exact(rng& g, int n) const { return addition_operands::sample_exact(g, n); }
  [[nodiscard]] instance instance_from_strings(std::string_view a, std::string_view b) const {
    return addition_operands::from_strings(a, b);
  }
  [[nodiscard]] nlohmann::json describe(instance const& x) const { return addition_operands::describe(x); }
  [[nodiscard]] std::vector<tools::token> prompt(instance const& x) const { return addition_tokens::prompt(x); }
};

//! The pointer-memory addition task (3 pointers), as specified in docs/tasks.md.
class addition : public addition_family {
public:
  using tool_type = tools::pointer_memory<3>;

  explicit addition(tools::pointer_memory_limits limits = {})
      : vocab_(make_vocab()), limits_(limits), ans_(vocab_.id("[ANS]")), nil_(vocab_.id("[NIL]")) {
    for (int k = 0; k < 3; ++k) {
      auto const name = [&](std::string_view op) { return vocab_.id(tools::pointer_command_name(k + 1, op)); };
      new_[k] = name("new");
      left_[k] = name("left");
      right_[k] = name("right");
      read_[k] = name("read");
    }
  }

  //! <PAD>, digits, + = <EOS>, then [ANS] [NIL] and [pk.new] [pk.left] [pk.right] [pk.read] for k = 1..3.
  static tools::vocab make_vocab() {
    auto v = addition_tokens::base_vocab();
    v.add("[ANS]");
    v.add("[NIL]");
    for (int k = 1; k <= 3; ++k) {
      for (auto op : {"new", "left", "right", "read"}) {
        v.add(tools::pointer_command_name(k, op));
      }
    }
    return v;
  }

  [[nodiscard]] std::string name() const { return "addition"; }
  [[nodiscard]] tools::vocab const& vocab() const { return vocab_; }
  [[nodiscard]] tools::trace expert(instance const& x) const { return write_trace(x, false); }
  [[nodiscard]] bool check(instance const& x, std::span<const tools::token> out) const {
    return addition_tokens::equals_digits(add_digits(x.a, x.b), out);
  }
  [[nodiscard]] tool_type make_tool() const { return tool_type(vocab_, limits_); }

  //! The expert episode. With `predict_observations` every command and observation is a model token too (the
  //! no-tool ablation: the same tokens, all predicted): a thought before `[ANS]`, an output after.
  [[nodiscard]] tools::trace write_trace(instance const& x, bool predict_observations) const {
    using tools::role;
    using T = addition_tokens;
    auto const prompt_tokens = T::prompt(x);
    auto const n = std::max(x.a.size(), x.b.size());
    tools::trace t;
    t.reserve(prompt_tokens.size() + 27 * n + 40);
    std::vector<tools::token> mem;  // the tool's memory, simulated so that reads can be written
    mem.reserve(prompt_tokens.size() + 2 * n + 4);
    mem = prompt_tokens;
    for (auto p : prompt_tokens) {
      t.push(p, role::input);
    }
    auto command_role = predict_observations ? role::thought : role::command;
    auto observation_role = predict_observations ? role::thought : role::observation;
    auto const nil = nil_;
    auto const ans = ans_;
    std::array<std::int64_t, 3> pos{};
    auto cmd = [&](tools::token c) { t.push(c, command_role); };
    auto read = [&](int k) {
      cmd(read_[k]);
      auto const p = pos[static_cast<std::size_t>(k)];
      auto const o = p >= 0 && p < static_cast<std::int64_t>(mem.size()) ? mem[static_cast<std::size_t>(p)] : nil;
      t.push(o, observation_role);
      return o;
    };
    auto move = [&](int k, int by) {
      cmd(by < 0 ? left_[k] : right_[k]);
      pos[static_cast<std::size_t>(k)] += by;
    };
    auto store = [&](tools::token s, role r) {
      t.push(s, r);
      mem.push_back(s);
    };
    // 1. p1 walks right over a, stops on the last digit of a.
    cmd(new_[0]);
    while (T::is_digit(read(0))) {
      move(0, +1);
    }
    move(0, -1);
    // 2. p2 walks to '=' (p3 alongside), then back onto the last digit of b.
    cmd(new_[1]);
    cmd(new_[2]);
    while (read(1) != T::equals) {
      move(1, +1);
      move(2, +1);
    }
    move(1, -1);
    // 3. Columns, least significant first: thoughts "carry sum"; p3 follows the newest sum digit.
    int carry = 0;
    while (true) {
      auto const xa = read(0);
      auto const yb = read(1);
      if (!T::is_digit(xa) && !T::is_digit(yb) && carry == 0) {
        store(ans, role::thought);
        if (predict_observations) {
          command_role = observation_role = role::output;
        }
        break;
      }
      int const s = T::value(xa) + T::value(yb) + carry;
      carry = s / 10;
      store(T::digit(carry), role::thought);
      store(T::digit(s % 10), role::thought);
      if (T::is_digit(xa)) {
        move(0, -1);
      }
      if (T::is_digit(yb)) {
        move(1, -1);
      }
      move(2, +1);
      move(2, +1);
    }
    // 4. p3 reads the sum digits back, most significant first, until '='.
    while (true) {
      auto const d = read(2);
      if (!T::is_digit(d)) {
        t.push(T::eos, role::output);
        break;
      }
      store(d, role::output);
      move(2, -1);
      move(2, -1);
    }
    return t;
  }

private:
  tools::vocab vocab_;
  tools::pointer_memory_limits limits_;
  tools::token ans_ = 0, nil_ = 0;
  std::array<tools::token, 3> new_{}, left_{}, right_{}, read_{};
};

static_assert(task_env<addition>);

}  // namespace ssmlen::tasks
