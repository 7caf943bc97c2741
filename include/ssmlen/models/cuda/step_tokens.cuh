// SPDX-License-Identifier: Apache-2.0
//! @file step_tokens.cuh
//! How a recurrent step's token ids mark the rows that start a new sequence: fresh_token(t) feeds t to a state
//! zeroed first, so a rollout refills a freed slot through the same ids it sends every step. Read on the host (the
//! rollouts) and on the device (mamba_lm::step's kernels, the one-kernel step).
#pragma once

#include <ssmlen/config.hpp>

#include <cstdint>

namespace ssmlen::models::cuda {

//! The id that starts a new sequence with token t (negative: every token id is ≥ 0).
SSMLEN_HD constexpr std::int32_t fresh_token(std::int32_t t) { return -1 - t; }

//! The token an id feeds, fresh or not (fresh_token is its own inverse).
SSMLEN_HD constexpr std::int32_t token_of(std::int32_t id) { return id < 0 ? fresh_token(id) : id; }

}  // namespace ssmlen::models::cuda
