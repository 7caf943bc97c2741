// SPDX-License-Identifier: Apache-2.0
//! @file run.hpp
//! A whole training run on a task, as `ssmlen train` and the examples perform
//! it: configuration (JSON, with every key checked), periodic validation by
//! rollouts at a size and seed of its own (never one of the reported sweep's),
//! the best validated model kept as the run's model, a training checkpoint for
//! resuming, and metrics as CSV. Everything goes into one run directory.
#pragma once

#include <ssmlen/eval/length_sweep.hpp>
#include <ssmlen/eval/report.hpp>
#include <ssmlen/models/checkpoint.hpp>
#include <ssmlen/tasks/registry.hpp>
#include <ssmlen/train/checkpoint.hpp>
#include <ssmlen/train/task_batches.hpp>
#include <ssmlen/train/trainer.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

namespace ssmlen::train {

struct run_config {
  std::string task = "addition";
  int max_n = 5;  // training sizes: the task's distribution up to max_n
  std::int64_t layers = 4, d_model = 64, d_state = 16, expand = 2;
  double delta_min = 0;  // models::mamba_config::delta_min
  std::int64_t steps = 800, batch = 128, warmup = 100;
  // Expert traces packed back to back into one training sequence: the state carries from problem to problem, so
  // training shows it long histories, as a 1000-digit episode will (train::task_batch).
  std::int64_t traces_per_sequence = 4;
  double lr = 3e-3, min_lr_ratio = 0.1, weight_decay = 0.01, beta1 = 0.9, beta2 = 0.98, clip_norm = 1.0;
  // AdamW's ε: a weight moves by lr · m / (√v + ε) a step, about lr for gradients of any size well above ε; a larger
  // ε makes the steps of weights whose gradients have all but vanished shrink with them.
  double adam_eps = 1e-8;
  std::uint64_t seed = 1;
  // Validate every this many steps (0: only at the end). A headline validation rolls out 24 episodes of 80 digits
  // (about 1 s on 2 cores); the run keeps the best validated model, the later on ties: step 800 in every seed tried.
  std::int64_t eval_every = 100;
  int val_n = 80;  // validation size: keep it out of the reported sweep's sizes
  int val_episodes = 24;
  std::uint64_t val_seed = 777;  // validation instances: never the sweep's seed
  int patience = 0;              // stop after this many consecutive perfect validations (0: never stop early)
  std::string out = "runs/addition";

  [[nodiscard]] nlohmann::json to_json() const {
    return {{"task", task},
            {"max_n", max_n},
            {"layers", layers},
            {"d_model", d_model},
            {"d_state", d_state},
            {"expand", expand},
            {"delta_min", delta_min},
            {"steps", steps},
            {"batch", batch},
            {"traces_per_sequence", traces_per_sequence},
            {"warmup", warmup},
            {"lr", lr},
            {"min_lr_ratio", min_lr_ratio},
            {"weight_decay", weight_decay},
            {"beta1", beta1},
            {"beta2", beta2},
            {"adam_eps", adam_eps},
            {"clip_norm", clip_norm},
            {"seed", seed},
            {"eval_every", eval_every},
            {"val_n", val_n},
            {"val_episodes", val_episodes},
            {"val_seed", val_seed},
            {"patience", patience},
            {"out", out}};
  }

  //! Reads keys present in `j` over the current values; unknown keys and wrong types are errors naming the key.
  void update_from_json(nlohmann::json const& j) {
    check(j.is_object(), "run configuration must be a JSON object");
    for (auto const& item : j.items()) {
      std::string const& key = item.key();  // named, not a structured binding: clang 14 cannot capture those
      auto const& v = item.value();
      auto bad = [&](char const* want) { check_arg(false, "config key '" + key + "'", v.dump(), want); };
      auto integer = [&](auto& out) {
        if (!v.is_number_integer())
          bad("must be an integer");
        out = v.get<std::remove_reference_t<decltype(out)>>();
      };
      auto real = [&](double& out) {
        if (!v.is_number())
          bad("must be a number");
        out = v.get<double>();
      };
      auto text = [&](std::string& out) {
        if (!v.is_string())
          bad("must be a string");
        out = v.get<std::string>();
      };
      if (key == "task")
        text(task);
      else if (key == "max_n")
        integer(max_n);
      else if (key == "layers")
        integer(layers);
      else if (key == "d_model")
        integer(d_model);
      else if (key == "d_state")
        integer(d_state);
      else if (key == "expand")
        integer(expand);
      else if (key == "delta_min")
        real(delta_min);
      else if (key == "steps")
        integer(steps);
      else if (key == "batch")
        integer(batch);
      else if (key == "traces_per_sequence")
        integer(traces_per_sequence);
      else if (key == "warmup")
        integer(warmup);
      else if (key == "lr")
        real(lr);
      else if (key == "min_lr_ratio")
        real(min_lr_ratio);
      else if (key == "weight_decay")
        real(weight_decay);
      else if (key == "beta1")
        real(beta1);
      else if (key == "beta2")
        real(beta2);
      else if (key == "adam_eps")
        real(adam_eps);
      else if (key == "clip_norm")
        real(clip_norm);
      else if (key == "seed")
        integer(seed);
      else if (key == "eval_every")
        integer(eval_every);
      else if (key == "val_n")
        integer(val_n);
      else if (key == "val_episodes")
        integer(val_episodes);
      else if (key == "val_seed")
        integer(val_seed);
      else if (key == "patience")
        integer(patience);
      else if (key == "out")
        text(out);
      else
        throw error("unknown run config key '" + key + "'");
    }
  }

  void validate() const {
    check_arg(max_n > 0, "max_n", max_n, "must be positive");
    check_arg(steps > 0, "steps", steps, "must be positive");
    check_arg(batch > 0, "batch", batch, "must be positive");
    check_arg(traces_per_sequence > 0, "traces_per_sequence", traces_per_sequence, "must be positive");
    check_arg(eval_every >= 0, "eval_every", eval_every, "must be non-negative");
    check_arg(val_n > 0, "val_n", val_n, "must be positive");
    check_arg(val_episodes > 0, "val_episodes", val_episodes, "must be positive");
    check_arg(patience >= 0, "patience", patience, "must be non-negative");
    check(!out.empty(), "out: give a run directory");
    optimizer().validate();
    schedule().validate();
  }

  [[nodiscard]] adamw_config optimizer() const { return {lr, beta1, beta2, adam_eps, weight_decay, clip_norm}; }
  [[nodiscard]] warmup_cosine schedule() const { return {lr, warmup, steps, min_lr_ratio}; }

  [[nodiscard]] models::mamba_config model_config(std::int64_t vocab) const {
    models::mamba_config c;
    c.vocab = vocab;
    c.d_model = d_model;
    c.n_layers = layers;
    c.d_state = d_state;
    c.expand = expand;
    c.delta_min = delta_min;
    c.validate();
    return c;
  }
};

//! What the run reports as it goes.
struct run_events {
  std::function<void(step_report const&, double elapsed, double tokens_per_s)> on_step;
  std::function<void(std::int64_t step, double exact, bool best)> on_validation;
};

struct run_outcome {
  std::int64_t steps = 0;       // steps taken in total
  std::int64_t best_step = 0;   // the step whose model was kept
  double best_validation = -1;  // its validation exact match
  double seconds = 0;
  double tokens = 0;  // training tokens processed in this invocation
  bool stopped_early = false;
  std::filesystem::path model_file;
};

//! Metadata stored in a run's model file, so `ssmlen eval` knows the task and vocabulary.
inline std::map<std::string, std::string> run_metadata(run_config const& cfg, tasks::any_task const& task) {
  return {{"ssmlen.task", cfg.task},
          {"ssmlen.train_n", std::to_string(cfg.max_n)},
          {"ssmlen.vocab", nlohmann::json(task.vocab().names()).dump()},
          {"ssmlen.run", cfg.to_json().dump()}};
}

//! The validation's exact match; rollouts through `runner` when one is given (see eval::length_sweep).
template <class Model>
double validation_exact(backends::host const& be, Model const& model, tasks::any_task const& task,
                        run_config const& cfg, eval::episode_runner const& runner = {}) {
  eval::sweep_config sc;
  sc.sizes = {cfg.val_n};
  sc.per_size = cfg.val_episodes;
  sc.seed = cfg.val_seed;
  sc.teacher_forced = 0;
  sc.batch = cfg.val_episodes;
  return eval::length_sweep(be, model, task, sc, {}, runner).results.front().exact_match;
}

//! Trains as configured (resuming from <out>/last.safetensors when `resume`); returns the outcome.
template <class Model = models::mamba_lm<float>>
run_outcome train_run(backends::host const& be, run_config const& cfg, run_events const& ev, bool resume = false) {
  cfg.validate();
  auto const task = tasks::make_task(cfg.task);
  std::filesystem::path const dir(cfg.out);
  std::filesystem::create_directories(dir);
  eval::write_file_atomic(dir / "config.json", cfg.to_json().dump(2) + "\n");
  Model model(cfg.model_config(task.vocab().size()), cfg.seed);
  trainer<Model> tr(model, cfg.optimizer(), cfg.schedule());
  run_outcome out;
  out.model_file = dir / "model.safetensors";
  auto const last = dir / "last.safetensors";
  int perfect_in_a_row = 0;
  if (resume) {
    auto const meta = load_training_checkpoint(last, model, tr.optimizer());
    out.best_step = meta.value("best_step", std::int64_t{0});
    out.best_validation = meta.value("best_validation", -1.0);
    perfect_in_a_row = meta.value("perfect_in_a_row", 0);
  }
  bool const append = resume && std::filesystem::exists(dir / "metrics.csv");
  std::ofstream metrics(dir / "metrics.csv", append ? std::ios::app : std::ios::trunc);
  if (!append) {
    metrics << "step,loss,lr,grad_norm,tokens,tokens_per_s,elapsed_s,validation_exact\n";
  }
  auto const t0 = std::chrono::steady_clock::now();
  auto save_state = [&] {
    save_training_checkpoint(last, model, tr.optimizer(),
                             {{"seed", cfg.seed},
                              {"best_step", out.best_step},
                              {"best_validation", out.best_validation},
                              {"perfect_in_a_row", perfect_in_a_row},
                              {"run", cfg.to_json()}});
  };
  auto validate_now = [&](std::int64_t step) {
    double const exact = validation_exact(be, model, task, cfg);
    bool const best = exact >= out.best_validation;  // ties go to the later model: it has trained longer
    if (best) {
      out.best_validation = exact;
      out.best_step = step;
      models::save_model(out.model_file, model, io::st_dtype::f32, run_metadata(cfg, task));
    }
    perfect_in_a_row = exact >= 1.0 ? perfect_in_a_row + 1 : 0;
    if (ev.on_validation) {
      ev.on_validation(step, exact, best);
    }
    return exact;
  };
  tr.fit(
      be, cfg.steps,
      [&](std::int64_t s) { return task_batch(task, cfg.seed, s, cfg.batch, cfg.max_n, cfg.traces_per_sequence); },
      [&](step_report const& r) {
        out.tokens += static_cast<double>(r.tokens);
        double const elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        double const tps = out.tokens / std::max(elapsed, 1e-9);
        std::int64_t const done = r.step + 1;
        double val = -1;
        if ((cfg.eval_every > 0 && done % cfg.eval_every == 0) || done == cfg.steps) {
          val = validate_now(done);
          save_state();
        }
        metrics << done << ',' << r.loss << ',' << r.lr << ',' << r.grad_norm << ',' << r.tokens << ',' << tps << ','
                << elapsed << ',' << (val >= 0 ? std::to_string(val) : "") << '\n';
        metrics.flush();
        if (ev.on_step) {
          ev.on_step(r, elapsed, tps);
        }
        out.steps = done;
        if (cfg.patience > 0 && perfect_in_a_row >= cfg.patience) {
          out.stopped_early = true;
          return false;
        }
        return true;
      });
  out.steps = tr.optimizer().steps();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace ssmlen::train
