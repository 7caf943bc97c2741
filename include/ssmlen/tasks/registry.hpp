// SPDX-License-Identifier: Apache-2.0
//! @file registry.hpp
//! Tasks by name, for the command line, the trainer and evaluation scripts.
//! Adding a task is one line in `task_entries()`.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/addition_ablations.hpp>
#include <ssmlen/tasks/any_task.hpp>
#include <ssmlen/tasks/hanoi.hpp>
#include <ssmlen/tasks/logic_graph.hpp>
#include <ssmlen/tasks/mixture.hpp>
#include <ssmlen/tasks/multiplication.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ssmlen::tasks {

struct task_entry {
  std::string name;
  std::string summary;
  std::function<any_task()> make;
};

//! Every registered task, in a stable order.
inline std::vector<task_entry> const& task_entries() {
  static std::vector<task_entry> const entries = {
      {"addition", "a + b with a 3-pointer memory tool (carry and sum digit thoughts per column)",
       [] { return any_task(addition{}); }},
      {"addition_direct", "ablation: a + b answered directly, no thoughts, no tool",
       [] { return any_task(addition_direct{}); }},
      {"addition_reversed", "ablation: a + b answered directly, least significant digit first",
       [] { return any_task(addition_reversed{}); }},
      {"addition_calculator", "ablation: one [add] call returns the sum, which the model copies",
       [] { return any_task(addition_calculator{}); }},
      {"addition_notool", "ablation: the addition trace with every observation predicted (no tool)",
       [] { return any_task(addition_notool{}); }},
      {"multiplication", "a × b, b of 1 or 2 digits, with a 4-pointer memory (partial-product rows, then their sum)",
       [] { return any_task(multiplication{}); }},
      {"multiplication_1", "a × b with a 1-digit b (n×1), 4-pointer memory",
       [] {
         return any_task(multiplication(multiplication_options{1, 1}));
       }},
      {"multiplication_2", "a × b with a 2-digit b (n×2), 4-pointer memory",
       [] {
         return any_task(multiplication(multiplication_options{2, 2}));
       }},
      {"hanoi_iterative", "Tower of Hanoi, 1 pointer: parity pass, then each move (d)XY$ and the copied new state",
       [] { return any_task(hanoi_iterative{}); }},
      {"hanoi_recursive", "Tower of Hanoi, 2 pointers: move lists for 1..n disks built by copying with rod swaps",
       [] { return any_task(hanoi_recursive{}); }},
      {"logic_graph", "evaluate a random boolean circuit by depth-first search with a [FIND] search memory",
       [] { return any_task(logic_graph{}); }},
      {"mixture", "n×2 multiplication with auxiliary addition examples (weight 1/3), one 4-pointer memory",
       [] { return any_task(mixture{}); }},
  };
  return entries;
}

inline std::vector<std::string> task_names() {
  std::vector<std::string> names;
  for (auto const& e : task_entries()) {
    names.push_back(e.name);
  }
  return names;
}

//! The task called `name`; throws ssmlen::error listing the known names otherwise.
inline any_task make_task(std::string_view name) {
  std::string known;
  for (auto const& e : task_entries()) {
    if (e.name == name) {
      return e.make();
    }
    known += (known.empty() ? "" : ", ") + e.name;
  }
  std::string quoted = "\"";
  quoted += name;
  quoted += '"';
  check_arg(false, "task", quoted, "is unknown; known tasks: " + known);
  return task_entries().front().make();  // unreachable: check_arg threw
}

}  // namespace ssmlen::tasks
