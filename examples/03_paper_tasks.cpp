// The paper's other tasks on CPU: trains a Mamba on each task with its preset (train/presets.hpp), sweeps sizes
// past the training range, and prints the paper's "n -> m (p%)" summary per task next to the paper's result.
//   03_paper_tasks                          every task below, one after another (about an hour on 2 cores)
//   03_paper_tasks multiplication_1 hanoi_iterative     the named tasks
//   03_paper_tasks --steps 100 logic_graph             a shorter budget
// Each task writes runs/<task>/ (model, metrics, log) and runs/<task>/sweep.{json,csv,svg}.
// --smoke runs every task for 2 steps on tiny batches (a test that the example keeps compiling and running).
#include <ssmlen/ssmlen.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace sl = ssmlen;

namespace {

// The paper's Mamba results (Tables 1 and 2; the multiplication ablation for the mixture), best of its seeds.
std::map<std::string, std::string> const paper = {
    {"multiplication_1", "10 -> 1K (100%)"}, {"multiplication_2", "10 -> 1K (100%)"},
    {"logic_graph", "10 -> 1K (98%)"},       {"hanoi_iterative", "8 -> 12 (49%)"},
    {"hanoi_recursive", "7 -> 8 (100%)"},    {"mixture", "n×2 with addition: strong at 800 steps"},
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Train and sweep the paper's tasks with their CPU presets");
  std::vector<std::string> names;
  std::int64_t steps = 0;
  bool smoke = false;
  app.add_option("tasks", names,
                 "Tasks (default: multiplication_1, multiplication_2, logic_graph, hanoi_iterative, "
                 "hanoi_recursive, mixture)");
  app.add_option("--steps", steps, "Training steps (default: each preset's)");
  app.add_flag("--smoke", smoke, "2 steps of every task on tiny batches");
  CLI11_PARSE(app, argc, argv);
  if (names.empty()) {
    for (auto const& [name, result] : paper) {
      names.push_back(name);
    }
  }

  sl::backends::host be;
  std::vector<std::string> rows;
  for (auto const& name : names) {
    auto preset = sl::train::preset_for(name);
    auto& cfg = preset.run;
    if (steps > 0) {
      cfg.steps = steps;
    }
    if (smoke) {  // tiny and fast, outputs in the working directory
      cfg.steps = 2;
      cfg.batch = 4;
      cfg.max_n = 2;
      cfg.val_n = 3;
      cfg.val_episodes = 2;
      cfg.out = "smoke_" + name;
      preset.sweep_sizes = {4};
    }
    std::printf("== %s: %ld layers x d_model %ld, %ld steps of %ld traces, sizes <= %d%s%s\n", name.c_str(),
                static_cast<long>(cfg.layers), static_cast<long>(cfg.d_model), static_cast<long>(cfg.steps),
                static_cast<long>(cfg.batch), cfg.max_n, preset.note.empty() ? "" : "; ", preset.note.c_str());
    sl::train::run_events events;
    events.on_validation = [](std::int64_t step, double exact, bool) {
      std::printf("  step %5ld: validation %5.1f%%\n", static_cast<long>(step), 100 * exact);
      std::fflush(stdout);
    };
    auto const outcome = sl::train::train_run(be, cfg, events);
    std::printf("  trained %ld steps in %.0f s; kept step %ld\n", static_cast<long>(outcome.steps), outcome.seconds,
                static_cast<long>(outcome.best_step));

    auto const task = sl::tasks::make_task(name);
    auto const model = sl::models::load_model<float>(outcome.model_file);
    sl::eval::sweep_config sweep;
    sweep.sizes = preset.sweep_sizes;
    sweep.per_size = smoke ? 2 : preset.sweep_episodes;
    sweep.teacher_forced = smoke ? 1 : 4;
    sweep.train_n = cfg.max_n;
    auto const result = sl::eval::length_sweep(be, model, task, sweep);
    std::puts(sl::eval::table(result).c_str());
    sl::eval::write_reports(result, std::filesystem::path(cfg.out) / "sweep");
    auto const it = paper.find(name);
    rows.push_back(name + ": " + result.summary() + "   (paper: " + (it != paper.end() ? it->second : "-") + ")");
  }
  std::puts("\nsummary (ssmlen on CPU, paper's Mamba):");
  for (auto const& row : rows) {
    std::printf("  %s\n", row.c_str());
  }
}
