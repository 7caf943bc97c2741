// SPDX-License-Identifier: Apache-2.0
//! @file pointer_memory.hpp
//! The pointer-memory tool: a growing memory (the prompt, then every token the
//! model stores) and P pointers the model moves and reads with one-token
//! commands `[pk.new] [pk.left] [pk.right] [pk.read]`. A read returns one
//! token, or `[NIL]` outside memory. Each step only needs the token under a
//! pointer, so a fixed-memory model can drive it over inputs of any length.
//! See docs/tasks.md for the protocol.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/tools/protocol.hpp>
#include <ssmlen/tools/tool.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::tools {

//! Bounds that turn a runaway episode into an invalid action instead of unbounded memory.
struct pointer_memory_limits {
  std::int64_t max_memory = std::int64_t{1} << 24;        // tokens in memory (prompt + stored tokens)
  std::int64_t max_observations = std::int64_t{1} << 24;  // reads answered in one episode
};

//! The tool's command token names for pointer k (1-based): `[pk.new]` etc.
inline std::string pointer_command_name(int k, std::string_view op) {
  std::string s = "[p";
  s += std::to_string(k);
  s += '.';
  s += op;
  s += ']';
  return s;
}

template <int P>
class pointer_memory {
  static_assert(P >= 0 && P <= 9, "pointer_memory: 0 to 9 pointers");

public:
  static constexpr int pointers = P;

  //! Looks up `[NIL]` and the P x 4 command tokens in `v`, which must define them (P = 0: a plain memory that
  //! stores every token and needs neither).
  explicit pointer_memory(vocab const& v, pointer_memory_limits limits = {})
      : limits_(limits), vocab_size_(v.size()), ops_(static_cast<std::size_t>(v.size()), op{}) {
    check_arg(limits.max_memory > 0, "pointer_memory_limits.max_memory", limits.max_memory, "must be positive");
    check_arg(limits.max_observations >= 0, "pointer_memory_limits.max_observations", limits.max_observations,
              "must be non-negative");
    nil_ = P > 0 ? v.id("[NIL]") : vocab::pad;
    for (int k = 0; k < P; ++k) {
      ops_[static_cast<std::size_t>(v.id(pointer_command_name(k + 1, "new")))] = {kind::create, k};
      ops_[static_cast<std::size_t>(v.id(pointer_command_name(k + 1, "left")))] = {kind::left, k};
      ops_[static_cast<std::size_t>(v.id(pointer_command_name(k + 1, "right")))] = {kind::right, k};
      ops_[static_cast<std::size_t>(v.id(pointer_command_name(k + 1, "read")))] = {kind::read, k};
      auto& why = unplaced_why_[static_cast<std::size_t>(k)];
      why = "pointer p";
      why += std::to_string(k + 1);
      why += " used before ";
      why += pointer_command_name(k + 1, "new");
    }
  }

  //! Memory := prompt; every pointer is unplaced.
  void reset(std::span<const token> prompt) {
    memory_.assign(prompt.begin(), prompt.end());
    placed_.fill(false);
    pos_.fill(0);
    observations_ = 0;
    prompt_too_long_ = static_cast<std::int64_t>(memory_.size()) > limits_.max_memory;
  }

  tool_reply feed(token t) {
    if (prompt_too_long_) {
      return invalid("prompt longer than the memory limit");
    }
    if (t <= vocab::pad || t >= vocab_size_) {
      return invalid(t == vocab::pad ? "<PAD> emitted" : "token id outside the vocabulary");
    }
    auto const o = ops_[static_cast<std::size_t>(t)];
    if (o.what == kind::none) {
      if (static_cast<std::int64_t>(memory_.size()) >= limits_.max_memory) {
        return invalid("memory limit reached");
      }
      memory_.push_back(t);
      return {tool_reply_kind::stored};
    }
    auto const k = static_cast<std::size_t>(o.pointer);
    if (o.what == kind::create) {
      placed_[k] = true;
      pos_[k] = 0;
      return {tool_reply_kind::accepted};
    }
    if (!placed_[k]) {
      return invalid(unplaced_why_[k]);
    }
    switch (o.what) {
    case kind::left:
      --pos_[k];
      return {tool_reply_kind::accepted};
    case kind::right:
      ++pos_[k];
      return {tool_reply_kind::accepted};
    default:
      break;
    }
    if (observations_ >= limits_.max_observations) {
      return invalid("observation limit reached");
    }
    ++observations_;
    auto const p = pos_[k];
    read_ = p >= 0 && p < static_cast<std::int64_t>(memory_.size()) ? memory_[static_cast<std::size_t>(p)] : nil_;
    return {tool_reply_kind::observe, std::span<const token>(&read_, 1)};
  }

  // Inspection, for tests and trace viewers.
  [[nodiscard]] std::span<const token> memory() const { return memory_; }
  [[nodiscard]] bool placed(int k) const { return placed_.at(static_cast<std::size_t>(k)); }
  [[nodiscard]] std::int64_t position(int k) const { return pos_.at(static_cast<std::size_t>(k)); }
  [[nodiscard]] std::int64_t observations() const { return observations_; }
  [[nodiscard]] pointer_memory_limits const& limits() const { return limits_; }

private:
  enum class kind : std::uint8_t { none, create, left, right, read };
  struct op {
    kind what = kind::none;
    int pointer = 0;
  };

  static tool_reply invalid(std::string_view why) { return {tool_reply_kind::invalid, {}, why}; }

  pointer_memory_limits limits_;
  std::int64_t vocab_size_;
  std::vector<op> ops_;  // by token id: which command, if any
  token nil_ = 0;
  std::array<std::string, P> unplaced_why_{};
  std::vector<token> memory_;
  std::array<bool, P> placed_{};
  std::array<std::int64_t, P> pos_{};
  std::int64_t observations_ = 0;
  bool prompt_too_long_ = false;
  token read_ = 0;
};

}  // namespace ssmlen::tools
