// SPDX-License-Identifier: Apache-2.0
//! @file gemm_blocked.hpp
//! A portable GEMM that needs no BLAS: the Goto/BLIS loop nest (K blocks, packed B
//! panel, packed A block, an MR x NR register-blocked micro-kernel the compiler
//! vectorizes), run single-threaded per C tile of the fixed grid in gemm_tiling.hpp.
//! Always compiled, so tests check it even where CBLAS is available.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/ops/gemm_problem.hpp>
#include <ssmlen/ops/gemm_tiling.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace ssmlen::ops {
namespace detail {

//! Register and cache blocking. MR x NR accumulators fill 12 of 16 AVX2 registers;
//! an MC x KC block of A stays in L2, a KC x NR sliver of B in L1.
template <class T>
struct blocked_gemm_params {
  static constexpr int mr = 6;
  static constexpr int nr = 64 / sizeof(T);  // two 32-byte vectors
  static constexpr std::int64_t kc = 256;
  static constexpr std::int64_t mc = 96;
};

//! a * b + c with one rounding where the target has FMA, so every build has one fixed rounding per step.
template <class T>
inline T madd(T a, T b, T c) {
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

//! acc[MR, NR] = sum over p < kc of ap[p, MR] (outer) bp[p, NR]; panels are packed and zero-padded.
template <class T, int MR, int NR>
inline void gemm_micro_kernel(std::int64_t kc, T const* __restrict ap, T const* __restrict bp, T* __restrict acc) {
  T c[MR][NR] = {};
  for (std::int64_t p = 0; p < kc; ++p) {
    T const* __restrict a = ap + p * MR;
    T const* __restrict b = bp + p * NR;
    for (int i = 0; i < MR; ++i) {
      T const ai = a[i];
#if defined(_OPENMP)
#pragma omp simd  // keeps the accumulators in vector registers (full-width FMAs) under any -std mode
#endif
      for (int j = 0; j < NR; ++j) {
        c[i][j] = madd(ai, b[j], c[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      acc[i * NR + j] = c[i][j];
    }
  }
}

//! Packs op(A)[i0 : i0 + mc, p0 : p0 + kc] into MR-row panels: dst[panel][p][MR], zero rows past mc.
//! The loops follow the stored layout so the reads are contiguous.
template <class T, int MR>
void pack_a(trans ta, T const* a, std::int64_t lda, std::int64_t i0, std::int64_t p0, std::int64_t mc, std::int64_t kc,
            T* dst) {
  for (std::int64_t ir = 0; ir < mc; ir += MR) {
    int const rows = static_cast<int>(std::min<std::int64_t>(MR, mc - ir));
    T* d = dst + ir * kc;  // [kc][MR]
    if (rows < MR) {
      std::fill(d, d + kc * MR, T(0));
    }
    if (ta == trans::n) {  // A[i0 + ir + i, p0 + p]: rows of A are contiguous in p
      for (int i = 0; i < rows; ++i) {
        T const* src = a + (i0 + ir + i) * lda + p0;
        for (std::int64_t p = 0; p < kc; ++p) {
          d[p * MR + i] = src[p];
        }
      }
    } else {  // A[p0 + p, i0 + ir + i]: contiguous in i
      for (std::int64_t p = 0; p < kc; ++p) {
        T const* src = a + (p0 + p) * lda + i0 + ir;
        for (int i = 0; i < rows; ++i) {
          d[p * MR + i] = src[i];
        }
      }
    }
  }
}

//! Packs op(B)[p0 : p0 + kc, j0 : j0 + nc] into NR-column panels: dst[panel][p][NR], zero columns past nc.
template <class T, int NR>
void pack_b(trans tb, T const* b, std::int64_t ldb, std::int64_t p0, std::int64_t j0, std::int64_t kc, std::int64_t nc,
            T* dst) {
  for (std::int64_t jr = 0; jr < nc; jr += NR) {
    int const cols = static_cast<int>(std::min<std::int64_t>(NR, nc - jr));
    T* d = dst + jr * kc;  // [kc][NR]
    if (cols < NR) {
      std::fill(d, d + kc * NR, T(0));
    }
    if (tb == trans::n) {  // B[p0 + p, j0 + jr + j]: contiguous in j
      for (std::int64_t p = 0; p < kc; ++p) {
        T const* src = b + (p0 + p) * ldb + j0 + jr;
        for (int j = 0; j < cols; ++j) {
          d[p * NR + j] = src[j];
        }
      }
    } else {  // B stored [N, K]: B[j0 + jr + j, p0 + p] is contiguous in p
      for (int j = 0; j < cols; ++j) {
        T const* src = b + (j0 + jr + j) * ldb + p0;
        for (std::int64_t p = 0; p < kc; ++p) {
          d[p * NR + j] = src[p];
        }
      }
    }
  }
}

//! One C tile on the calling thread: C[i0 : i0 + rows, j0 : j0 + cols], the full K range.
//! Every tile uses the same K blocks, so each element of C is summed in the same order whatever the grid.
template <class T>
void gemm_blocked_tile(trans ta, trans tb, std::int64_t i0, std::int64_t j0, std::int64_t rows, std::int64_t cols,
                       std::int64_t k, T alpha, T const* a, std::int64_t lda, T const* b, std::int64_t ldb, T beta,
                       T* c, std::int64_t ldc) {
  using prm = blocked_gemm_params<T>;
  constexpr int mr = prm::mr, nr = prm::nr;
  std::int64_t const kc_max = std::min(prm::kc, k);
  std::int64_t const mc_max = std::min(prm::mc, (rows + mr - 1) / mr * mr);
  std::int64_t const nc_pad = (cols + nr - 1) / nr * nr;
  thread_local std::vector<T> a_pack, b_pack;  // reused across tiles and calls on this thread
  a_pack.resize(static_cast<std::size_t>(mc_max * kc_max));
  b_pack.resize(static_cast<std::size_t>(nc_pad * kc_max));
  alignas(64) T acc[mr * nr];
  for (std::int64_t p0 = 0; p0 < k; p0 += prm::kc) {
    std::int64_t const kc = std::min(prm::kc, k - p0);
    bool const first = p0 == 0;
    pack_b<T, nr>(tb, b, ldb, p0, j0, kc, cols, b_pack.data());  // [cols / NR][kc][NR]
    for (std::int64_t ic = 0; ic < rows; ic += prm::mc) {
      std::int64_t const mc = std::min(prm::mc, rows - ic);
      pack_a<T, mr>(ta, a, lda, i0 + ic, p0, mc, kc, a_pack.data());  // [mc / MR][kc][MR]
      for (std::int64_t jr = 0; jr < cols; jr += nr) {
        int const nn = static_cast<int>(std::min<std::int64_t>(nr, cols - jr));
        for (std::int64_t ir = 0; ir < mc; ir += mr) {
          int const mm = static_cast<int>(std::min<std::int64_t>(mr, mc - ir));
          gemm_micro_kernel<T, mr, nr>(kc, a_pack.data() + ir * kc, b_pack.data() + jr * kc, acc);
          for (int i = 0; i < mm; ++i) {
            T* crow = c + (i0 + ic + ir + i) * ldc + j0 + jr;
            T const* arow = acc + i * nr;
            if (!first) {
              for (int j = 0; j < nn; ++j) {
                crow[j] += alpha * arow[j];
              }
            } else if (beta == T(0)) {
              for (int j = 0; j < nn; ++j) {
                crow[j] = alpha * arow[j];
              }
            } else {
              for (int j = 0; j < nn; ++j) {
                crow[j] = alpha * arow[j] + beta * crow[j];
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace detail

//! C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C, row-major, with the portable blocked kernel.
//! beta == 0 means C is not read. Bit-identical on any thread count.
template <class T>
void gemm_blocked(backends::host const& be, trans ta, trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
                  T const* a, std::int64_t lda, T const* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm_blocked supports float and double");
  detail::check_gemm_args(ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0 || alpha == T(0)) {
    detail::gemm_scale_c(be, m, n, beta, c, ldc);
    return;
  }
  gemm_tile_grid const grid = gemm_tiles(m, n, k, detail::blocked_gemm_params<T>::mr);
  be.parallel_for(grid.count(), [&](std::int64_t t) {
    auto const tile = grid.at(t);
    detail::gemm_blocked_tile(ta, tb, tile.i0, tile.j0, tile.rows, tile.cols, k, alpha, a, lda, b, ldb, beta, c, ldc);
  });
}

}  // namespace ssmlen::ops
