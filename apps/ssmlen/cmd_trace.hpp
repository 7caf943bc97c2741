// `ssmlen trace TASK --n N --seed S [--json] [--a A --b B]`: prints one expert trace of a registered task,
// coloured by role on a terminal (plain text otherwise), or as JSON.
#pragma once

#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/registry.hpp>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <unistd.h>

namespace ssmlen::apps {

struct trace_options {
  std::string task;
  int n = 5;
  std::uint64_t seed = 1;
  bool json = false;
  bool train = false;
  std::string a, b;
};

// ANSI colours of the paper's figures: commands orange, observations green, thoughts blue, outputs purple.
inline char const* role_colour(tools::role r) {
  switch (r) {
  case tools::role::input:
    return "\033[0m";
  case tools::role::command:
    return "\033[38;5;208m";
  case tools::role::observation:
    return "\033[32m";
  case tools::role::thought:
    return "\033[34m";
  case tools::role::output:
    return "\033[35m";
  }
  return "\033[0m";
}

inline void run_trace_command(trace_options const& o) {
  auto const task = tasks::make_task(o.task);
  bool const operands = !o.a.empty() || !o.b.empty();
  check(!operands || (!o.a.empty() && !o.b.empty()), "trace: give both --a and --b");
  check_arg(operands || o.n >= 1, "--n", o.n, "must be at least 1");
  rng g(o.seed);
  auto const spec = operands ? task.from_operands(o.a, o.b) : o.train ? task.sample(g, o.n) : task.sample_exact(g, o.n);
  auto const& v = task.vocab();
  auto const& t = spec.expert;
  if (o.json) {
    nlohmann::json prompt = nlohmann::json::array(), trace = nlohmann::json::array();
    for (auto tok : spec.prompt) {
      prompt.push_back(v.name(tok));
    }
    for (std::size_t i = 0; i < t.size(); ++i) {
      trace.push_back({v.name(t.tokens[i]), tools::role_name(t.roles[i])});
    }
    nlohmann::json const out{{"task", task.name()}, {"n", o.n},       {"seed", o.seed},    {"instance", spec.describe},
                             {"prompt", prompt},    {"trace", trace}, {"length", t.size()}};
    std::printf("%s\n", out.dump().c_str());
    return;
  }
  bool const colour = isatty(fileno(stdout)) != 0;
  std::int64_t counts[5] = {};
  std::string line;
  for (std::size_t i = 0; i < t.size(); ++i) {
    auto const r = t.roles[i];
    ++counts[static_cast<int>(r)];
    auto const& name = v.name(t.tokens[i]);
    bool const paint = colour && r != tools::role::input;
    line += i == 0 ? "" : " ";
    line += paint ? role_colour(r) : "";
    line += r == tools::role::observation ? "(" + name + ")" : name;
    line += paint ? "\033[0m" : "";
  }
  std::printf("%s %s\n%s\n", task.name().c_str(), spec.describe.dump().c_str(), line.c_str());
  std::printf("trace length %zu tokens: input %lld, command %lld, observation %lld, thought %lld, output %lld\n",
              t.size(), static_cast<long long>(counts[0]), static_cast<long long>(counts[1]),
              static_cast<long long>(counts[2]), static_cast<long long>(counts[3]), static_cast<long long>(counts[4]));
  if (colour) {
    std::printf("colours: %scommand\033[0m %s(observation)\033[0m %sthought\033[0m %soutput\033[0m\n",
                role_colour(tools::role::command), role_colour(tools::role::observation),
                role_colour(tools::role::thought), role_colour(tools::role::output));
  }
}

inline void add_trace_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("trace", "Print an expert trace of a task (coloured by role on a terminal)");
  auto o = std::make_shared<trace_options>();
  std::string names;
  for (auto const& e : tasks::task_entries()) {
    names += "\n  " + e.name + ": " + e.summary;
  }
  cmd->add_option("task", o->task, "Task name:" + names)->required();
  cmd->add_option("--n", o->n, "Instance size (digits, disks, nodes)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  cmd->add_flag("--json", o->json, "Print JSON: {task, n, seed, instance, prompt, trace: [[name, role], ...], length}");
  cmd->add_flag("--train", o->train, "Sample the training distribution (sizes up to n) instead of exactly n");
  cmd->add_option("--a", o->a, "First operand (decimal digits), for the addition tasks");
  cmd->add_option("--b", o->b, "Second operand (decimal digits), for the addition tasks");
  cmd->callback([o] { run_trace_command(*o); });
}

}  // namespace ssmlen::apps
