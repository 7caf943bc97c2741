// SPDX-License-Identifier: Apache-2.0
//! @file presets.hpp
//! CPU-scale defaults per task: the model, the training budget, the validation
//! size and the sizes a sweep reports. `ssmlen train --task T` starts from T's
//! preset, so every task trains with one short command on a 2-core machine; the
//! paper's own setting (130M parameters, 2000 steps on 8 GPUs) is far larger.
//! Training sizes follow the paper where a CPU affords it; `note` says where not.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/train/run.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace ssmlen::train {

struct task_preset {
  run_config run;                // training and validation defaults (run.task is the task)
  std::vector<int> sweep_sizes;  // what `ssmlen eval` reports by default: sizes past the training range
  int sweep_episodes = 64;       // episodes per size by default
  std::string note;              // how this differs from the paper's setting, if it does
};

//! The preset of a registered task; an unknown name is an error that lists the known ones.
inline task_preset preset_for(std::string_view task) {
  (void)tasks::make_task(task);  // validates the name with the registry's message
  task_preset p;
  auto& r = p.run;
  r.task = std::string(task);
  r.out = "runs/" + r.task;
  // The addition headline (run_config's own defaults): ≤ 5-digit operands, sweep to 1000 digits.
  p.sweep_sizes = {5, 10, 20, 50, 100, 200, 500, 1000};
  if (task != "addition") {  // the other tasks keep the schedule their results in docs/results.md were measured with
    r.steps = 600;
    r.traces_per_sequence = 1;
    r.eval_every = 25;
  }
  if (task.starts_with("addition_")) {
    // Ablations train with the headline's budget in tokens (~9 M): traces without thoughts are ~10x shorter, so
    // they take more steps.
    if (task != "addition_notool") {  // the no-tool trace is the headline's trace: 600 steps of it
      r.steps = 3000;
    }
    p.sweep_sizes = {5, 6, 7, 8, 10, 20, 50, 100};
    r.val_n = 30;
  } else if (task != "addition") {
    r.patience = 3;  // the other tasks' traces are long: stop after three perfect validations in a row
  }
  if (task.starts_with("multiplication") || task == "mixture") {
    r.max_n = 10;  // the paper's training size (first operand ≤ 10 digits)
    r.val_n = 40;
    p.sweep_sizes = {10, 20, 50, 100, 200, 500, 1000};
    if (task != "multiplication_1") {  // n×2 traces are 2.5× longer: half the batch keeps a step's cost
      r.batch = 64;
    }
    if (task == "mixture") {
      // The paper's longest budget, with traces packed as the headline's: one trace per sequence and early
      // stopping left the model exact to 50 digits only (31 % at 1000); packed four to a sequence, 800 steps, it
      // is exact to 1000 (docs/results.md). Kept: the last step, validated every 100.
      r.steps = 800;
      r.traces_per_sequence = 4;
      r.eval_every = 100;
      r.patience = 0;
      p.note = "first operands of <= 10 digits (paper: <= 20)";
    }
  } else if (task == "logic_graph") {
    r.max_n = 10;  // the paper's training size (≤ 10 variables)
    r.batch = 64;
    r.val_n = 40;
    // The loss plateaus near 1.0 for ~300 steps, then falls; with this schedule the model is exact at 40 nodes from
    // step 900 and the early stop ends the run at step 1200 (docs/results.md).
    r.steps = 3000;
    r.eval_every = 150;
    p.sweep_sizes = {10, 20, 50, 100, 200, 500, 1000};
  } else if (task.starts_with("hanoi")) {
    // The paper's training sizes: ≤ 7 disks recursive, ≤ 8 iterative. Validation at 9 disks (other instances than
    // any sweep's), 8 episodes each, every 100 steps; stop after 2 perfect validations.
    r.batch = 32;
    r.val_n = 9;
    r.val_episodes = 8;
    r.eval_every = 100;
    r.patience = 2;
    p.sweep_episodes = 8;
    if (task == "hanoi_recursive") {  // a 7-disk recursive trace is ~5.7k tokens, a 10-disk one ~47k
      r.max_n = 7;
      p.sweep_sizes = {8, 10, 12};
    } else {
      // Iterative traces grow as n·2^n (an 8-disk trace is ~30k tokens, a 10-disk episode 141k, an 11-disk one
      // ~300k), so a run is 86 M tokens: about 30 minutes on 2 cores (docs/results.md).
      r.max_n = 8;
      r.steps = 400;
      p.sweep_sizes = {10, 11};
    }
  }
  return p;
}

}  // namespace ssmlen::train
