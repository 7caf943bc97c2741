// SPDX-License-Identifier: Apache-2.0
//! @file addition_ablations.hpp
//! Variants of the addition task that remove one ingredient of the tool-use
//! trace, to show what length generalization needs:
//!  - addition_direct: no thoughts, no tool: the prompt, then the sum digits;
//!  - addition_reversed: the same with the sum least significant digit first;
//!  - addition_calculator: one `[add]` command, whose observation is the whole
//!    sum, which the model copies;
//!  - addition_notool: the pointer-memory trace with every command and
//!    observation predicted by the model (pure chain of thought).
//! They share the instances, sampling and prompts of `addition`.
#pragma once

#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/task_env.hpp>
#include <ssmlen/tools/calculator.hpp>
#include <ssmlen/tools/pointer_memory.hpp>
#include <ssmlen/tools/protocol.hpp>

#include <span>
#include <string>
#include <vector>

namespace ssmlen::tasks {

//! The prompt, then the sum digits as outputs (least significant first when `Reversed`), then <EOS>. The tool
//! is a plain memory (pointer_memory<0>): it stores every token.
template <bool Reversed>
class addition_no_thoughts : public addition_family {
public:
  using tool_type = tools::pointer_memory<0>;

  explicit addition_no_thoughts(tools::pointer_memory_limits limits = {})
      : vocab_(addition_tokens::base_vocab()), limits_(limits) {}

  [[nodiscard]] std::string name() const { return Reversed ? "addition_reversed" : "addition_direct"; }
  [[nodiscard]] tools::vocab const& vocab() const { return vocab_; }
  [[nodiscard]] tools::trace expert(instance const& x) const {
    auto const p = addition_tokens::prompt(x);
    auto const sum = add_digits(x.a, x.b);
    tools::trace t;
    t.reserve(p.size() + sum.size() + 1);
    for (auto tok : p) {
      t.push(tok, tools::role::input);
    }
    for (std::size_t i = 0; i < sum.size(); ++i) {
      t.push(addition_tokens::digit(sum[Reversed ? sum.size() - 1 - i : i]), tools::role::output);
    }
    t.push(addition_tokens::eos, tools::role::output);
    return t;
  }
  [[nodiscard]] bool check(instance const& x, std::span<const tools::token> out) const {
    return addition_tokens::equals_digits(add_digits(x.a, x.b), out, Reversed);
  }
  [[nodiscard]] tool_type make_tool() const { return tool_type(vocab_, limits_); }

private:
  tools::vocab vocab_;
  tools::pointer_memory_limits limits_;
};

using addition_direct = addition_no_thoughts<false>;
using addition_reversed = addition_no_thoughts<true>;

//! Single-turn tool use: `a + b =` then `[add]` (command), the sum digits (observation), the sum digits again
//! (output), <EOS>.
class addition_calculator : public addition_family {
public:
  using tool_type = tools::calculator;

  explicit addition_calculator(tools::calculator_limits limits = {}) : vocab_(make_vocab()), limits_(limits) {
    add_ = vocab_.id("[add]");
  }

  static tools::vocab make_vocab() {
    auto v = addition_tokens::base_vocab();
    v.add("[add]");
    return v;
  }

  [[nodiscard]] std::string name() const { return "addition_calculator"; }
  [[nodiscard]] tools::vocab const& vocab() const { return vocab_; }
  [[nodiscard]] tools::trace expert(instance const& x) const {
    auto const p = addition_tokens::prompt(x);
    auto const sum = add_digits(x.a, x.b);
    tools::trace t;
    t.reserve(p.size() + 2 * sum.size() + 2);
    for (auto tok : p) {
      t.push(tok, tools::role::input);
    }
    t.push(add_, tools::role::command);
    for (auto d : sum) {
      t.push(addition_tokens::digit(d), tools::role::observation);
    }
    for (auto d : sum) {
      t.push(addition_tokens::digit(d), tools::role::output);
    }
    t.push(addition_tokens::eos, tools::role::output);
    return t;
  }
  [[nodiscard]] bool check(instance const& x, std::span<const tools::token> out) const {
    return addition_tokens::equals_digits(add_digits(x.a, x.b), out);
  }
  [[nodiscard]] tool_type make_tool() const { return tool_type(vocab_, limits_); }

private:
  tools::vocab vocab_;
  tools::calculator_limits limits_;
  tools::token add_ = 0;
};

//! The addition trace with no tool: the model predicts every command and observation too; the tool only stores.
//! Before `[ANS]` all of them are thoughts; after it they are outputs, so the output stream is the read-back
//! `[p3.read] d d [p3.left] [p3.left] ... [p3.read] =`, and the check is an exact match of that stream.
class addition_notool : public addition_family {
public:
  using tool_type = tools::pointer_memory<0>;

  explicit addition_notool(tools::pointer_memory_limits limits = {}) : with_tool_(limits), limits_(limits) {
    read3_ = vocab().id("[p3.read]");
    left3_ = vocab().id("[p3.left]");
  }

  [[nodiscard]] std::string name() const { return "addition_notool"; }
  [[nodiscard]] tools::vocab const& vocab() const { return with_tool_.vocab(); }
  [[nodiscard]] tools::trace expert(instance const& x) const { return with_tool_.write_trace(x, true); }
  [[nodiscard]] bool check(instance const& x, std::span<const tools::token> out) const {
    auto const sum = add_digits(x.a, x.b);
    if (out.size() != 5 * sum.size() + 2) {
      return false;
    }
    for (std::size_t i = 0; i < sum.size(); ++i) {
      auto const d = addition_tokens::digit(sum[i]);
      auto const* o = out.data() + 5 * i;
      if (o[0] != read3_ || o[1] != d || o[2] != d || o[3] != left3_ || o[4] != left3_) {
        return false;
      }
    }
    return out[out.size() - 2] == read3_ && out.back() == addition_tokens::equals;
  }
  [[nodiscard]] tool_type make_tool() const { return tool_type(vocab(), limits_); }

private:
  addition with_tool_;
  tools::pointer_memory_limits limits_;
  tools::token read3_ = 0, left3_ = 0;
};

static_assert(task_env<addition_direct>);
static_assert(task_env<addition_reversed>);
static_assert(task_env<addition_calculator>);
static_assert(task_env<addition_notool>);

}  // namespace ssmlen::tasks
