// SPDX-License-Identifier: Apache-2.0
//! @file episode.hpp
//! One interactive episode: a policy (a model, a lookup table, a script) emits
//! tokens, a tool answers each one, and the loop records the trace with a role
//! per token until `<EOS>`, an invalid action or a token cap. This is how every
//! model is evaluated: the tool, not the model, writes the observations.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/tools/protocol.hpp>
#include <ssmlen/tools/tool.hpp>

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::agent {

//! A next-token predictor driven one token at a time. `observe` pushes any token (prompt, the policy's own
//! tokens, observations) into its context; `act` predicts the next model token from that context.
template <class P>
concept policy = requires(P& p, tools::token t) {
  p.reset();
  p.observe(t);
  { p.act() } -> std::convertible_to<tools::token>;
};

//! The tokens the loop must recognise: `<EOS>` ends the episode; `[ANS]` separates thoughts from outputs.
struct episode_markers {
  tools::token eos = -1;
  tools::token answer = -1;  // -1: the task has no [ANS]: every stored model token is an output

  //! `<EOS>` (required) and `[ANS]` (when the vocabulary has it) by name.
  static episode_markers from(tools::vocab const& v) {
    return {v.id("<EOS>"), v.contains("[ANS]") ? v.id("[ANS]") : tools::token{-1}};
  }
};

enum class end_reason {
  eos,        // the policy emitted <EOS>
  invalid,    // the tool refused an action (see `why`)
  token_cap,  // the episode reached max_tokens without <EOS>
};

constexpr char const* end_reason_name(end_reason r) {
  switch (r) {
  case end_reason::eos:
    return "eos";
  case end_reason::invalid:
    return "invalid";
  case end_reason::token_cap:
    return "token_cap";
  }
  return "?";
}

struct episode_result {
  tools::trace trace;                // prompt (role input), then every model and observation token with its role
  std::vector<tools::token> output;  // the output stream: output-role tokens before <EOS>
  end_reason end = end_reason::eos;
  std::string why;                // the tool's reason when invalid, "token cap" when capped
  std::int64_t model_tokens = 0;  // tokens the policy emitted (commands, thoughts, outputs)

  [[nodiscard]] bool finished() const { return end == end_reason::eos; }
};

//! Runs one episode. `max_tokens` caps the tokens after the prompt (model and observation tokens together).
//! Roles: a token the tool answers `observe`, `accepted` or `pending` to is a command; a `stored` token is a
//! thought until `[ANS]` has been stored (`[ANS]` itself is a thought), an output after; `<EOS>` is an output
//! and is not fed to the tool.
template <policy P, tools::tool T>
episode_result run_episode(P& p, T& tool, std::span<const tools::token> prompt, episode_markers m,
                           std::int64_t max_tokens) {
  check_arg(max_tokens > 0, "max_tokens", max_tokens, "must be positive");
  check_arg(m.eos >= 0, "episode_markers.eos", m.eos, "must be a token id");
  episode_result r;
  r.trace.reserve(prompt.size() + static_cast<std::size_t>(std::min<std::int64_t>(max_tokens, 4096)));
  p.reset();
  tool.reset(prompt);
  for (auto t : prompt) {
    r.trace.push(t, tools::role::input);
    p.observe(t);
  }
  bool answering = m.answer < 0;
  std::int64_t used = 0;
  while (true) {
    if (used >= max_tokens) {
      r.end = end_reason::token_cap;
      r.why = "token cap of " + std::to_string(max_tokens) + " reached";
      return r;
    }
    auto const t = static_cast<tools::token>(p.act());
    ++r.model_tokens;
    ++used;
    if (t == m.eos) {
      r.trace.push(t, tools::role::output);
      r.end = end_reason::eos;
      return r;
    }
    auto const reply = tool.feed(t);
    switch (reply.kind) {
    case tools::tool_reply_kind::invalid:
      r.end = end_reason::invalid;
      r.why = std::string(reply.why);
      return r;  // the refused token is not part of the trace
    case tools::tool_reply_kind::stored:
      if (answering) {
        r.trace.push(t, tools::role::output);
        r.output.push_back(t);
      } else {
        r.trace.push(t, tools::role::thought);
        answering = t == m.answer;
      }
      p.observe(t);
      break;
    case tools::tool_reply_kind::accepted:
    case tools::tool_reply_kind::pending:
    case tools::tool_reply_kind::observe:
      r.trace.push(t, tools::role::command);
      p.observe(t);
      break;
    }
    if (reply.kind == tools::tool_reply_kind::observe) {
      for (auto o : reply.observation) {
        r.trace.push(o, tools::role::observation);
        p.observe(o);
        ++used;
      }
    }
  }
}

//! A policy that replays a fixed token sequence (the model tokens of an expert trace): for tests and demos.
class replay_policy {
public:
  explicit replay_policy(tools::trace const& t) {
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (tools::in_loss(t.roles[i])) {
        tokens_.push_back(t.tokens[i]);
      }
    }
  }
  void reset() { next_ = 0; }
  void observe(tools::token) {}
  tools::token act() { return next_ < tokens_.size() ? tokens_[next_++] : tools::vocab::pad; }

private:
  std::vector<tools::token> tokens_;
  std::size_t next_ = 0;
};

}  // namespace ssmlen::agent
