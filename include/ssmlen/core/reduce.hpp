// SPDX-License-Identifier: Apache-2.0
//! @file reduce.hpp
//! Deterministic parallel reductions: partial sums over fixed-size row blocks,
//! combined in block order, so the result does not depend on the thread count.
#pragma once

#include <ssmlen/backends/host.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ssmlen {

//! out[c] += sum over rows r of x[r * cols + c]  (x: [rows, cols]).
template <class T>
void add_column_sums(backends::host const& be, T const* x, std::int64_t rows, std::int64_t cols, T* out) {
  constexpr std::int64_t block_rows = 256;
  std::int64_t const blocks = (rows + block_rows - 1) / block_rows;
  std::vector<T> partial(static_cast<std::size_t>(blocks * cols), T(0));  // [blocks, cols]
  be.parallel_for(blocks, [&](std::int64_t b) {
    T* p = partial.data() + b * cols;
    std::int64_t const r1 = std::min(rows, (b + 1) * block_rows);
    for (std::int64_t r = b * block_rows; r < r1; ++r) {
      T const* row = x + r * cols;
      for (std::int64_t c = 0; c < cols; ++c) {
        p[c] += row[c];
      }
    }
  });
  for (std::int64_t b = 0; b < blocks; ++b) {
    for (std::int64_t c = 0; c < cols; ++c) {
      out[c] += partial[static_cast<std::size_t>(b * cols + c)];
    }
  }
}

}  // namespace ssmlen
