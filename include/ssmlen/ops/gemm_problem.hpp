// SPDX-License-Identifier: Apache-2.0
//! @file gemm_problem.hpp
//! What every GEMM implementation shares: the transpose flag, the argument checks
//! (so each entry point rejects bad shapes the same way, before touching memory),
//! and the degenerate cases k == 0 / alpha == 0, where C = beta * C.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>

#include <algorithm>
#include <cstdint>

namespace ssmlen::ops {

//! How a row-major operand is read: as stored (n) or transposed (t).
enum class trans { n, t };

namespace detail {

//! Validates C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C on row-major storage.
//! A is stored [M, K] (n) or [K, M] (t); B is stored [K, N] (n) or [N, K] (t).
template <class T>
void check_gemm_args(trans ta, trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T const* a, std::int64_t lda,
                     T const* b, std::int64_t ldb, T const* c, std::int64_t ldc) {
  check_arg(m >= 0, "gemm m", m, "must be non-negative");
  check_arg(n >= 0, "gemm n", n, "must be non-negative");
  check_arg(k >= 0, "gemm k", k, "must be non-negative");
  std::int64_t const a_cols = ta == trans::n ? k : m;
  std::int64_t const b_cols = tb == trans::n ? n : k;
  check_arg(lda >= std::max<std::int64_t>(1, a_cols), "gemm lda", lda, "must be at least max(1, row length of A)");
  check_arg(ldb >= std::max<std::int64_t>(1, b_cols), "gemm ldb", ldb, "must be at least max(1, row length of B)");
  check_arg(ldc >= std::max<std::int64_t>(1, n), "gemm ldc", ldc, "must be at least max(1, n)");
  bool const reads_ab = m > 0 && n > 0 && k > 0;
  check_arg(!reads_ab || a != nullptr, "gemm a", static_cast<void const*>(a), "must not be null");
  check_arg(!reads_ab || b != nullptr, "gemm b", static_cast<void const*>(b), "must not be null");
  check_arg(m == 0 || n == 0 || c != nullptr, "gemm c", static_cast<void const*>(c), "must not be null");
}

//! C = beta * C, and C = 0 when beta == 0 (C is then not read, so NaN garbage is cleared).
template <class T>
void gemm_scale_c(backends::host const& be, std::int64_t m, std::int64_t n, T beta, T* c, std::int64_t ldc) {
  be.parallel_for(m, [&](std::int64_t i) {
    T* row = c + i * ldc;
    for (std::int64_t j = 0; j < n; ++j) {
      row[j] = beta == T(0) ? T(0) : beta * row[j];
    }
  });
}

}  // namespace detail
}  // namespace ssmlen::ops
