// SPDX-License-Identifier: Apache-2.0
//! @file config_json.hpp
//! Strict reading of a model configuration from JSON (checkpoint metadata): the architecture must be named and be
//! the model's own, every key must be known, and each value must have its field's type; errors name the key.
#pragma once

#include <ssmlen/core/error.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace ssmlen::models::detail {

//! A configuration field: an integer or a number, by address.
struct config_field {
  std::string_view key;
  std::int64_t* integer = nullptr;
  double* number = nullptr;
};

inline void read_config(nlohmann::json const& j, std::string_view architecture,
                        std::initializer_list<config_field> fields) {
  check(j.is_object(), "model configuration must be a JSON object");
  check(j.contains("architecture"),
        "model configuration names no 'architecture' (this model type is \"" + std::string(architecture) + "\")");
  for (auto const& item : j.items()) {
    std::string const& key = item.key();
    auto const& value = item.value();
    if (key == "architecture") {
      check_arg(value == architecture, "architecture", value.dump(),
                "this model type is \"" + std::string(architecture) + "\"");
      continue;
    }
    auto const f = std::find_if(fields.begin(), fields.end(), [&](config_field const& c) { return c.key == key; });
    if (f == fields.end()) {
      throw error("unknown model config key '" + key + "'");
    }
    if (f->integer != nullptr) {
      check_arg(value.is_number_integer(), "model config key '" + key + "'", value.dump(), "must be an integer");
      *f->integer = value.get<std::int64_t>();
    } else {
      check_arg(value.is_number(), "model config key '" + key + "'", value.dump(), "must be a number");
      *f->number = value.get<double>();
    }
  }
}

}  // namespace ssmlen::models::detail
