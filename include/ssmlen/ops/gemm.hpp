// SPDX-License-Identifier: Apache-2.0
//! @file gemm.hpp
//! Row-major general matrix multiply on the host:
//!   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C
//! C is cut into the fixed tile grid of gemm_tiling.hpp; each tile is one
//! single-threaded CBLAS call (OpenBLAS) or, without CBLAS, the blocked kernel.
//! Tiles never split K, so results are bit-identical on any thread count.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/ops/gemm_blocked.hpp>
#include <ssmlen/ops/gemm_problem.hpp>
#include <ssmlen/ops/gemm_tiling.hpp>

#include <cstdint>
#include <type_traits>

#if defined(SSMLEN_HAS_CBLAS)
#include <cblas.h>
#include <limits>
#endif

namespace ssmlen::ops {

#if defined(SSMLEN_HAS_CBLAS)
namespace detail {

#if defined(OPENBLAS_VERSION)
using cblas_int = blasint;  // 32 or 64 bits, as OpenBLAS was built
#else
using cblas_int = int;
#endif

//! OpenBLAS must not start its own threads inside ours: the threads are ours, one tile each.
inline void cblas_single_threaded() {
#if defined(OPENBLAS_VERSION)
  static bool const once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
#endif
}

template <class T>
void cblas_gemm_tile(trans ta, trans tb, gemm_tile_grid::tile const& t, std::int64_t k, T alpha, T const* a,
                     std::int64_t lda, T const* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  T const* at = ta == trans::n ? a + t.i0 * lda : a + t.i0;  // first row of op(A) in the tile
  T const* bt = tb == trans::n ? b + t.j0 : b + t.j0 * ldb;  // first column of op(B) in the tile
  T* ct = c + t.i0 * ldc + t.j0;
  auto const cta = ta == trans::n ? CblasNoTrans : CblasTrans;
  auto const ctb = tb == trans::n ? CblasNoTrans : CblasTrans;
  auto const bi = [](std::int64_t v) { return static_cast<cblas_int>(v); };
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, cta, ctb, bi(t.rows), bi(t.cols), bi(k), alpha, at, bi(lda), bt, bi(ldb), beta, ct,
                bi(ldc));
  } else {
    cblas_dgemm(CblasRowMajor, cta, ctb, bi(t.rows), bi(t.cols), bi(k), alpha, at, bi(lda), bt, bi(ldb), beta, ct,
                bi(ldc));
  }
}

}  // namespace detail
#endif

//! C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C for row-major float or double.
//! A is stored [M, K] (ta = n) or [K, M] (ta = t), B [K, N] (tb = n) or [N, K] (tb = t);
//! lda, ldb, ldc are row strides. beta == 0 means C is not read.
template <class T>
void gemm(backends::host const& be, trans ta, trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
          T const* a, std::int64_t lda, T const* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm supports float and double");
#if defined(SSMLEN_HAS_CBLAS)
  detail::check_gemm_args(ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
  if (m == 0 || n == 0) {
    return;
  }
  if (k == 0 || alpha == T(0)) {
    detail::gemm_scale_c(be, m, n, beta, c, ldc);
    return;
  }
  constexpr std::int64_t blas_max = std::numeric_limits<detail::cblas_int>::max();
  if (k > blas_max || lda > blas_max || ldb > blas_max || ldc > blas_max) {
    gemm_blocked(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);  // beyond a 32-bit CBLAS
    return;
  }
  detail::cblas_single_threaded();
  gemm_tile_grid const grid = gemm_tiles(m, n, k);
  be.parallel_for(grid.count(), [&](std::int64_t t) {
    detail::cblas_gemm_tile(ta, tb, grid.at(t), k, alpha, a, lda, b, ldb, beta, c, ldc);
  });
#else
  gemm_blocked(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

}  // namespace ssmlen::ops
