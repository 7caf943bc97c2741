// SPDX-License-Identifier: Apache-2.0
//! @file host.hpp
//! The host backend: plain C++ parallelized with OpenMP. Work is always split
//! into the same fixed tiles whatever the thread count, and every reduction
//! runs in a fixed order, so results are bit-identical on 1 or N threads.
#pragma once

#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ssmlen::backends {

struct host {
  //! Runs body(i) for i in [0, n), spread over threads; iterations must be independent.
  template <class Body>
  void parallel_for(std::int64_t n, Body&& body) const {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n > 1)
#endif
    for (std::int64_t i = 0; i < n; ++i) {
      body(i);
    }
  }

  //! parallel_for for items of uneven cost (sequences of different lengths): threads take items as they
  //! finish. Each item's result must not depend on which thread runs it, so results stay deterministic.
  template <class Body>
  void parallel_for_uneven(std::int64_t n, Body&& body) const {
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
#endif
    for (std::int64_t i = 0; i < n; ++i) {
      body(i);
    }
  }

  //! Threads available to parallel_for.
  [[nodiscard]] static int threads() {
#if defined(_OPENMP)
    return omp_get_max_threads();
#else
    return 1;
#endif
  }

  friend bool operator==(host, host) { return true; }
};

}  // namespace ssmlen::backends
