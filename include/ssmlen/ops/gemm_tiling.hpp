// SPDX-License-Identifier: Apache-2.0
//! @file gemm_tiling.hpp
//! The fixed grid of C tiles that the host GEMMs distribute over threads. The grid
//! is a function of (m, n, k) only, never of the thread count, and each tile is
//! computed by one thread over the whole K range, so every element of C sees the
//! same arithmetic on 1 or N threads: results are bit-identical. Products with a
//! small C and a long K may instead be cut into fixed K chunks (gemm_k_chunks),
//! whose partial products are summed in chunk order: bit-identical as well.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ssmlen::ops {

//! A grid of tiles over C[M, N]: tiles_m x tiles_n tiles of at most tile_m x tile_n elements.
struct gemm_tile_grid {
  std::int64_t m = 0, n = 0;
  std::int64_t tile_m = 1, tile_n = 1;
  std::int64_t tiles_m = 0, tiles_n = 0;

  struct tile {
    std::int64_t i0, j0, rows, cols;  // C[i0 : i0 + rows, j0 : j0 + cols]
  };

  [[nodiscard]] constexpr std::int64_t count() const { return tiles_m * tiles_n; }

  //! Tile t in row-major tile order; edge tiles are smaller.
  [[nodiscard]] constexpr tile at(std::int64_t t) const {
    std::int64_t const i0 = (t / tiles_n) * tile_m;
    std::int64_t const j0 = (t % tiles_n) * tile_n;
    return {i0, j0, std::min(tile_m, m - i0), std::min(tile_n, n - j0)};
  }
};

//! Tile sizes for the shapes this library runs. Tall-skinny activations ([tokens, 32..512]
//! outputs) get row tiles of 256 x all columns: B is packed once per tile, A once in all.
//! Small outputs with a huge K (weight gradients) are halved, rows first, until there are
//! min_tiles tiles to share, but not below 64 x 32: each tile repacks its whole K range, and
//! thinner tiles lose more to that than they gain in balance. Columns above 512 are split
//! evenly. A kernel with an MR-row register block passes row_granule = MR so that every
//! tile but the last holds whole row panels.
[[nodiscard]] constexpr gemm_tile_grid gemm_tiles(std::int64_t m, std::int64_t n, std::int64_t k,
                                                  std::int64_t row_granule = 1) {
  constexpr std::int64_t max_tile_n = 512;
  constexpr std::int64_t start_tile_m = 256;
  constexpr std::int64_t min_tile_m = 64, min_tile_n = 32;
  constexpr std::int64_t min_tiles = 4;            // a few threads' worth
  constexpr std::int64_t min_tile_work = 1 << 18;  // multiply-adds below which a split is not worth a thread
  gemm_tile_grid g;
  g.m = m;
  g.n = n;
  if (m <= 0 || n <= 0) {
    return g;
  }
  auto const ceil_div = [](std::int64_t a, std::int64_t b) { return (a + b - 1) / b; };
  auto const round16 = [](std::int64_t v) { return (v + 15) / 16 * 16; };  // whole vector panels
  std::int64_t const col_tiles = ceil_div(n, max_tile_n);
  g.tile_n = col_tiles > 1 ? round16(ceil_div(n, col_tiles)) : n;
  g.tile_m = std::min(start_tile_m, m);
  std::int64_t const depth = std::max<std::int64_t>(k, 1);
  while (ceil_div(m, g.tile_m) * ceil_div(n, g.tile_n) < min_tiles) {
    if (g.tile_m / 2 >= min_tile_m && (g.tile_m / 2) * g.tile_n * depth >= min_tile_work) {
      g.tile_m /= 2;
    } else if (g.tile_n / 2 >= min_tile_n && g.tile_m * (g.tile_n / 2) * depth >= min_tile_work) {
      g.tile_n = round16(g.tile_n / 2);  // still below tile_n, as tile_n >= 64 here
    } else {
      break;
    }
  }
  if (row_granule > 1 && g.tile_m < m) {
    g.tile_m = std::min(m, ceil_div(g.tile_m, row_granule) * row_granule);  // up: the tile count stays
  }
  g.tiles_m = ceil_div(m, g.tile_m);
  g.tiles_n = ceil_div(n, g.tile_n);
  return g;
}

//! How many fixed K chunks a product with a small C and a long K is cut into (1: none). Weight gradients (C of at
//! most 256 x 256, K = tokens) would otherwise be cut into thin C tiles that each repack all of B; a chunk instead
//! packs its slices of A and B once (per core, 1.3-2x faster on the model's weight gradients). Chunks hold at least
//! 2048 of K, at most 8 chunks.
[[nodiscard]] constexpr std::int64_t gemm_k_chunks(std::int64_t m, std::int64_t n, std::int64_t k) {
  constexpr std::int64_t max_c = 256 * 256, min_chunk = 2048, max_chunks = 8;
  if (m <= 0 || n <= 0 || m * n > max_c) {
    return 1;
  }
  return std::clamp<std::int64_t>(k / min_chunk, 1, max_chunks);
}

}  // namespace ssmlen::ops
