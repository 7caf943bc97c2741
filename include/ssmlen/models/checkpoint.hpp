// SPDX-License-Identifier: Apache-2.0
//! @file checkpoint.hpp
//! Model checkpoints in safetensors: Mamba LMs in mamba_ssm's parameter layout,
//! the baselines in PyTorch's. The configuration travels as JSON under
//! `__metadata__["ssmlen.config"]`; a Mamba state dict without it (exported from
//! PyTorch) loads with the configuration inferred from the tensor shapes. Loading is strict: every missing, unexpected
//! or mis-shaped tensor is reported by name. Tensors named `optimizer.*` belong to training checkpoints and are ignored
//! here.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/io/safetensors.hpp>
#include <ssmlen/models/mamba_config.hpp>
#include <ssmlen/models/mamba_lm.hpp>

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ssmlen::models {

inline constexpr char const* config_metadata_key = "ssmlen.config";

namespace detail {

inline std::vector<std::int64_t> shape_of(io::st_file const& f, std::string const& name) {
  auto const it = f.tensors.find(name);
  check(it != f.tensors.end(), "checkpoint has no tensor '" + name + "', needed to infer the model configuration");
  return it->second.shape;
}

//! The configuration a file's metadata stores, parsed; none for a file without one. `where` prefixes the error.
inline std::optional<nlohmann::json> stored_config(io::st_file const& f, std::string const& where = "") {
  auto const it = f.metadata.find(config_metadata_key);
  if (it == f.metadata.end()) {
    return std::nullopt;
  }
  try {
    return nlohmann::json::parse(it->second);
  } catch (nlohmann::json::exception const& e) {
    throw error(where + "checkpoint metadata 'ssmlen.config' is not valid JSON: " + e.what());
  }
}

inline bool is_model_tensor(std::string const& name) { return name.rfind("optimizer.", 0) != 0; }

//! The Hugging Face spelling `backbone.embeddings.weight` is accepted for `backbone.embedding.weight`.
inline io::st_file normalize_names(io::st_file f) {
  auto const hf = f.tensors.find("backbone.embeddings.weight");
  if (hf != f.tensors.end()) {
    check(!f.tensors.contains("backbone.embedding.weight"),
          "checkpoint holds both backbone.embedding.weight and backbone.embeddings.weight");
    f.tensors["backbone.embedding.weight"] = std::move(hf->second);
    f.tensors.erase(hf);
  }
  return f;
}

}  // namespace detail

//! The configuration of a mamba_ssm-layout state dict, from its tensor shapes.
inline mamba_config infer_config(io::st_file const& f) {
  mamba_config c;
  auto const emb = detail::shape_of(f, "backbone.embedding.weight");
  check(emb.size() == 2, "backbone.embedding.weight must have rank 2 [vocab, d_model]");
  c.vocab = emb[0];
  c.d_model = emb[1];
  c.n_layers = 0;
  while (f.tensors.contains("backbone.layers." + std::to_string(c.n_layers) + ".norm.weight")) {
    ++c.n_layers;
  }
  check(c.n_layers > 0, "checkpoint has no backbone.layers.0.norm.weight: not a Mamba state dict");
  std::string const pre = "backbone.layers.0.mixer.";
  auto const in = detail::shape_of(f, pre + "in_proj.weight");
  auto const a = detail::shape_of(f, pre + "A_log");
  auto const conv = detail::shape_of(f, pre + "conv1d.weight");
  auto const dtw = detail::shape_of(f, pre + "dt_proj.weight");
  check(in.size() == 2 && a.size() == 2 && conv.size() == 3 && dtw.size() == 2,
        "layer 0 mixer tensors have unexpected ranks for a Mamba-1 block");
  std::int64_t const ed = in[0] / 2;
  check_arg(in[0] % 2 == 0 && ed % c.d_model == 0, "in_proj rows", in[0],
            "must be 2 * expand * d_model with d_model = " + std::to_string(c.d_model));
  c.expand = ed / c.d_model;
  c.d_state = a[1];
  c.d_conv = conv[2];
  c.dt_rank = dtw[1];
  c.tie_embeddings = !f.tensors.contains("lm_head.weight");
  c.validate();
  return c;
}

//! Copies every tensor of `f` into `m` (any model with named_params), checking names and shapes; throws naming the
//! first problems found.
template <class Model>
void load_parameters(Model& m, io::st_file const& f, std::string const& file_name) {
  std::set<std::string> expected;
  std::vector<std::string> problems;
  for (auto& p : m.named_params()) {
    expected.insert(p.name);
    auto const it = f.tensors.find(p.name);
    if (it == f.tensors.end()) {
      problems.push_back("missing tensor '" + p.name + "'");
      continue;
    }
    auto const& shape = it->second.shape;
    extents const& want = p.file_shape;
    bool same = static_cast<int>(shape.size()) == want.rank();
    for (int i = 0; same && i < want.rank(); ++i) {
      same = shape[static_cast<std::size_t>(i)] == want[i];
    }
    if (!same) {
      std::string got = "[";
      for (std::size_t i = 0; i < shape.size(); ++i) {
        got += (i ? ", " : "") + std::to_string(shape[i]);
      }
      problems.push_back("tensor '" + p.name + "' has shape " + got + "], expected " + want.str());
      continue;
    }
    auto const values = io::to_doubles(it->second);
    for (std::size_t i = 0; i < values.size(); ++i) {
      p.p->value[static_cast<std::int64_t>(i)] = static_cast<typename Model::value_type>(values[i]);
    }
  }
  for (auto const& [name, t] : f.tensors) {
    if (detail::is_model_tensor(name) && !expected.contains(name)) {
      problems.push_back("unexpected tensor '" + name + "'");
    }
  }
  if (!problems.empty()) {
    std::string msg = file_name + ": checkpoint does not match the model:";
    for (std::size_t i = 0; i < problems.size() && i < 8; ++i) {
      msg += "\n  " + problems[i];
    }
    if (problems.size() > 8) {
      msg += "\n  ... and " + std::to_string(problems.size() - 8) + " more";
    }
    throw error(msg);
  }
}

//! The configuration stored in (or inferred from) a loaded checkpoint file.
inline mamba_config checkpoint_config(io::st_file const& f) {
  auto const j = detail::stored_config(f);
  return j ? mamba_config_from_json(*j) : infer_config(f);
}

//! The model held by a loaded safetensors file; `file_name` names it in error messages.
template <class T = float, class Scan = scan::recurrent>
mamba_lm<T, Scan> model_from_safetensors(io::st_file const& file, std::string const& file_name) {
  auto const f = detail::normalize_names(file);
  mamba_lm<T, Scan> m(checkpoint_config(f), 0);
  load_parameters(m, f, file_name);
  return m;
}

//! Loads a model from a safetensors file written by ssmlen or exported from mamba_ssm / Hugging Face.
template <class T = float, class Scan = scan::recurrent>
mamba_lm<T, Scan> load_model(std::filesystem::path const& file) {
  return model_from_safetensors<T, Scan>(io::load_safetensors(file), file.string());
}

//! The model's parameters (and its configuration as metadata) as a safetensors file image; any model with
//! named_params and config_json (mamba_lm and the baselines of recurrent_lm.hpp, transformer_lm.hpp).
template <class Model>
io::st_file to_safetensors(Model& m, io::st_dtype type = io::st_dtype::f32,
                           std::map<std::string, std::string> metadata = {}) {
  using T = typename Model::value_type;
  io::st_file f;
  f.metadata = std::move(metadata);
  f.metadata["format"] = "pt";
  f.metadata[config_metadata_key] = m.config_json().dump();
  for (auto& p : m.named_params()) {
    std::vector<std::int64_t> shape;
    for (int i = 0; i < p.file_shape.rank(); ++i) {
      shape.push_back(p.file_shape[i]);
    }
    f.tensors[p.name] = io::from_values(shape, std::span<T const>(p.p->value.data(), p.p->value.size()), type);
  }
  return f;
}

//! Writes the model atomically (F32 or BF16), with optional extra string metadata.
template <class Model>
void save_model(std::filesystem::path const& file, Model& m, io::st_dtype type = io::st_dtype::f32,
                std::map<std::string, std::string> metadata = {}) {
  io::save_safetensors(file, to_safetensors(m, type, std::move(metadata)));
}

//! The architecture a checkpoint's stored configuration names: "mamba", "lstm", "gru", "transformer"; "mamba" for a
//! file without one (a mamba_ssm / Hugging Face state dict).
inline std::string checkpoint_architecture(io::st_file const& f) {
  auto const j = detail::stored_config(f);
  if (!j) {
    return "mamba";
  }
  auto const a = j->find("architecture");
  check(a != j->end() && a->is_string(), "checkpoint metadata 'ssmlen.config' names no architecture");
  return a->get<std::string>();
}

//! The model of type Model held by a loaded safetensors file that save_model wrote (a baseline, or a Mamba with its
//! stored configuration): the stored architecture must be Model's, and every tensor must match by name and shape.
template <class Model>
Model model_from_safetensors_as(io::st_file const& f, std::string const& file_name) {
  auto const j = detail::stored_config(f, file_name + ": ");
  check(j.has_value(), file_name + ": the checkpoint holds no model configuration ('" +
                           std::string(config_metadata_key) + "' in its metadata)");
  Model m(Model::config_from_json(*j), 0);
  load_parameters(m, f, file_name);
  return m;
}

template <class Model>
Model load_model_as(std::filesystem::path const& file) {
  return model_from_safetensors_as<Model>(io::load_safetensors(file), file.string());
}

}  // namespace ssmlen::models
