// SPDX-License-Identifier: Apache-2.0
//! @file protocol.hpp
//! The token protocol shared by tools, tasks and models: token ids, a
//! vocabulary (names <-> ids), and traces, i.e. token sequences with a role per
//! token. The model is trained on command, thought and output tokens; input and
//! observation tokens are given to it, never predicted.
#pragma once

#include <ssmlen/core/error.hpp>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ssmlen::tools {

using token = std::int32_t;

enum class role : std::uint8_t {
  input,        // the prompt
  command,      // a tool command emitted by the model ([p1.read], [FIND], ...)
  observation,  // inserted by the tool, never predicted
  thought,      // model token stored in the tool's memory before [ANS]
  output,       // model token after [ANS]: the graded answer (and the closing <EOS>)
};

//! Whether the model is trained to predict a token of this role.
constexpr bool in_loss(role r) { return r == role::command || r == role::thought || r == role::output; }

constexpr char const* role_name(role r) {
  switch (r) {
  case role::input:
    return "input";
  case role::command:
    return "command";
  case role::observation:
    return "observation";
  case role::thought:
    return "thought";
  case role::output:
    return "output";
  }
  return "?";
}

//! Token names <-> ids. Id 0 is always `<PAD>`, which never appears in a trace.
class vocab {
public:
  static constexpr token pad = 0;

  vocab() { add("<PAD>"); }
  vocab(std::initializer_list<std::string_view> names) : vocab() {
    for (auto n : names) {
      add(std::string(n));
    }
  }

  //! Adds a name (which must be new) and returns its id.
  token add(std::string const& name) {
    check(!name.empty(), "vocab: token names must not be empty");
    check(!ids_.contains(name), "vocab: token '" + name + "' is already defined");
    auto const id = static_cast<token>(names_.size());
    names_.push_back(name);
    ids_.emplace(name, id);
    return id;
  }

  [[nodiscard]] token id(std::string_view name) const {
    auto const it = ids_.find(std::string(name));
    check(it != ids_.end(), "vocab: unknown token '" + std::string(name) + "'");
    return it->second;
  }
  [[nodiscard]] bool contains(std::string_view name) const { return ids_.contains(std::string(name)); }
  [[nodiscard]] bool valid(token t) const { return t >= 0 && static_cast<std::size_t>(t) < names_.size(); }
  [[nodiscard]] std::string const& name(token t) const {
    check_arg(valid(t), "token id", t, "must be in [0, " + std::to_string(names_.size()) + ")");
    return names_[static_cast<std::size_t>(t)];
  }
  [[nodiscard]] std::int64_t size() const { return static_cast<std::int64_t>(names_.size()); }
  [[nodiscard]] std::vector<std::string> const& names() const { return names_; }

  friend bool operator==(vocab const& a, vocab const& b) { return a.names_ == b.names_; }

private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, token> ids_;
};

//! A token sequence with the role of every token.
struct trace {
  std::vector<token> tokens;
  std::vector<role> roles;

  void push(token t, role r) {
    tokens.push_back(t);
    roles.push_back(r);
  }
  [[nodiscard]] std::size_t size() const { return tokens.size(); }
  void reserve(std::size_t n) {
    tokens.reserve(n);
    roles.reserve(n);
  }

  //! 1 where the model is trained to predict the token (command | thought | output), else 0.
  [[nodiscard]] std::vector<std::uint8_t> loss_mask() const {
    std::vector<std::uint8_t> m(roles.size());
    for (std::size_t i = 0; i < roles.size(); ++i) {
      m[i] = in_loss(roles[i]) ? 1 : 0;
    }
    return m;
  }

  friend bool operator==(trace const&, trace const&) = default;
};

}  // namespace ssmlen::tools
