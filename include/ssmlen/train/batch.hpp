// SPDX-License-Identifier: Apache-2.0
//! @file batch.hpp
//! A packed training batch for next-token prediction: sequence s contributes its
//! tokens[0..n-2] as inputs and tokens[1..n-1] as targets, with a loss mask per
//! target (1 = the model must predict it). No padding: sequences are packed.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/core/sequences.hpp>

#include <cstdint>
#include <span>
#include <vector>

namespace ssmlen::train {

struct batch {
  sequences seqs;                     // packed layout of inputs/targets
  std::vector<std::int32_t> inputs;   // [T]
  std::vector<std::int32_t> targets;  // [T]
  std::vector<std::uint8_t> mask;     // [T]: 1 where the target is a model token
  std::vector<std::int64_t> lengths;  // per sequence

  //! Appends one sequence; `predict[i]` says whether token i is trained on (i >= 1).
  void add(std::span<const std::int32_t> tokens, std::span<const std::uint8_t> predict) {
    check_arg(tokens.size() >= 2, "sequence length", tokens.size(), "must be at least 2 to predict anything");
    check_arg(predict.size() == tokens.size(), "mask length", predict.size(),
              "must equal the sequence length " + std::to_string(tokens.size()));
    inputs.insert(inputs.end(), tokens.begin(), tokens.end() - 1);
    targets.insert(targets.end(), tokens.begin() + 1, tokens.end());
    mask.insert(mask.end(), predict.begin() + 1, predict.end());
    lengths.push_back(static_cast<std::int64_t>(tokens.size()) - 1);
  }

  //! Call after the last add().
  void finish() { seqs = sequences::from_lengths(lengths); }

  [[nodiscard]] std::int64_t tokens() const { return static_cast<std::int64_t>(inputs.size()); }
};

}  // namespace ssmlen::train
