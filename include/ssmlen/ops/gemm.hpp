// SPDX-License-Identifier: Apache-2.0
//! @file gemm.hpp
//! Row-major general matrix multiply on the host:
//!   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C
//! C is cut into the fixed tile grid of gemm_tiling.hpp; each tile is one
//! single-threaded CBLAS call (OpenBLAS) or, without CBLAS, the blocked kernel.
//! Tiles never split K; a small C with a long K is instead cut into fixed K chunks
//! summed in order. Either way results are bit-identical on any thread count.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/ops/gemm_blocked.hpp>
#include <ssmlen/ops/gemm_problem.hpp>
#include <ssmlen/ops/gemm_tiling.hpp>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

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

//! Partial products of the K chunks, kept per calling thread: a fresh buffer (up to 2 MB) would page-fault every call.
template <class T>
std::vector<T>& k_chunk_workspace() {
  thread_local std::vector<T> partial;
  return partial;
}

//! C = beta C + Σ_p alpha op(A)[:, K_p] op(B)[K_p, :] over the fixed chunks K_p, one CBLAS call each, summed in
//! chunk order.
template <class T>
void cblas_gemm_k_chunks(backends::host const& be, std::int64_t chunks, trans ta, trans tb, std::int64_t m,
                         std::int64_t n, std::int64_t k, T alpha, T const* a, std::int64_t lda, T const* b,
                         std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  std::int64_t const len = (k + chunks - 1) / chunks;
  auto& partial = k_chunk_workspace<T>();  // [chunks, M, N]
  partial.resize(static_cast<std::size_t>(chunks * m * n));
  be.parallel_for(chunks, [&](std::int64_t p) {
    std::int64_t const k0 = std::min(k, p * len), kl = std::min(len, k - k0);
    T const* ap = ta == trans::n ? a + k0 : a + k0 * lda;  // columns k0.. of op(A)
    T const* bp = tb == trans::n ? b + k0 * ldb : b + k0;  // rows k0.. of op(B)
    gemm_tile_grid::tile const whole{0, 0, m, n};
    cblas_gemm_tile(ta, tb, whole, kl, alpha, ap, lda, bp, ldb, T(0), partial.data() + p * m * n, n);
  });
  be.parallel_for(m, [&](std::int64_t i) {
    T* row = c + i * ldc;
    for (std::int64_t j = 0; j < n; ++j) {
      row[j] = beta == T(0) ? T(0) : beta * row[j];
    }
    for (std::int64_t p = 0; p < chunks; ++p) {
      T const* part = partial.data() + (p * m + i) * n;
      for (std::int64_t j = 0; j < n; ++j) {
        row[j] += part[j];
      }
    }
  });
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
  if (std::int64_t const chunks = gemm_k_chunks(m, n, k); chunks > 1) {
    detail::cblas_gemm_k_chunks(be, chunks, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  gemm_tile_grid const grid = gemm_tiles(m, n, k);
  be.parallel_for(grid.count(), [&](std::int64_t t) {
    detail::cblas_gemm_tile(ta, tb, grid.at(t), k, alpha, a, lda, b, ldb, beta, c, ldc);
  });
#else
  gemm_blocked(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

}  // namespace ssmlen::ops
