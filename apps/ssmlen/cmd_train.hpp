// `ssmlen train`: trains a Mamba on a task's expert traces (see train/run.hpp).
//   ssmlen train --task addition --max-n 5 --layers 4 --d-model 64 --steps 800 --out runs/add
// Options override a --config JSON file, which overrides the task's preset (train/presets.hpp).
#pragma once

#include <ssmlen/train/presets.hpp>
#include <ssmlen/train/run.hpp>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <omp.h>

#include "progress.hpp"

namespace ssmlen::apps {

inline void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a Mamba on a task's expert traces (defaults: the task's CPU preset)");
  struct options {
    train::run_config cfg;
    std::string config_file;
    bool resume = false;
    int threads = 0;
  };
  auto o = std::make_shared<options>();
  auto& c = o->cfg;
  cmd->add_option("--config", o->config_file, "JSON run configuration (keys as in <out>/config.json)");
  cmd->add_option("--task", c.task, "Task name (see `ssmlen trace --help` for the list)");
  cmd->add_option("--max-n", c.max_n, "Largest training size (digits, nodes or disks)");
  cmd->add_option("--layers", c.layers, "Mamba layers");
  cmd->add_option("--d-model", c.d_model, "Model width");
  cmd->add_option("--d-state", c.d_state, "SSM state size");
  cmd->add_option("--delta-min", c.delta_min, "Lower bound of the SSM step size Δ (bounds state memory; 0: Mamba's)");
  cmd->add_option("--steps", c.steps, "Optimizer steps");
  cmd->add_option("--batch", c.batch, "Traces per batch");
  cmd->add_option("--traces-per-sequence", c.traces_per_sequence,
                  "Traces packed back to back into one training sequence (the state carries across them)");
  cmd->add_option("--lr", c.lr, "Peak learning rate");
  cmd->add_option("--warmup", c.warmup, "Warm-up steps");
  cmd->add_option("--weight-decay", c.weight_decay, "AdamW weight decay (matrices and embeddings)");
  cmd->add_option("--adam-eps", c.adam_eps, "AdamW's epsilon, added to the root of its second moment");
  cmd->add_option("--seed", c.seed, "Seed of the initialization and of the training data");
  cmd->add_option("--eval-every", c.eval_every, "Validate every this many steps (0: only at the end)");
  cmd->add_option("--val-n", c.val_n, "Validation size (keep it out of the sizes you report)");
  cmd->add_option("--val-episodes", c.val_episodes, "Validation episodes");
  cmd->add_option("--patience", c.patience, "Stop after this many consecutive perfect validations (0: never)");
  cmd->add_option("--out", c.out, "Run directory (config, model, checkpoint, metrics, log)");
  cmd->add_flag("--resume", o->resume, "Continue the run in --out from its last checkpoint");
  cmd->add_option("--threads", o->threads, "OpenMP threads (default: all cores)")->check(CLI::Range(0, 4096));
  cmd->callback([o, cmd] {
    // Layers, lowest first: the task's preset, then the --config file, then the flags given on the command line.
    nlohmann::json file = nlohmann::json::object();
    if (!o->config_file.empty()) {
      std::ifstream in(o->config_file);
      check(in.good(), "--config: cannot read '" + o->config_file + "'");
      try {
        file = nlohmann::json::parse(in);
      } catch (nlohmann::json::exception const& e) {
        throw error("--config: '" + o->config_file + "' is not valid JSON: " + e.what());
      }
      check(file.is_object(), "--config: '" + o->config_file + "' must hold a JSON object");
    }
    auto const from_flags = o->cfg;
    std::string const task = cmd->get_option("--task")->count() > 0              ? from_flags.task
                             : file.contains("task") && file["task"].is_string() ? file["task"].get<std::string>()
                                                                                 : from_flags.task;
    o->cfg = train::preset_for(task).run;
    o->cfg.update_from_json(file);
    auto const flags_json = from_flags.to_json();
    for (auto* opt : cmd->get_options()) {
      if (opt->count() > 0 && opt->get_name() != "--config") {
        auto json_key = opt->get_name().substr(2);
        std::replace(json_key.begin(), json_key.end(), '-', '_');
        if (flags_json.contains(json_key)) {
          o->cfg.update_from_json({{json_key, flags_json[json_key]}});
        }
      }
    }
    if (o->threads > 0) {
      omp_set_num_threads(o->threads);
    }
    auto const& cfg = o->cfg;
    cfg.validate();
    (void)tasks::make_task(cfg.task);  // an unknown task is an error before anything is written
    bool const tty = stderr_is_terminal();
    std::FILE* log = std::fopen((std::filesystem::path(cfg.out) / "train.log").c_str(), o->resume ? "a" : "w");
    if (log == nullptr) {
      std::filesystem::create_directories(cfg.out);
      log = std::fopen((std::filesystem::path(cfg.out) / "train.log").c_str(), "w");
    }
    check(log != nullptr, "cannot write the log in run directory '" + cfg.out + "'");
    auto say = [&](char const* line) {
      std::fprintf(stderr, "%s%s\n", tty ? "\r\033[K" : "", line);
      std::fprintf(log, "%s\n", line);
      std::fflush(log);
    };
    char line[256];
    std::snprintf(line, sizeof line,
                  "train %s, sizes up to %d: %ld layers x d_model %ld (d_state %ld), batch %ld, %ld steps, lr %.1e, "
                  "seed %lu, %d threads -> %s",
                  cfg.task.c_str(), cfg.max_n, static_cast<long>(cfg.layers), static_cast<long>(cfg.d_model),
                  static_cast<long>(cfg.d_state), static_cast<long>(cfg.batch), static_cast<long>(cfg.steps), cfg.lr,
                  static_cast<unsigned long>(cfg.seed), backends::host::threads(), cfg.out.c_str());
    say(line);
    std::int64_t const every = std::max<std::int64_t>(1, cfg.steps / 40);
    double last_val = -1;
    train::run_events ev;
    ev.on_step = [&](train::step_report const& r, double elapsed, double tps) {
      std::int64_t const done = r.step + 1;
      double const eta = elapsed / static_cast<double>(done) * static_cast<double>(cfg.steps - done);
      char val[32] = "";
      if (last_val >= 0) {
        std::snprintf(val, sizeof val, "  val %.0f%%", 100 * last_val);
      }
      std::snprintf(line, sizeof line, "step %5ld/%ld  loss %.4f  lr %.2e  %6.0f tok/s  %s elapsed  ETA %s%s",
                    static_cast<long>(done), static_cast<long>(cfg.steps), r.loss, r.lr, tps,
                    human_seconds(elapsed).c_str(), human_seconds(eta).c_str(), val);
      if (tty) {
        std::fprintf(stderr, "\r\033[K%s %s", bar(double(done), double(cfg.steps)).c_str(), line);
      }
      if (done % every == 0 || done == cfg.steps) {
        if (!tty) {
          std::fprintf(stderr, "%s\n", line);
        }
        std::fprintf(log, "%s\n", line);
        std::fflush(log);
      }
    };
    ev.on_validation = [&](std::int64_t step, double exact, bool best) {
      last_val = exact;
      std::snprintf(line, sizeof line, "validation at step %ld: %.1f%% exact at n = %d%s", static_cast<long>(step),
                    100 * exact, cfg.val_n, best ? " (kept)" : "");
      say(line);
    };
    auto const out = train::train_run(backends::host{}, cfg, ev, o->resume);
    std::snprintf(line, sizeof line,
                  "done: %ld steps in %s (%.0f tok/s)%s; kept the model of step %ld (validation %.1f%%): %s",
                  static_cast<long>(out.steps), human_seconds(out.seconds).c_str(),
                  out.tokens / std::max(out.seconds, 1e-9), out.stopped_early ? ", stopped early" : "",
                  static_cast<long>(out.best_step), 100 * out.best_validation, out.model_file.c_str());
    say(line);
    std::fclose(log);
  });
}

}  // namespace ssmlen::apps
