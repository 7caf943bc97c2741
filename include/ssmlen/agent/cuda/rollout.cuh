// SPDX-License-Identifier: Apache-2.0
//! @file rollout.cuh
//! Batched greedy rollouts with the model on a CUDA device and the tools on the host: the inputs, results and rules
//! of agent::rollout (agent/rollout.hpp, whose rollout_ledger keeps the books here too), with every model step a
//! replay of one captured CUDA graph (agent/cuda/step_graph.cuh) over a fixed set of `batch` slots. Per step only
//! token ids cross the bus: B int32 to the device, B int32 back (written by the step's last kernel).
//!
//! Prompts go through the step graph, one token per step, rather than a parallel forward: a step costs about the
//! same whether one row or all of them do useful work, so a prompt rides along with the other slots' decoding at no
//! extra launches, while a forward per admission would stall every live slot for a whole un-captured launch
//! sequence each time one episode ends. A slot taking a new episode is fed models::cuda::fresh_token(first prompt
//! token), which zeroes its state inside the graph. A slot without an episode keeps being fed a fresh token, so its
//! state stays zero; its row's prediction is ignored.
#pragma once

#include <ssmlen/agent/cuda/step_graph.cuh>
#include <ssmlen/agent/episode.hpp>
#include <ssmlen/agent/rollout.hpp>
#include <ssmlen/models/cuda/mamba_lm.cuh>
#include <ssmlen/tools/protocol.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

namespace ssmlen::agent::cuda {

//! Runs every episode to its end with a device model (models::cuda::mamba_lm). `make_tool(i)` returns a fresh tool
//! for episode i (satisfying tools::tool); `on_done(i, result)` (optional) is called as each episode finishes.
//! cfg.prefill_chunk is not used: prompts are fed through the step (see the file comment).
template <class Model, class ToolFactory>
std::vector<rollout_result> rollout(Model const& model, std::span<const episode_input> episodes,
                                    ToolFactory&& make_tool, episode_markers ids, rollout_config const& cfg,
                                    std::function<void(std::size_t, rollout_result const&)> const& on_done = {}) {
  rollout_ledger<std::remove_reference_t<ToolFactory>> ledger(episodes, make_tool, ids, cfg, on_done);
  using slot = typename decltype(ledger)::slot;
  if (episodes.empty()) {
    return ledger.take_results();
  }
  std::int64_t const batch = std::min<std::int64_t>(cfg.batch, static_cast<std::int64_t>(episodes.size()));
  step_graph<Model> graph(model, batch);
  auto const tokens = graph.tokens();
  std::vector<std::optional<slot>> slots(static_cast<std::size_t>(batch));
  std::vector<bool> fresh(slots.size(), false);  // the slot's next token starts its episode
  std::size_t live = 0;

  auto admit = [&](std::size_t i) {
    if (!ledger.waiting()) {
      return;
    }
    slots[i].emplace(ledger.start());
    auto const& prompt = episodes[slots[i]->episode].prompt;
    slots[i]->to_feed.assign(prompt.begin(), prompt.end());
    fresh[i] = true;
    ++live;
  };
  for (std::size_t i = 0; i < slots.size(); ++i) {
    admit(i);
  }
  while (live > 0) {
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (!slots[i]) {
        tokens[i] = models::cuda::fresh_token(0);  // idle: kept at the zero state
        continue;
      }
      tools::token const t = slots[i]->to_feed.front();
      slots[i]->to_feed.pop_front();
      tokens[i] = fresh[i] ? models::cuda::fresh_token(t) : t;
      fresh[i] = false;
    }
    auto const next = graph.run();
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (!slots[i] || !slots[i]->to_feed.empty()) {
        continue;  // no episode, or a prompt or observation token is next: nothing to predict here
      }
      if (!ledger.act(*slots[i], next[i])) {
        ledger.finish(*slots[i]);
        slots[i].reset();
        --live;
        admit(i);
      }
    }
  }
  return ledger.take_results();
}

}  // namespace ssmlen::agent::cuda
