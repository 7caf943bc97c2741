// SPDX-License-Identifier: Apache-2.0
//! @file test_rollout.cu
//! The GPU rollout (agent/cuda/rollout.cuh) against the host rollout (agent/rollout.hpp) on the trained headline
//! model (tests/fixtures/addition_headline_seed3.safetensors: addition, 4 layers × d_model 64), which adds long
//! numbers exactly: on the same episodes both give the same output streams, end reasons, token counts, traces with
//! roles and divergence points, and every addition is exact. Slots are refilled (more episodes than the batch), a
//! batch larger than the episode count is trimmed, and a small token cap makes episodes end at the cap on both.
//! The fixture is found under SSMLEN_TEST_DATA_DIR (environment, then the CMake definition), else under
//! tests/fixtures relative to the working directory (the repository root, as tests/cuda/run_on_gpu.sh runs it).
//! Built alone (nvcc this file) it is its own doctest program; in the CMake build the shared test main links in.
//! Without a GPU every case that needs one prints a skip message and passes.
#ifndef SSMLEN_TEST_DATA_DIR
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#endif
#include <ssmlen/agent/cuda/rollout.cuh>
#include <ssmlen/agent/rollout.hpp>
#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/checkpoint.hpp>
#include <ssmlen/models/cuda/mamba_lm.cuh>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/any_task.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <span>
#include <vector>

#include "../support/cuda_testing.hpp"

namespace {

using ssmlen::testing::gpu_or_skip;
namespace agent = ssmlen::agent;
namespace mc = ssmlen::models::cuda;

std::filesystem::path fixture(char const* name) {
  if (char const* dir = std::getenv("SSMLEN_TEST_DATA_DIR")) {
    return std::filesystem::path(dir) / name;
  }
#ifdef SSMLEN_TEST_DATA_DIR
  return std::filesystem::path(SSMLEN_TEST_DATA_DIR) / name;
#else
  return std::filesystem::path("tests/fixtures") / name;
#endif
}

ssmlen::tasks::any_task const& addition_task() {
  static ssmlen::tasks::any_task const task(ssmlen::tasks::addition{});
  return task;
}

ssmlen::models::mamba_lm<float> const& headline_model() {
  static auto const model = ssmlen::models::load_model<float>(fixture("addition_headline_seed3.safetensors"));
  return model;
}

struct episode_set {
  std::vector<ssmlen::tasks::episode_spec> specs;
  std::vector<agent::episode_input> inputs;
  std::int64_t longest = 0;  // expert trace length
};

//! `per_size` additions of exactly n digits for every n, interleaved so that short and long episodes share batches.
episode_set additions(std::vector<int> const& sizes, int per_size, std::uint64_t seed) {
  episode_set e;
  ssmlen::rng g(seed);
  for (int i = 0; i < per_size; ++i) {
    for (int n : sizes) {
      e.specs.push_back(addition_task().sample_exact(g, n));
      e.longest = std::max<std::int64_t>(e.longest, static_cast<std::int64_t>(e.specs.back().expert.size()));
    }
  }
  for (auto const& s : e.specs) {
    e.inputs.push_back({s.prompt, &s.expert});
  }
  return e;
}

//! Runs both rollouts on the same episodes; checks they agree on everything; returns how many were exact.
int compare_rollouts(episode_set const& e, agent::rollout_config const& rc, char const* label) {
  auto const& host = headline_model();
  auto& task = addition_task();
  REQUIRE(host.config().vocab == task.vocab().size());
  ssmlen::models::mamba_lm<float> copy = host;  // the device model uploads from a mutable host model
  mc::mamba_lm<> dev(copy);
  auto const make_tool = [&](std::size_t) { return task.make_tool(); };
  std::span<agent::episode_input const> const inputs(e.inputs);

  auto const t0 = std::chrono::steady_clock::now();
  auto const want = agent::rollout(ssmlen::backends::host{}, host, inputs, make_tool, task.markers(), rc);
  auto const t1 = std::chrono::steady_clock::now();
  std::vector<int> reported(e.inputs.size(), 0);
  auto const got = agent::cuda::rollout(dev, inputs, make_tool, task.markers(), rc,
                                        [&](std::size_t i, agent::rollout_result const& r) {
                                          ++reported[i];
                                          CHECK(r.tokens > 0);
                                        });
  auto const t2 = std::chrono::steady_clock::now();
  REQUIRE(got.size() == want.size());
  int exact = 0, capped = 0;
  std::int64_t tokens = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(label);
    CAPTURE(i);
    CHECK(reported[i] == 1);
    CHECK(got[i].reason == want[i].reason);
    CHECK(got[i].why == want[i].why);
    CHECK(got[i].tokens == want[i].tokens);
    CHECK(got[i].output == want[i].output);
    CHECK(got[i].first_divergence == want[i].first_divergence);
    CHECK(got[i].diverged_to == want[i].diverged_to);
    CHECK(got[i].trace.tokens == want[i].trace.tokens);
    CHECK(got[i].trace.roles == want[i].trace.roles);
    exact += got[i].reason == agent::end_reason::eos && e.specs[i].check(got[i].output);
    capped += got[i].reason == agent::end_reason::token_cap;
    tokens += got[i].tokens;
  }
  std::printf("rollout %-10s %zu episodes, batch %lld, %lld tokens: exact %d, capped %d; host %.2f s, gpu %.2f s\n",
              label, got.size(), static_cast<long long>(rc.batch), static_cast<long long>(tokens), exact, capped,
              std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count());
  return exact;
}

TEST_CASE("cuda rollout: the trained headline model adds as on the host, slots refilled (24 episodes, batch 8)") {
  if (!gpu_or_skip()) {
    return;
  }
  auto const e = additions({5, 10, 20, 50, 100, 200}, 4, 3);
  agent::rollout_config rc;
  rc.batch = 8;
  rc.keep_trace = true;
  rc.max_tokens = 2 * e.longest + 64;
  CHECK(compare_rollouts(e, rc, "headline") == static_cast<int>(e.specs.size()));
}

TEST_CASE("cuda rollout: token cap and a batch larger than the episode count end as on the host") {
  if (!gpu_or_skip()) {
    return;
  }
  auto const e = additions({5, 30, 60}, 3, 4);
  agent::rollout_config rc;
  rc.batch = 64;  // trimmed to the 9 episodes
  rc.keep_trace = true;
  rc.max_tokens = 600;  // about 28 tokens a digit: the 30- and 60-digit additions stop at the cap
  int const exact = compare_rollouts(e, rc, "cap");
  CHECK(exact >= 3);  // the 5-digit ones
  CHECK(exact < static_cast<int>(e.specs.size()));
}

TEST_CASE("cuda rollout: small additions (checkers' case)") {
  if (!gpu_or_skip()) {
    return;
  }
  auto const e = additions({2, 5, 3}, 2, 5);
  agent::rollout_config rc;
  rc.batch = 4;
  rc.keep_trace = true;
  rc.max_tokens = 2 * e.longest + 64;
  CHECK(compare_rollouts(e, rc, "small") == static_cast<int>(e.specs.size()));
}

}  // namespace
