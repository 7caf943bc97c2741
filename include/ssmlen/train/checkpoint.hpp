// SPDX-License-Identifier: Apache-2.0
//! @file checkpoint.hpp
//! Training checkpoints: the model (mamba_ssm names), AdamW's moments as
//! `optimizer.exp_avg.<name>` / `optimizer.exp_avg_sq.<name>`, and the step and
//! run description in metadata. Batches are a pure function of (seed, step), so
//! restoring these continues a run bit-identically.
#pragma once

#include <ssmlen/io/safetensors.hpp>
#include <ssmlen/models/checkpoint.hpp>
#include <ssmlen/train/adamw.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

namespace ssmlen::train {

inline constexpr char const* train_metadata_key = "ssmlen.train";

//! Saves model + optimizer state; `run` (JSON) is stored as metadata next to the step.
template <class T, class Scan>
void save_training_checkpoint(std::filesystem::path const& file, models::mamba_lm<T, Scan>& model, adamw<T>& opt,
                              nlohmann::json run) {
  auto f = models::to_safetensors(model);
  auto const& params = opt.params();
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::vector<std::int64_t> shape;
    for (int d = 0; d < params[i].p->value.shape().rank(); ++d) {
      shape.push_back(params[i].p->value.shape()[d]);
    }
    auto const& m = opt.first_moments()[i];
    auto const& v = opt.second_moments()[i];
    f.tensors["optimizer.exp_avg." + params[i].name] = io::from_values(shape, std::span<T const>(m.data(), m.size()));
    f.tensors["optimizer.exp_avg_sq." + params[i].name] =
        io::from_values(shape, std::span<T const>(v.data(), v.size()));
  }
  run["step"] = opt.steps();
  f.metadata[train_metadata_key] = run.dump();
  io::save_safetensors(file, f);
}

//! Restores model parameters and optimizer state saved by save_training_checkpoint; returns the run metadata.
template <class T, class Scan>
nlohmann::json load_training_checkpoint(std::filesystem::path const& file, models::mamba_lm<T, Scan>& model,
                                        adamw<T>& opt) {
  auto const f = io::load_safetensors(file);
  auto const meta = f.metadata.find(train_metadata_key);
  check(meta != f.metadata.end(),
        file.string() + ": not a training checkpoint (no '" + train_metadata_key + "' metadata)");
  check(models::checkpoint_config(f) == model.config(),
        file.string() + ": the checkpoint's model configuration differs from this run's");
  models::load_parameters(model, f, file.string());
  auto const& params = opt.params();
  for (std::size_t i = 0; i < params.size(); ++i) {
    for (auto [prefix, moments] : {std::pair{"optimizer.exp_avg.", &opt.first_moments()},
                                   std::pair{"optimizer.exp_avg_sq.", &opt.second_moments()}}) {
      auto const it = f.tensors.find(prefix + params[i].name);
      check(it != f.tensors.end(), file.string() + ": missing optimizer tensor '" + prefix + params[i].name + "'");
      auto const values = io::to_doubles(it->second);
      auto& dst = (*moments)[i];
      check(static_cast<std::int64_t>(values.size()) == dst.size(),
            file.string() + ": optimizer tensor '" + prefix + params[i].name + "' has the wrong size");
      for (std::size_t j = 0; j < values.size(); ++j) {
        dst[static_cast<std::int64_t>(j)] = static_cast<T>(values[j]);
      }
    }
  }
  nlohmann::json run;
  try {
    run = nlohmann::json::parse(meta->second);
  } catch (nlohmann::json::exception const& e) {
    throw error(file.string() + ": training metadata is not valid JSON: " + e.what());
  }
  check(run.contains("step") && run["step"].is_number_integer(), file.string() + ": training metadata has no step");
  opt.set_steps(run["step"].get<std::int64_t>());
  return run;
}

}  // namespace ssmlen::train
