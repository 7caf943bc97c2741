// Helpers shared by the task tests: run a policy on an instance with the task's own tool, check that it solves the
// instance as the expert does, replay an expert trace,
// render a trace in the protocol's notation, extract a trace's output stream, and draw fuzzing tokens.
#pragma once

#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tools/protocol.hpp>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace ssmlen::testing {

//! One episode of policy `p` on instance `x`, with a fresh tool of the task.
template <agent::policy P, class Task>
agent::episode_result run(P& p, Task const& task, typename Task::instance const& x, std::int64_t cap) {
  auto tool = task.make_tool();
  return agent::run_episode(p, tool, task.prompt(x), agent::episode_markers::from(task.vocab()), cap);
}

//! Whether policy `p` solves instance `x` exactly as the expert does: the episode ends (within `cap_factor` times the
//! expert trace's length), its output checks, and its whole trace is the expert's.
template <agent::policy P, class Task>
bool solves(P& p, Task const& task, typename Task::instance const& x, std::int64_t cap_factor = 2) {
  auto const expert = task.expert(x);
  auto const r = run(p, task, x, cap_factor * static_cast<std::int64_t>(expert.size()));
  return r.finished() && task.check(x, r.output) && r.trace == expert;
}

//! Replays the expert's model tokens through a fresh tool: the rollout must reproduce the expert trace exactly.
template <class Task>
agent::episode_result replay(Task const& task, typename Task::instance const& x, tools::trace const& expert) {
  agent::replay_policy p(expert);
  return run(p, task, x, static_cast<std::int64_t>(expert.size()) + 10);
}

//! The trace from position `from` as text, observations in parentheses (the notation of the worked examples).
template <class Task>
std::string render(Task const& task, tools::trace const& t, std::size_t from) {
  std::ostringstream s;
  for (std::size_t i = from; i < t.size(); ++i) {
    auto const& name = task.vocab().name(t.tokens[i]);
    s << (i > from ? " " : "") << (t.roles[i] == tools::role::observation ? "(" + name + ")" : name);
  }
  return s.str();
}

//! The output stream of a complete trace: its output tokens before the closing <EOS>.
inline std::vector<tools::token> output_of(tools::trace const& t) {
  std::vector<tools::token> out;
  for (std::size_t i = 0; i + 1 < t.size(); ++i) {
    if (t.roles[i] == tools::role::output) {
      out.push_back(t.tokens[i]);
    }
  }
  return out;
}

//! A token for fuzzing a tool: almost always a vocabulary id other than <PAD> (0), now and then (1 in 500) one in
//! [-1, vocab] that may lie outside the vocabulary.
inline tools::token fuzz_token(rng& g, std::int64_t vocab) {
  return g.uniform() < 0.002f ? static_cast<tools::token>(g.uniform_int(-1, vocab))
                              : static_cast<tools::token>(g.uniform_int(1, vocab - 1));
}

}  // namespace ssmlen::testing
