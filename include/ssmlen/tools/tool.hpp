// SPDX-License-Identifier: Apache-2.0
//! @file tool.hpp
//! The tool concept. A tool sees every token the model emits in an episode, in
//! order, and answers each one; it never throws and never crashes on what a
//! model emits: an action it cannot carry out ends the episode as `invalid`
//! with a reason.
#pragma once

#include <ssmlen/tools/protocol.hpp>

#include <concepts>
#include <span>
#include <string_view>

namespace ssmlen::tools {

enum class tool_reply_kind {
  stored,    // a thought or output: appended to the tool's memory
  accepted,  // a complete command with nothing to return ([p1.left])
  pending,   // part of a multi-token command ([FIND] x ... before [END])
  observe,   // the tool inserts `observation` into the stream next ([p1.read] -> one token)
  invalid,   // the episode ends; `why` says what was wrong
};

struct tool_reply {
  tool_reply_kind kind = tool_reply_kind::stored;
  std::span<const token> observation{};  // valid until the next call on the tool
  std::string_view why{};                // set when invalid; valid until the next call on the tool
};

//! reset(prompt) starts an episode whose memory is the prompt; feed(tok) answers one model token.
template <class T>
concept tool = requires(T& t, std::span<const token> prompt, token tok) {
  t.reset(prompt);
  { t.feed(tok) } -> std::same_as<tool_reply>;
};

}  // namespace ssmlen::tools
