// SPDX-License-Identifier: Apache-2.0
//! @file length_sweep.hpp
//! Length-generalization sweeps: for each problem size, greedy rollouts in which
//! the model drives the task's tool (exact match of the output stream, the
//! paper's metric), token accuracy under teacher forcing on expert traces, mean
//! episode length, and for failures where the rollout first left the expert
//! trace (position, role, expected and produced token, preceding context).
#pragma once

#include <ssmlen/agent/rollout.hpp>
#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/any_task.hpp>
#include <ssmlen/train/batch.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::eval {

struct sweep_config {
  std::vector<int> sizes{5, 10, 20, 50, 100, 200, 500, 1000};
  int per_size = 64;              // episodes per size
  std::uint64_t seed = 1234;      // instances for size n come from rng(seed).fork(n)
  int teacher_forced = 8;         // expert traces per size scored under teacher forcing
  std::int64_t batch = 64;        // episodes stepped together
  double token_cap_factor = 2.0;  // an episode may run to factor x its expert length (+ 64) tokens
  int failures_kept = 4;          // failures described per size
  int train_n = 0;                // largest training size, for the "n->m (p%)" summary (0: unknown)

  void validate() const {
    check(!sizes.empty(), "length sweep: give at least one size");
    for (int n : sizes) {
      check_arg(n > 0, "size", n, "must be positive");
    }
    check_arg(per_size > 0, "per_size", per_size, "must be positive");
    check_arg(teacher_forced >= 0, "teacher_forced", teacher_forced, "must be non-negative");
    check_arg(token_cap_factor >= 1, "token_cap_factor", token_cap_factor, "must be at least 1");
  }
};

struct failure {
  int episode = 0;
  std::string end;                 // eos / invalid / token_cap
  std::string why;                 // the tool's reason for an invalid action
  std::int64_t divergence = -1;    // first position that differs from the expert trace
  double divergence_fraction = 0;  // ... as a fraction of the expert trace
  std::string expected_role, expected, produced;
  std::vector<std::string> context;  // expert tokens just before the divergence
};

struct size_result {
  int n = 0;
  int episodes = 0;
  int correct = 0;
  double exact_match = 0;
  // Teacher forcing, over model tokens of `teacher_forced` expert traces; empty when none were scored (it is not 0 %).
  std::optional<double> token_accuracy;
  double mean_tokens = 0;           // rollout episode length, prompt included
  std::int64_t longest_tokens = 0;  // the longest episode: a size's rollouts last as long as it does
  double mean_expert_tokens = 0;
  std::map<std::string, int> ends;  // end reason -> count
  std::vector<failure> failures;
  double seconds = 0;
  double tokens_per_second = 0;  // rollout tokens (model, observation and prompt) per second
};

struct sweep_result {
  std::string task;
  int train_n = 0;
  std::vector<size_result> results;

  //! The paper's summary: trained on n, accuracy p at the largest size m with p >= 5%.
  [[nodiscard]] std::string summary() const {
    int m = 0;
    double p = 0;
    for (auto const& r : results) {
      if (r.exact_match >= 0.05 && r.n >= m) {
        m = r.n;
        p = r.exact_match;
      }
    }
    // Whole percentages print bare; others are cut (not rounded) to one decimal, so 255 / 256 reads 99.6 %, never 100.
    double const percent = 100 * p;
    bool const whole = percent == std::floor(percent);
    char buf[96];
    std::snprintf(buf, sizeof buf, whole ? "%s->%d (%.0f%%)" : "%s->%d (%.1f%%)",
                  train_n > 0 ? std::to_string(train_n).c_str() : "?", m,
                  whole ? percent : std::floor(percent * 10) / 10);
    return buf;
  }

  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json rs = nlohmann::json::array();
    for (auto const& r : results) {
      nlohmann::json fs = nlohmann::json::array();
      for (auto const& f : r.failures) {
        fs.push_back({{"episode", f.episode},
                      {"end", f.end},
                      {"why", f.why},
                      {"divergence", f.divergence},
                      {"divergence_fraction", f.divergence_fraction},
                      {"expected_role", f.expected_role},
                      {"expected", f.expected},
                      {"produced", f.produced},
                      {"context", f.context}});
      }
      rs.push_back({{"n", r.n},
                    {"episodes", r.episodes},
                    {"exact_match", r.exact_match},
                    {"token_accuracy", r.token_accuracy ? nlohmann::json(*r.token_accuracy) : nlohmann::json()},
                    {"mean_tokens", r.mean_tokens},
                    {"longest_tokens", r.longest_tokens},
                    {"mean_expert_tokens", r.mean_expert_tokens},
                    {"seconds", r.seconds},
                    {"tokens_per_second", r.tokens_per_second},
                    {"failures", {{"count", r.episodes - r.correct}, {"ends", r.ends}, {"examples", fs}}}});
    }
    return {{"task", task}, {"train_n", train_n}, {"summary", summary()}, {"results", rs}};
  }

  [[nodiscard]] std::string to_csv() const {
    std::string out = "n,episodes,exact_match,token_accuracy,mean_tokens,mean_expert_tokens,seconds,longest_tokens\n";
    for (auto const& r : results) {
      char line[256], accuracy[32] = "";  // an empty field when teacher forcing was skipped
      if (r.token_accuracy) {
        std::snprintf(accuracy, sizeof accuracy, "%.6f", *r.token_accuracy);
      }
      std::snprintf(line, sizeof line, "%d,%d,%.6f,%s,%.1f,%.1f,%.3f,%lld\n", r.n, r.episodes, r.exact_match, accuracy,
                    r.mean_tokens, r.mean_expert_tokens, r.seconds, static_cast<long long>(r.longest_tokens));
      out += line;
    }
    return out;
  }
};

//! Fraction of model tokens (command | thought | output) whose greedy prediction from the expert prefix is right.
template <class Model>
double teacher_forced_accuracy(backends::host const& be, Model const& model,
                               std::vector<tools::trace const*> const& traces, std::int64_t slice = 1 << 15) {
  if (traces.empty()) {
    return 0;
  }
  std::int64_t const v = model.config().vocab;
  // Score in slices of at most `slice` tokens: forward keeps every activation (about 7 KB per token for the headline
  // model), so a slice stays under a few hundred MB. A trace longer than a slice is scored slice by slice, each
  // starting from the state the previous one ended in, so memory does not grow with the trace.
  check_arg(slice > 0, "slice", slice, "must be positive");
  std::int64_t right = 0, total = 0;
  std::vector<typename Model::value_type> logits;
  typename Model::cache cache;
  auto carried = model.make_state(1), next = model.make_state(1);
  for (auto const* t : traces) {
    train::batch b;  // inputs, targets (the next token) and the loss mask of one trace
    b.add(t->tokens, t->loss_mask());
    b.finish();
    std::int64_t const len = b.seqs.tokens();
    for (std::int64_t r0 = 0; r0 < len; r0 += slice) {
      std::int64_t const rows = std::min(slice, len - r0);
      logits.resize(static_cast<std::size_t>(rows * v));
      model.forward(be, std::span<const std::int32_t>(b.inputs.data() + r0, static_cast<std::size_t>(rows)),
                    sequences::from_lengths(std::vector<std::int64_t>{rows}), logits.data(), cache,
                    r0 == 0 ? nullptr : &carried, &next);  // [rows, V]
      std::swap(carried, next);
      for (std::int64_t r = 0; r < rows; ++r) {
        if (b.mask[static_cast<std::size_t>(r0 + r)] != 0) {
          ++total;
          right += agent::detail::argmax(logits.data() + r * v, v) == b.targets[static_cast<std::size_t>(r0 + r)];
        }
      }
    }
  }
  return total > 0 ? static_cast<double>(right) / static_cast<double>(total) : 0;
}

//! Rolls out one size's episodes with the task's tools and markers: a sweep runs agent::rollout with its host model
//! unless given a runner (agent::cuda::rollout on a device copy of the model: examples/04_train_cuda.cu).
using episode_runner = std::function<std::vector<agent::rollout_result>(
    std::span<const agent::episode_input>, tasks::any_task const&, agent::rollout_config const&)>;

//! Runs the sweep; `on_size` (optional) sees each size's result as soon as it is done. Teacher forcing always runs
//! `model` on the host; rollouts run through `runner` when one is given.
template <class Model>
sweep_result length_sweep(backends::host const& be, Model const& model, tasks::any_task const& task,
                          sweep_config const& cfg, std::function<void(size_result const&)> const& on_size = {},
                          episode_runner const& runner = {}) {
  cfg.validate();
  check_arg(model.config().vocab == task.vocab().size(), "model vocab", model.config().vocab,
            "must equal the vocabulary size " + std::to_string(task.vocab().size()) + " of task '" + task.name() + "'");
  sweep_result out{task.name(), cfg.train_n, {}};
  auto const& voc = task.vocab();
  for (int n : cfg.sizes) {
    auto const t0 = std::chrono::steady_clock::now();
    rng g = rng(cfg.seed).fork(static_cast<std::uint64_t>(n));
    std::vector<tasks::episode_spec> specs;
    std::vector<agent::episode_input> inputs;
    specs.reserve(static_cast<std::size_t>(cfg.per_size));
    std::int64_t longest = 0;
    for (int i = 0; i < cfg.per_size; ++i) {
      specs.push_back(task.sample_exact(g, n));
      longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(specs.back().expert.size()));
    }
    for (auto const& s : specs) {
      inputs.push_back({s.prompt, &s.expert});
    }
    agent::rollout_config rc;
    rc.batch = cfg.batch;
    rc.max_tokens = static_cast<std::int64_t>(cfg.token_cap_factor * static_cast<double>(longest)) + 64;
    std::span<const agent::episode_input> const episodes(inputs);
    auto const results =
        runner ? runner(episodes, task, rc)
               : agent::rollout(
                     be, model, episodes, [&](std::size_t) { return task.make_tool(); }, task.markers(), rc);
    size_result r;
    r.n = n;
    r.episodes = cfg.per_size;
    double tokens = 0, expert_tokens = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
      auto const& res = results[i];
      auto const& ex = specs[i].expert;
      bool const ok = res.reason == agent::end_reason::eos && specs[i].check(res.output);
      tokens += static_cast<double>(res.tokens);
      r.longest_tokens = std::max(r.longest_tokens, res.tokens);
      expert_tokens += static_cast<double>(ex.size());
      ++r.ends[agent::end_reason_name(res.reason)];
      if (ok) {
        ++r.correct;
        continue;
      }
      if (static_cast<int>(r.failures.size()) >= cfg.failures_kept) {
        continue;
      }
      failure f;
      f.episode = static_cast<int>(i);
      f.end = agent::end_reason_name(res.reason);
      f.why = res.why;
      f.divergence = res.first_divergence;
      if (res.first_divergence >= 0) {
        auto const d = static_cast<std::size_t>(res.first_divergence);
        f.divergence_fraction = static_cast<double>(d) / static_cast<double>(ex.size());
        if (d < ex.size()) {
          f.expected_role = tools::role_name(ex.roles[d]);
          f.expected = voc.name(ex.tokens[d]);
        } else {
          f.expected_role = "end";
          f.expected = "(end of the expert trace)";
        }
        f.produced = voc.valid(res.diverged_to) ? voc.name(res.diverged_to) : "?";
        for (std::size_t c = d > 8 ? d - 8 : 0; c < d && c < ex.size(); ++c) {
          f.context.push_back(voc.name(ex.tokens[c]));
        }
      }
      r.failures.push_back(std::move(f));
    }
    r.exact_match = static_cast<double>(r.correct) / static_cast<double>(r.episodes);
    r.mean_tokens = tokens / r.episodes;
    r.mean_expert_tokens = expert_tokens / r.episodes;
    double const rollout_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.tokens_per_second = tokens / std::max(rollout_seconds, 1e-9);
    std::vector<tools::trace const*> forced;
    for (int i = 0; i < std::min(cfg.teacher_forced, cfg.per_size); ++i) {
      forced.push_back(&specs[static_cast<std::size_t>(i)].expert);
    }
    if (!forced.empty()) {
      r.token_accuracy = teacher_forced_accuracy(be, model, forced);
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (on_size) {
      on_size(r);
    }
    out.results.push_back(std::move(r));
  }
  return out;
}

}  // namespace ssmlen::eval
