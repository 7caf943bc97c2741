// `ssmlen eval`: a length sweep of a trained model on its task (a Mamba, or a baseline that examples/05_baselines
// saved: the checkpoint's configuration names the architecture).
//   ssmlen eval --checkpoint runs/add/model.safetensors --sizes 5,10,100,1000 --per-size 64 [--json] [--out stem]
#pragma once

#include <ssmlen/eval/report.hpp>
#include <ssmlen/models/checkpoint.hpp>
#include <ssmlen/models/recurrent_lm.hpp>
#include <ssmlen/models/transformer_lm.hpp>
#include <ssmlen/tasks/registry.hpp>
#include <ssmlen/train/presets.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <omp.h>

#include "progress.hpp"

namespace ssmlen::apps {

namespace detail {

struct eval_options {
  std::string checkpoint, task, out;
  std::vector<int> sizes;  // empty: the task preset's sweep sizes
  eval::sweep_config sweep;
  bool json = false;
  int threads = 0;
};

//! The sweep of one loaded model (a Mamba or a baseline), reported as the options ask.
template <class Model>
void eval_sweep(eval_options const& o, CLI::App* cmd, io::st_file const& file, std::string const& task_name,
                tasks::any_task const& task, Model const& model) {
  check(model.config().vocab == task.vocab().size(), o.checkpoint + ": the model has " +
                                                         std::to_string(model.config().vocab) + " tokens but task '" +
                                                         task_name + "' has " + std::to_string(task.vocab().size()));
  auto cfg = o.sweep;
  auto const preset = train::preset_for(task_name);
  cfg.sizes = o.sizes.empty() ? preset.sweep_sizes : o.sizes;
  if (cmd->get_option("--per-size")->count() == 0) {
    cfg.per_size = preset.sweep_episodes;
  }
  auto const train_n = file.metadata.find("ssmlen.train_n");
  cfg.train_n = train_n != file.metadata.end() ? std::stoi(train_n->second) : 0;
  cfg.validate();
  if (!o.json) {
    std::printf("%s\n", eval::table_header().c_str());
  }
  auto const result = eval::length_sweep(backends::host{}, model, task, cfg, [&](eval::size_result const& r) {
    if (o.json) {
      std::fprintf(stderr, "n = %d: %.1f%% exact (%.1fs)\n", r.n, 100 * r.exact_match, r.seconds);
    } else {
      std::printf("%s\n", eval::table_row(r).c_str());
      std::fflush(stdout);
    }
  });
  if (o.json) {
    std::printf("%s\n", result.to_json().dump().c_str());
  } else {
    std::printf("summary: %s\n", result.summary().c_str());
  }
  if (!o.out.empty()) {
    for (auto const& f : eval::write_reports(result, o.out)) {
      std::fprintf(stderr, "wrote %s\n", f.c_str());
    }
  }
}

}  // namespace detail

inline void add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Length-generalization sweep of a trained model (exact match per size)");
  auto o = std::make_shared<detail::eval_options>();
  cmd->add_option("--checkpoint", o->checkpoint, "Model file written by `ssmlen train` (.safetensors)")->required();
  cmd->add_option("--sizes", o->sizes, "Sizes to test, e.g. 5,10,100,1000 (default: the task preset's)")
      ->delimiter(',');
  cmd->add_option("--per-size", o->sweep.per_size, "Episodes per size (default: the task preset's)");
  cmd->add_option("--seed", o->sweep.seed, "Seed of the test instances");
  cmd->add_option("--batch", o->sweep.batch, "Episodes stepped together");
  cmd->add_option("--teacher-forced", o->sweep.teacher_forced, "Expert traces per size scored by teacher forcing");
  cmd->add_option("--task", o->task, "Task (default: the one stored in the checkpoint)");
  cmd->add_option("--out", o->out, "Write <out>.json, .csv, .svg (and .png with gnuplot)");
  cmd->add_flag("--json", o->json, "Print one JSON object on stdout instead of the table");
  cmd->add_option("--threads", o->threads, "OpenMP threads (default: all cores)")->check(CLI::Range(0, 4096));
  cmd->callback([o, cmd] {
    if (o->threads > 0) {
      omp_set_num_threads(o->threads);
    }
    auto const file = io::load_safetensors(o->checkpoint);
    auto const meta_task = file.metadata.find("ssmlen.task");
    std::string const task_name =
        !o->task.empty() ? o->task
        : meta_task != file.metadata.end()
            ? meta_task->second
            : throw error(o->checkpoint + ": the checkpoint does not say its task: pass --task");
    auto const task = tasks::make_task(task_name);
    auto const meta_vocab = file.metadata.find("ssmlen.vocab");
    if (meta_vocab != file.metadata.end()) {
      auto const names = nlohmann::json::parse(meta_vocab->second).get<std::vector<std::string>>();
      check(names == task.vocab().names(), o->checkpoint +
                                               ": the checkpoint's vocabulary differs from the vocabulary of task '" +
                                               task_name + "': was it trained on another task?");
    }
    auto const architecture = models::checkpoint_architecture(file);
    if (architecture == "lstm") {
      detail::eval_sweep(*o, cmd, file, task_name, task,
                         models::model_from_safetensors_as<models::lstm_lm<float>>(file, o->checkpoint));
    } else if (architecture == "gru") {
      detail::eval_sweep(*o, cmd, file, task_name, task,
                         models::model_from_safetensors_as<models::gru_lm<float>>(file, o->checkpoint));
    } else if (architecture == "transformer") {
      detail::eval_sweep(*o, cmd, file, task_name, task,
                         models::model_from_safetensors_as<models::transformer_lm<float>>(file, o->checkpoint));
    } else {
      detail::eval_sweep(*o, cmd, file, task_name, task, models::model_from_safetensors<float>(file, o->checkpoint));
    }
  });
}

}  // namespace ssmlen::apps
