// SPDX-License-Identifier: Apache-2.0
// Models trained on the GPU (examples/04_train_cuda, docs/results.md) solve sizes past their training range when
// rolled out on the CPU: the logic graph model (trained on <= 10 nodes) and the recursive Hanoi model (<= 7 disks).
#include <ssmlen/eval/length_sweep.hpp>
#include <ssmlen/models/checkpoint.hpp>
#include <ssmlen/tasks/registry.hpp>

#include <doctest/doctest.h>

#include <filesystem>
#include <string>

using namespace ssmlen;

namespace {

eval::sweep_result sweep_fixture(std::string const& file, std::string const& task_name, std::vector<int> sizes,
                                 int per_size) {
  auto const model = models::load_model(std::filesystem::path(SSMLEN_TEST_DATA_DIR) / file);
  auto const task = tasks::make_task(task_name);
  eval::sweep_config cfg;
  cfg.sizes = std::move(sizes);
  cfg.per_size = per_size;
  cfg.teacher_forced = 1;
  cfg.seed = 99;  // not the reported sweep's instances
  return eval::length_sweep(backends::host{}, model, task, cfg);
}

}  // namespace

TEST_CASE("trained models: the logic graph model solves graphs of 20 and 50 nodes, trained on <= 10") {
  auto const r = sweep_fixture("logic_graph_gpu_seed1.safetensors", "logic_graph", {20, 50}, 3);
  for (auto const& s : r.results) {
    CAPTURE(s.n);
    CHECK(s.correct == s.episodes);
    CHECK(s.token_accuracy == 1.0);
  }
}

TEST_CASE("trained models: the recursive Hanoi model moves 8 disks, trained on <= 7") {
  auto const r = sweep_fixture("hanoi_recursive_gpu_seed1.safetensors", "hanoi_recursive", {8}, 2);
  CHECK(r.results.at(0).correct == 2);
  CHECK(r.results.at(0).mean_tokens > 10000);  // an 11,600-token episode: far past any training trace
}
