// SPDX-License-Identifier: Apache-2.0
//! @file task_batches.hpp
//! Training batches of expert traces sampled from a task: sizes from the task's
//! training distribution up to max_n, the loss mask from the token roles
//! (command | thought | output). A batch depends only on (seed, step).
#pragma once

#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/any_task.hpp>
#include <ssmlen/train/batch.hpp>

#include <cstdint>

namespace ssmlen::train {

inline batch task_batch(tasks::any_task const& task, std::uint64_t seed, std::int64_t step, std::int64_t batch_size,
                        int max_n) {
  check_arg(batch_size > 0, "batch", batch_size, "must be positive");
  check_arg(max_n > 0, "max_n", max_n, "must be positive");
  rng g = rng(seed).fork(static_cast<std::uint64_t>(step));
  batch b;
  for (std::int64_t i = 0; i < batch_size; ++i) {
    auto const spec = task.sample(g, max_n);
    b.add(spec.expert.tokens, spec.expert.loss_mask());
  }
  b.finish();
  return b;
}

}  // namespace ssmlen::train
