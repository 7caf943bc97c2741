// SPDX-License-Identifier: Apache-2.0
//! @file device_sequences.cuh
//! A packed batch of variable-length sequences whose offsets live on the device
//! (the device view of core/sequences.hpp): sequence s owns token rows
//! [offsets[s], offsets[s+1]); `tokens` (= offsets[count]) is known to the host.
#pragma once

#include <cstdint>

namespace ssmlen {

struct device_sequences {
  std::int64_t const* offsets = nullptr;  // [count + 1], device memory
  std::int64_t count = 0;
  std::int64_t tokens = 0;
  // Optional: the sequences' checkpoint offsets for one checkpoint interval ([count + 1], device memory, as
  // scan::checkpoint_offsets), made once for a batch; a scan that checkpoints at that interval reads them instead of
  // computing them in every call (a model's layers share one batch).
  std::int64_t const* checkpoint_offsets = nullptr;
  std::int64_t checkpoint_interval = 0;
};

}  // namespace ssmlen
