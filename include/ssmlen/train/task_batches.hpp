// SPDX-License-Identifier: Apache-2.0
//! @file task_batches.hpp
//! Training batches of expert traces sampled from a task: sizes from the task's
//! training distribution up to max_n, the loss mask from the token roles
//! (command | thought | output). A batch depends only on (seed, step).
//! With traces_per_sequence k > 1, k traces are packed back to back into one
//! sequence, so the model learns to start a problem from the state the previous
//! one left behind: short problems, but a state that has seen k times as many
//! tokens, as it will in a long episode. The boundary target (the next trace's
//! first token, an input) is not trained on.
#pragma once

#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/any_task.hpp>
#include <ssmlen/train/batch.hpp>

#include <cstdint>
#include <vector>

namespace ssmlen::train {

inline batch task_batch(tasks::any_task const& task, std::uint64_t seed, std::int64_t step, std::int64_t batch_size,
                        int max_n, std::int64_t traces_per_sequence = 1) {
  check_arg(batch_size > 0, "batch", batch_size, "must be positive");
  check_arg(max_n > 0, "max_n", max_n, "must be positive");
  check_arg(traces_per_sequence > 0, "traces_per_sequence", traces_per_sequence, "must be positive");
  rng g = rng(seed).fork(static_cast<std::uint64_t>(step));
  batch b;
  std::vector<std::int32_t> tokens;
  std::vector<std::uint8_t> predict;
  for (std::int64_t i = 0; i < batch_size; ++i) {
    auto const spec = task.sample(g, max_n);
    auto const mask = spec.expert.loss_mask();
    tokens.insert(tokens.end(), spec.expert.tokens.begin(), spec.expert.tokens.end());
    predict.insert(predict.end(), mask.begin(), mask.end());
    if ((i + 1) % traces_per_sequence == 0 || i + 1 == batch_size) {
      b.add(tokens, predict);
      tokens.clear();
      predict.clear();
    }
  }
  b.finish();
  return b;
}

}  // namespace ssmlen::train
