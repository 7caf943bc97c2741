// SPDX-License-Identifier: Apache-2.0
//! @file rollout.hpp
//! Batched greedy rollouts in which the model drives a tool. Each episode's
//! prompt is prefilled with the parallel forward (keeping its final state);
//! then every step feeds each live episode exactly one token through the
//! recurrent `step`: its last emitted token or the next observation token the
//! tool inserted. When an episode has nothing left to feed, its next token is
//! the argmax of the logits, handed to the tool. Episodes end at <EOS>, an
//! invalid action or the token cap; finished episodes free their slot at once
//! and waiting episodes take it, so long episodes never stall short ones.
//! Memory: batch x model state, plus the tools' own memories; traces are kept
//! only on request. `rollout_ledger` is everything besides the model (tools,
//! records, end reasons): agent/cuda/rollout.cuh shares it.
#pragma once

#include <ssmlen/agent/episode.hpp>
#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/tools/protocol.hpp>
#include <ssmlen/tools/tool.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ssmlen::agent {

struct rollout_config {
  std::int64_t batch = 64;            // episodes stepped together
  std::int64_t max_tokens = 1 << 22;  // cap on prompt + generated + observed tokens per episode
  bool keep_trace = false;            // record every token with its role (costs memory linear in length)
  std::int64_t prefill_chunk = 512;   // prompt tokens per sequence in one host prefill forward (bounds its activations)
};

//! One episode to run: its prompt and, optionally, the expert trace to locate the first divergence from.
struct episode_input {
  std::vector<tools::token> prompt;
  tools::trace const* expert = nullptr;
};

struct rollout_result {
  std::vector<tools::token> output;  // the output stream: output tokens before <EOS>
  tools::trace trace;                // when keep_trace
  end_reason reason = end_reason::token_cap;
  std::string why;                     // the tool's reason when invalid
  std::int64_t tokens = 0;             // episode length, prompt included
  std::int64_t first_divergence = -1;  // first position whose token differs from the expert trace, -1 if none
  tools::token diverged_to = -1;       // the token found there instead of the expert's
};

namespace detail {

//! Row `from` of every tensor of a model's state into row `to` of dst's (a state lists its tensors, each [B, ...]).
template <class State>
void copy_state_row(State const& src, std::int64_t from, State& dst, std::int64_t to) {
  auto const s = src.tensors();
  auto d = dst.tensors();
  for (std::size_t i = 0; i < s.size(); ++i) {
    std::int64_t const row = s[i]->size() / s[i]->dim(0);
    std::copy(s[i]->data() + from * row, s[i]->data() + (from + 1) * row, d[i]->data() + to * row);
  }
}

template <class T>
tools::token argmax(T const* logits, std::int64_t v) {
  std::int64_t best = 0;
  for (std::int64_t i = 1; i < v; ++i) {
    if (logits[i] > logits[best]) {
      best = i;
    }
  }
  return static_cast<tools::token>(best);
}

}  // namespace detail

//! What every rollout does around the model, whatever runs it: it hands out waiting episodes with fresh tools,
//! records each token (trace, length, first divergence from the expert), answers each predicted token through the
//! episode's tool, decides when an episode ends, and reports it. A live episode is a `slot`.
template <class ToolFactory>
class rollout_ledger {
public:
  using tool_type = std::decay_t<std::invoke_result_t<ToolFactory&, std::size_t>>;
  static_assert(tools::tool<tool_type>, "make_tool must return a type satisfying ssmlen::tools::tool");

  struct slot {
    std::size_t episode = 0;
    tool_type tool;
    std::deque<tools::token> to_feed;  // tokens the model must consume before it predicts again
    bool answered = false;             // [ANS] has been stored (always, for tasks without [ANS])
  };

  rollout_ledger(std::span<const episode_input> episodes, ToolFactory& make_tool, episode_markers ids,
                 rollout_config const& cfg, std::function<void(std::size_t, rollout_result const&)> const& on_done)
      : episodes_(episodes), make_tool_(make_tool), ids_(ids), cfg_(cfg), on_done_(on_done), results_(episodes.size()) {
    check_arg(cfg.batch > 0, "rollout batch", cfg.batch, "must be positive");
    check_arg(cfg.max_tokens > 0, "max_tokens", cfg.max_tokens, "must be positive");
    check_arg(cfg.prefill_chunk > 0, "prefill_chunk", cfg.prefill_chunk, "must be positive");
  }

  [[nodiscard]] bool waiting() const { return next_ < episodes_.size(); }

  //! The prompt of the next waiting episode.
  [[nodiscard]] std::span<const tools::token> next_prompt() const {
    check_arg(!episodes_[next_].prompt.empty(), "prompt length of episode", next_, "must be positive");
    return episodes_[next_].prompt;
  }

  //! Starts the next waiting episode: a fresh tool reset on its prompt, the prompt recorded as input. Nothing is
  //! queued for the model: the caller feeds the prompt (a prefill, or the slot's to_feed).
  slot start() {
    std::size_t const e = next_;
    auto const prompt = next_prompt();
    ++next_;
    slot s{e, make_tool_(e), {}, ids_.answer < 0};
    s.tool.reset(prompt);
    for (auto t : prompt) {
      record(s, t, tools::role::input);
    }
    return s;
  }

  //! The model predicted `t` for slot s: hands it to the tool and queues it (and any observation) to be fed;
  //! returns false when the episode ended.
  bool act(slot& s, tools::token t) {
    auto& res = results_[s.episode];
    if (t == ids_.eos) {
      record(s, t, tools::role::output);
      res.reason = end_reason::eos;
      return false;
    }
    auto const reply = s.tool.feed(t);
    switch (reply.kind) {
    case tools::tool_reply_kind::invalid:
      record(s, t, tools::role::command);
      res.reason = end_reason::invalid;
      res.why = std::string(reply.why);
      return false;
    case tools::tool_reply_kind::stored:
      record(s, t, s.answered ? tools::role::output : tools::role::thought);
      if (s.answered) {
        res.output.push_back(t);
      }
      s.answered = s.answered || t == ids_.answer;
      break;
    default:
      record(s, t, tools::role::command);
      break;
    }
    s.to_feed.push_back(t);
    for (tools::token o : reply.observation) {
      record(s, o, tools::role::observation);
      s.to_feed.push_back(o);
    }
    if (res.tokens >= cfg_.max_tokens) {
      res.reason = end_reason::token_cap;
      res.why = "token cap";
      return false;
    }
    return true;
  }

  //! The episode of slot s ended (act returned false): reports it.
  void finish(slot const& s) const {
    if (on_done_) {
      on_done_(s.episode, results_[s.episode]);
    }
  }

  [[nodiscard]] std::vector<rollout_result> take_results() { return std::move(results_); }

private:
  void record(slot const& s, tools::token t, tools::role r) {
    auto& res = results_[s.episode];
    auto const* ex = episodes_[s.episode].expert;
    if (res.first_divergence < 0 && ex != nullptr &&
        (res.tokens >= static_cast<std::int64_t>(ex->size()) ||
         ex->tokens[static_cast<std::size_t>(res.tokens)] != t)) {
      res.first_divergence = res.tokens;
      res.diverged_to = t;
    }
    if (cfg_.keep_trace) {
      res.trace.push(t, r);
    }
    ++res.tokens;
  }

  std::span<const episode_input> episodes_;
  ToolFactory& make_tool_;
  episode_markers ids_;
  rollout_config cfg_;
  std::function<void(std::size_t, rollout_result const&)> const& on_done_;
  std::vector<rollout_result> results_;
  std::size_t next_ = 0;
};

//! Runs every episode to its end. `make_tool(i)` returns a fresh tool for episode i (satisfying tools::tool).
//! `on_done(i, result)` (optional) is called as each episode finishes.
template <class Model, class ToolFactory>
std::vector<rollout_result> rollout(backends::host const& be, Model const& model,
                                    std::span<const episode_input> episodes, ToolFactory&& make_tool,
                                    episode_markers ids, rollout_config const& cfg,
                                    std::function<void(std::size_t, rollout_result const&)> const& on_done = {}) {
  using T = typename Model::value_type;
  rollout_ledger<std::remove_reference_t<ToolFactory>> ledger(episodes, make_tool, ids, cfg, on_done);
  using slot = typename decltype(ledger)::slot;
  std::int64_t const v = model.config().vocab;

  std::vector<slot> live;
  auto state = model.make_state(cfg.batch);
  typename Model::step_workspace work;
  std::vector<T> logits(static_cast<std::size_t>(cfg.batch * v));

  auto finish = [&](std::size_t i) {
    ledger.finish(live[i]);
    std::size_t const last = live.size() - 1;
    if (i != last) {  // keep live slots dense: the last one moves into the hole
      detail::copy_state_row(state, static_cast<std::int64_t>(last), state, static_cast<std::int64_t>(i));
      live[i] = std::move(live[last]);
    }
    live.pop_back();
  };

  // Prefill waiting episodes into free slots with one packed forward; their first token comes from the last logits.
  auto admit = [&] {
    std::vector<slot> fresh;
    while (live.size() + fresh.size() < static_cast<std::size_t>(cfg.batch) && ledger.waiting()) {
      fresh.push_back(ledger.start());
    }
    if (fresh.empty()) {
      return;
    }
    // Prefill in slices of at most prefill_chunk tokens per prompt, carrying the states from slice to slice, so
    // the activations forward keeps stay bounded however long the prompts are.
    auto const n_fresh = static_cast<std::int64_t>(fresh.size());
    auto prompt = [&](std::size_t j) -> std::vector<tools::token> const& { return episodes[fresh[j].episode].prompt; };
    std::size_t longest = 0;
    for (std::size_t j = 0; j < fresh.size(); ++j) {
      longest = std::max(longest, prompt(j).size());
    }
    auto const chunk = static_cast<std::size_t>(cfg.prefill_chunk);
    auto carried = model.make_state(n_fresh), final = model.make_state(n_fresh);
    std::vector<T> first_logits(static_cast<std::size_t>(n_fresh * v));  // [B, V]: after each prompt's last token
    typename Model::cache cache;
    std::vector<T> slice_logits;
    for (std::size_t from = 0; from < longest; from += chunk) {
      std::vector<std::int64_t> lengths;
      std::vector<tools::token> packed;
      for (std::size_t j = 0; j < fresh.size(); ++j) {
        auto const& p = prompt(j);
        std::size_t const b = std::min(from, p.size()), end = std::min(from + chunk, p.size());
        lengths.push_back(static_cast<std::int64_t>(end - b));
        packed.insert(packed.end(), p.begin() + static_cast<std::ptrdiff_t>(b),
                      p.begin() + static_cast<std::ptrdiff_t>(end));
      }
      auto const seqs = sequences::from_lengths(lengths);
      slice_logits.resize(packed.size() * static_cast<std::size_t>(v));
      model.forward(be, packed, seqs, slice_logits.data(), cache, from == 0 ? nullptr : &carried, &final);
      for (std::int64_t j = 0; j < n_fresh; ++j) {
        if (prompt(static_cast<std::size_t>(j)).size() <= from + chunk && seqs.length(j) > 0) {
          std::copy_n(slice_logits.data() + (seqs.end(j) - 1) * v, v, first_logits.data() + j * v);  // prompt ends here
        }
      }
      std::swap(carried, final);
    }
    for (std::size_t j = 0; j < fresh.size(); ++j) {
      detail::copy_state_row(carried, static_cast<std::int64_t>(j), state, static_cast<std::int64_t>(live.size()));
      live.push_back(std::move(fresh[j]));
      tools::token const first = detail::argmax(first_logits.data() + static_cast<std::int64_t>(j) * v, v);
      if (!ledger.act(live.back(), first)) {
        finish(live.size() - 1);
      }
    }
  };

  std::vector<tools::token> feed;
  while (true) {
    do {  // episodes can end on their very first token: keep admitting until some are live or none wait
      admit();
    } while (live.empty() && ledger.waiting());
    if (live.empty()) {
      break;
    }
    auto const n = static_cast<std::int64_t>(live.size());
    feed.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      feed[static_cast<std::size_t>(i)] = live[static_cast<std::size_t>(i)].to_feed.front();
      live[static_cast<std::size_t>(i)].to_feed.pop_front();
    }
    model.step(be, feed, logits.data(), state, work);  // the live slots are rows [0, n) of state
    for (std::int64_t i = n; i-- > 0;) {               // backwards: finish() moves the last slot into the hole
      auto& s = live[static_cast<std::size_t>(i)];
      if (!s.to_feed.empty()) {
        continue;  // an observation token is next: nothing to predict here
      }
      if (!ledger.act(s, detail::argmax(logits.data() + i * v, v))) {
        finish(static_cast<std::size_t>(i));
      }
    }
  }
  return ledger.take_results();
}

}  // namespace ssmlen::agent
