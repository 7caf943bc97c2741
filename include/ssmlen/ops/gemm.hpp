// SPDX-License-Identifier: Apache-2.0
//! @file gemm.hpp
//! Row-major general matrix multiply on the host:
//!   C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C
//! (placeholder reference loop; the tiled CBLAS / blocked implementation replaces it).
#pragma once

#include <ssmlen/backends/host.hpp>

#include <cstdint>

namespace ssmlen::ops {

enum class trans { n, t };

template <class T>
void gemm(backends::host const& be, trans ta, trans tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha,
          T const* a, std::int64_t lda, T const* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
  be.parallel_for(m, [&](std::int64_t i) {
    for (std::int64_t j = 0; j < n; ++j) {
      T acc = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        T const av = ta == trans::n ? a[i * lda + p] : a[p * lda + i];
        T const bv = tb == trans::n ? b[p * ldb + j] : b[j * ldb + p];
        acc += av * bv;
      }
      c[i * ldc + j] = alpha * acc + (beta == T(0) ? T(0) : beta * c[i * ldc + j]);
    }
  });
}

}  // namespace ssmlen::ops
