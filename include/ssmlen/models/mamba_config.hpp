// SPDX-License-Identifier: Apache-2.0
//! @file mamba_config.hpp
//! The shape of a Mamba language model, validated, with its JSON form (stored
//! in checkpoint metadata and in run directories).
#pragma once

#include <ssmlen/core/error.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace ssmlen::models {

struct mamba_config {
  std::int64_t vocab = 0;
  std::int64_t d_model = 64;
  std::int64_t n_layers = 4;
  std::int64_t d_state = 16;
  std::int64_t d_conv = 4;
  std::int64_t expand = 2;
  std::int64_t dt_rank = 0;  // 0: ceil(d_model / 16), as mamba_ssm's "auto"
  bool tie_embeddings = true;
  double norm_eps = 1e-5;
  // Δ = delta_min + softplus(·). Positive, it bounds every state channel's memory to about 1 / (delta_min · |A|)
  // tokens, so a long episode shows the state nothing older than training did. 0 is Mamba's Δ.
  double delta_min = 0;

  [[nodiscard]] std::int64_t d_inner() const { return expand * d_model; }
  [[nodiscard]] std::int64_t resolved_dt_rank() const { return dt_rank > 0 ? dt_rank : (d_model + 15) / 16; }

  void validate() const {
    check_arg(vocab > 0, "vocab", vocab, "must be positive");
    check_arg(d_model > 0, "d_model", d_model, "must be positive");
    check_arg(n_layers > 0, "n_layers", n_layers, "must be positive");
    check_arg(d_state > 0 && d_state <= 256, "d_state", d_state, "must be in [1, 256]");
    check_arg(d_conv >= 1 && d_conv <= 16, "d_conv", d_conv, "must be in [1, 16]");
    check_arg(expand > 0, "expand", expand, "must be positive");
    check_arg(dt_rank >= 0, "dt_rank", dt_rank, "must be non-negative (0 means automatic)");
    check_arg(norm_eps > 0, "norm_eps", norm_eps, "must be positive");
    check_arg(delta_min >= 0 && delta_min < 1, "delta_min", delta_min, "must be in [0, 1)");
  }

  friend bool operator==(mamba_config const&, mamba_config const&) = default;
};

inline nlohmann::json to_json(mamba_config const& c) {
  return {{"architecture", "mamba"},
          {"vocab", c.vocab},
          {"d_model", c.d_model},
          {"n_layers", c.n_layers},
          {"d_state", c.d_state},
          {"d_conv", c.d_conv},
          {"expand", c.expand},
          {"dt_rank", c.resolved_dt_rank()},
          {"tie_embeddings", c.tie_embeddings},
          {"norm_eps", c.norm_eps},
          {"delta_min", c.delta_min}};
}

//! Reads a configuration; unknown keys and wrong types are errors that name the key.
inline mamba_config mamba_config_from_json(nlohmann::json const& j) {
  check(j.is_object(), "model configuration must be a JSON object");
  mamba_config c;
  for (auto const& item : j.items()) {
    std::string const& key = item.key();  // named, not a structured binding: clang 14 cannot capture those
    auto const& value = item.value();
    auto integer = [&](std::int64_t& out) {
      check_arg(value.is_number_integer(), "model config key '" + key + "'", value.dump(), "must be an integer");
      out = value.get<std::int64_t>();
    };
    if (key == "architecture") {
      check_arg(value == "mamba", "architecture", value.dump(), "this model type is \"mamba\"");
    } else if (key == "vocab") {
      integer(c.vocab);
    } else if (key == "d_model") {
      integer(c.d_model);
    } else if (key == "n_layers") {
      integer(c.n_layers);
    } else if (key == "d_state") {
      integer(c.d_state);
    } else if (key == "d_conv") {
      integer(c.d_conv);
    } else if (key == "expand") {
      integer(c.expand);
    } else if (key == "dt_rank") {
      integer(c.dt_rank);
    } else if (key == "tie_embeddings") {
      check_arg(value.is_boolean(), "model config key 'tie_embeddings'", value.dump(), "must be true or false");
      c.tie_embeddings = value.get<bool>();
    } else if (key == "norm_eps") {
      check_arg(value.is_number(), "model config key 'norm_eps'", value.dump(), "must be a number");
      c.norm_eps = value.get<double>();
    } else if (key == "delta_min") {
      check_arg(value.is_number(), "model config key 'delta_min'", value.dump(), "must be a number");
      c.delta_min = value.get<double>();
    } else {
      throw error("unknown model config key '" + key + "'");
    }
  }
  c.validate();
  return c;
}

}  // namespace ssmlen::models
