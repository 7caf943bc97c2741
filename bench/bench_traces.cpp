// Expert trace generation speed: traces/s and tokens/s for every registered task (through any_task, as the
// trainer samples them), and for the typed addition task alone. Training samples traces on the fly, so their
// generation must stay far cheaper than a model step (target: at least 2 M tokens/s per core for addition).
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/registry.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>

namespace {

namespace sl = ssmlen;

void report(benchmark::State& state, std::int64_t traces, std::int64_t tokens) {
  state.SetItemsProcessed(tokens);
  state.counters["traces/s"] = benchmark::Counter(static_cast<double>(traces), benchmark::Counter::kIsRate);
  state.counters["tokens/trace"] = static_cast<double>(tokens) / static_cast<double>(traces > 0 ? traces : 1);
}

// A whole episode_spec (prompt, expert trace, check, description) through the type-erased task.
void bm_task_sample(benchmark::State& state, std::string const& name) {
  auto const task = sl::tasks::make_task(name);
  sl::rng g(1);
  auto const n = static_cast<int>(state.range(0));
  std::int64_t traces = 0, tokens = 0;
  for (auto _ : state) {
    auto spec = task.sample_exact(g, n);
    tokens += static_cast<std::int64_t>(spec.expert.size());
    ++traces;
    benchmark::DoNotOptimize(spec.expert.tokens.data());
  }
  report(state, traces, tokens);
}

// The expert trace alone, for a fixed instance (sampling excluded).
void bm_addition_expert(benchmark::State& state) {
  sl::tasks::addition const task;
  sl::rng g(1);
  auto const x = task.sample_exact(g, static_cast<int>(state.range(0)));
  std::int64_t traces = 0, tokens = 0;
  for (auto _ : state) {
    auto t = task.expert(x);
    tokens += static_cast<std::int64_t>(t.size());
    ++traces;
    benchmark::DoNotOptimize(t.tokens.data());
  }
  report(state, traces, tokens);
}
BENCHMARK(bm_addition_expert)->ArgName("n")->Arg(5)->Arg(1000);

[[maybe_unused]] bool const registered = [] {
  for (auto const& name : sl::tasks::task_names()) {
    bool const exponential = name.rfind("hanoi", 0) == 0;  // Hanoi traces grow as 2^n: disks, not digits
    benchmark::RegisterBenchmark(("bm_task_sample/" + name).c_str(), bm_task_sample, name)
        ->ArgName("n")
        ->Arg(5)
        ->Arg(exponential ? 12 : 1000);
  }
  return true;
}();

}  // namespace
