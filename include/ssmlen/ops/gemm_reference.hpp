// SPDX-License-Identifier: Apache-2.0
//! @file gemm_reference.hpp
//! The GEMM oracle: a naive serial triple loop with a double accumulator, used by
//! tests to check the tiled CBLAS and blocked implementations. Slow on purpose.
#pragma once

#include <ssmlen/ops/gemm_problem.hpp>

#include <cstdint>

namespace ssmlen::ops {

//! C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C, row-major; beta == 0 means C is not read.
template <class T>
void gemm_reference(trans ta, trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, T const* a,
                    std::int64_t lda, T const* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  detail::check_gemm_args(ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        T const av = ta == trans::n ? a[i * lda + p] : a[p * lda + i];
        T const bv = tb == trans::n ? b[p * ldb + j] : b[j * ldb + p];
        acc += static_cast<double>(av) * static_cast<double>(bv);
      }
      double const prev = beta == T(0) ? 0.0 : static_cast<double>(beta) * static_cast<double>(c[i * ldc + j]);
      c[i * ldc + j] = alpha == T(0) ? static_cast<T>(prev) : static_cast<T>(static_cast<double>(alpha) * acc + prev);
    }
  }
}

}  // namespace ssmlen::ops
