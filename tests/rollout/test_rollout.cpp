// The batched rollout (prefill, continuous batching, observations, end reasons)
// against a plain one-episode-at-a-time loop that feeds every token through step().
#include <ssmlen/agent/rollout.hpp>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/models/recurrent_lm.hpp>
#include <ssmlen/models/transformer_lm.hpp>

#include <doctest/doctest.h>

#include <type_traits>

using namespace ssmlen;
using tools::token;

namespace {
backends::host const be;
constexpr token eos = 1, ans = 2, cmd_observe = 3, cmd_invalid = 4, cmd_nop = 5;

//! A toy tool: token 3 observes the two most recent stored tokens (or 6 6), 4 is invalid, 5 is accepted,
//! anything else is stored.
struct toy_tool {
  std::vector<token> memory;
  std::vector<token> obs;
  void reset(std::span<const token> prompt) { memory.assign(prompt.begin(), prompt.end()); }
  tools::tool_reply feed(token t) {
    if (t == cmd_invalid) {
      return {tools::tool_reply_kind::invalid, {}, "token 4 is not allowed"};
    }
    if (t == cmd_nop) {
      return {tools::tool_reply_kind::accepted, {}, {}};
    }
    if (t == cmd_observe) {
      obs = {memory.size() >= 2 ? memory[memory.size() - 2] : token{6}, memory.empty() ? token{6} : memory.back()};
      return {tools::tool_reply_kind::observe, obs, {}};
    }
    memory.push_back(t);
    return {tools::tool_reply_kind::stored, {}, {}};
  }
};
static_assert(tools::tool<toy_tool>);

//! Reference: one episode, every token through step(), same rules.
template <class M>
agent::rollout_result reference(M const& m, std::vector<token> const& prompt, std::int64_t cap) {
  agent::rollout_result r;
  toy_tool tool;
  tool.reset(prompt);
  auto st = m.make_state(1);
  typename M::step_workspace w;
  std::vector<double> logits(m.config().vocab);
  std::vector<token> queue(prompt);
  r.tokens = static_cast<std::int64_t>(prompt.size());
  bool answered = false;
  while (true) {
    for (token t : queue) {
      std::vector<token> one{t};
      m.step(be, one, logits.data(), st, w);
    }
    queue.clear();
    token const t = agent::detail::argmax(logits.data(), m.config().vocab);
    ++r.tokens;
    if (t == eos) {
      r.reason = agent::end_reason::eos;
      return r;
    }
    auto const reply = tool.feed(t);
    if (reply.kind == tools::tool_reply_kind::invalid) {
      r.reason = agent::end_reason::invalid;
      r.why = reply.why;
      return r;
    }
    if (reply.kind == tools::tool_reply_kind::stored && answered) {
      r.output.push_back(t);
    }
    answered = answered || t == ans;
    queue.push_back(t);
    queue.insert(queue.end(), reply.observation.begin(), reply.observation.end());
    r.tokens += static_cast<std::int64_t>(reply.observation.size());
    if (r.tokens >= cap) {
      r.reason = agent::end_reason::token_cap;
      r.why = "token cap";
      return r;
    }
  }
}
}  // namespace

namespace {
//! The models every rollout runs: a Mamba and the baselines (its window shorter than the longest episodes), each
//! small, with 9 tokens.
template <class M>
M small_model(std::uint64_t seed) {
  if constexpr (std::is_same_v<M, models::mamba_lm<double, scan::chunked<4>>>) {
    models::mamba_config c;
    c.vocab = 9;
    c.d_model = 16;
    c.n_layers = 2;
    c.d_state = 4;
    return M(c, seed);
  } else if constexpr (std::is_same_v<M, models::transformer_lm<double>>) {
    return M({.vocab = 9, .d_model = 16, .n_layers = 2, .heads = 2, .d_ff = 24, .window = 8}, seed);
  } else {
    return M({.vocab = 9, .hidden = 16, .n_layers = 2}, seed);
  }
}
}  // namespace

TEST_CASE_TEMPLATE("rollout: batched greedy decoding equals a one-episode step loop, whatever the batch size", M,
                   models::mamba_lm<double, scan::chunked<4>>, models::lstm_lm<double>, models::gru_lm<double>,
                   models::transformer_lm<double>) {
  std::int64_t const cap = 60;
  std::vector<agent::episode_input> inputs;
  rng g(3);
  for (int e = 0; e < 40; ++e) {
    std::vector<token> p;
    for (auto n = g.uniform_int(1, 7); n > 0; --n) {
      p.push_back(static_cast<token>(g.uniform_int(6, 8)));
    }
    inputs.push_back({p, nullptr});
  }
  int reasons[3] = {0, 0, 0};
  for (std::uint64_t seed : {1, 2, 3, 4, 5, 6}) {
    M m = small_model<M>(seed);
    for (auto& p : m.named_params()) {  // sharper logits: more varied behaviour than the small init gives
      for (auto& x : p.p->value) {
        x *= 1.0 + 0.5 * static_cast<double>(seed % 3);
      }
    }
    for (std::int64_t batch : {1, 7, 64}) {
      agent::rollout_config cfg;
      cfg.batch = batch;
      cfg.prefill_chunk = batch == 7 ? 3 : 512;  // prompts of 1..7 tokens: prefilled in one slice or in several
      cfg.max_tokens = cap;
      auto const got = agent::rollout(
          be, m, std::span<const agent::episode_input>(inputs), [](std::size_t) { return toy_tool{}; },
          agent::episode_markers{eos, ans}, cfg);
      for (std::size_t e = 0; e < inputs.size(); ++e) {
        auto const want = reference(m, inputs[e].prompt, cap);
        CAPTURE(seed);
        CAPTURE(batch);
        CAPTURE(e);
        CHECK(got[e].reason == want.reason);
        CHECK(got[e].tokens == want.tokens);
        CHECK(got[e].output == want.output);
        CHECK(got[e].why == want.why);
        ++reasons[static_cast<int>(want.reason)];
      }
    }
  }
  MESSAGE("end reasons seen: eos ", reasons[0], ", invalid ", reasons[1], ", token cap ", reasons[2]);
}

TEST_CASE("rollout: traces carry roles and the first divergence from an expert trace") {
  models::mamba_config c;
  c.vocab = 9;
  c.d_model = 8;
  c.n_layers = 1;
  c.d_state = 4;
  models::mamba_lm<double> m(c, 11);
  agent::rollout_config cfg;
  cfg.keep_trace = true;
  cfg.max_tokens = 30;
  tools::trace expert;
  for (token t : {7, 8, 7}) {
    expert.push(t, tools::role::input);
  }
  std::vector<agent::episode_input> inputs{{{7, 8, 7}, &expert}};
  auto const r = agent::rollout(
      be, m, std::span<const agent::episode_input>(inputs), [](std::size_t) { return toy_tool{}; },
      agent::episode_markers{eos, ans}, cfg);
  REQUIRE(r[0].trace.size() == static_cast<std::size_t>(r[0].tokens));
  CHECK(r[0].trace.roles[0] == tools::role::input);
  CHECK(r[0].trace.roles[3] != tools::role::input);
  CHECK(r[0].first_divergence == 3);  // the expert trace ends after the prompt
}
