// SPDX-License-Identifier: Apache-2.0
// Task presets: one per registered task, each a valid run whose validation size is outside its reported sweep
// and whose sweep goes past the training sizes.
#include <ssmlen/tasks/registry.hpp>
#include <ssmlen/train/presets.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

using namespace ssmlen;

TEST_CASE("presets: every task has a valid CPU preset with an honest validation size") {
  for (auto const& name : tasks::task_names()) {
    CAPTURE(name);
    auto const p = train::preset_for(name);
    CHECK(p.run.task == name);
    CHECK_NOTHROW(p.run.validate());
    CHECK(p.run.out == "runs/" + name);
    REQUIRE_FALSE(p.sweep_sizes.empty());
    CHECK(p.sweep_episodes > 0);
    CHECK(std::is_sorted(p.sweep_sizes.begin(), p.sweep_sizes.end()));
    // Early stopping must not see a size the sweep reports.
    CHECK(std::find(p.sweep_sizes.begin(), p.sweep_sizes.end(), p.run.val_n) == p.sweep_sizes.end());
    CHECK(p.sweep_sizes.back() > p.run.max_n);  // the sweep measures generalization, not only the training range
    CHECK(p.run.val_n > p.run.max_n);
  }
  // The addition preset is the headline: the run_config defaults.
  CHECK(train::preset_for("addition").run.to_json() == [] {
    train::run_config c;
    c.out = "runs/addition";
    return c.to_json();
  }());
  CHECK_THROWS_WITH_AS((void)train::preset_for("additon"), doctest::Contains("addition"), ssmlen::error);
}

TEST_CASE("presets: the example run configurations apply over their task's preset") {
  // examples/configs/<task>_*.json hold the GPU runs of docs/results.md (04_train_cuda --task T --config F).
  auto const dir = std::filesystem::path(SSMLEN_TEST_DATA_DIR) / ".." / ".." / "examples" / "configs";
  int seen = 0;
  for (auto const& entry : std::filesystem::directory_iterator(dir)) {
    auto const file = entry.path().filename().string();
    CAPTURE(file);
    std::string task;  // the longest task name the file name starts with
    for (auto const& name : tasks::task_names()) {
      if (file.starts_with(name + "_") && name.size() > task.size()) {
        task = name;
      }
    }
    REQUIRE_FALSE(task.empty());
    auto p = train::preset_for(task);
    std::ifstream in(entry.path());
    p.run.update_from_json(nlohmann::json::parse(in));
    CHECK_NOTHROW(p.run.validate());
    CHECK(p.run.val_n > p.run.max_n);
    ++seen;
  }
  CHECK(seen >= 4);
}

TEST_CASE("run config: every key round-trips through JSON; unknown keys, wrong types and bad values are refused") {
  train::run_config c;
  c.lr = 3e-4;
  c.adam_eps = 1e-6;
  c.eval_every = 250;
  c.out = "runs/elsewhere";
  train::run_config d;
  d.update_from_json(c.to_json());
  CHECK(d.to_json() == c.to_json());
  CHECK(d.optimizer().lr == 3e-4);
  CHECK(d.schedule().peak == 3e-4);
  CHECK(d.optimizer().eps == 1e-6);  // the optimizer the CPU and CUDA trainers are built with
  CHECK(train::run_config{}.optimizer().eps == 1e-8);

  CHECK_THROWS_WITH_AS(d.update_from_json({{"adam_epsilon", 1e-6}}),
                       doctest::Contains("unknown run config key 'adam_epsilon'"), ssmlen::error);
  CHECK_THROWS_WITH_AS(d.update_from_json({{"adam_eps", "small"}}), doctest::Contains("config key 'adam_eps'"),
                       ssmlen::error);
  CHECK_THROWS_WITH_AS(d.update_from_json({{"steps", 2.5}}), doctest::Contains("must be an integer"), ssmlen::error);
  CHECK(d.to_json() == c.to_json());  // a refused key changes nothing
  d.update_from_json({{"adam_eps", 0.0}});
  CHECK_THROWS_WITH_AS(d.validate(), doctest::Contains("eps"), ssmlen::error);
}
