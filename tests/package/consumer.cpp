// A program outside the ssmlen tree, built by the package tests: linking ssmlen::ssmlen must bring C++20,
// OpenMP and, when the package was built with it, CBLAS (headers, the SSMLEN_HAS_CBLAS macro and the library).
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/tensor.hpp>

#if defined(SSMLEN_HAS_CBLAS)
#include <cblas.h>
#endif

#include <cmath>
#include <cstdio>

static_assert(__cplusplus >= 202002L, "ssmlen::ssmlen requires C++20 of its users");

int main() {
  ssmlen::tensor<float> t({2, 3});  // [2, 3]
  ssmlen::rng g(7);
  for (auto& x : t) {
    x = g.uniform();
  }
  bool ok = true;
  double sum = 0, sum_sq = 0;
  for (float const x : t) {
    ok = ok && x >= 0.0f && x < 1.0f;
    sum += x;
    sum_sq += double{x} * x;
  }
#if defined(_OPENMP)
  char const* openmp = "yes";
#else
  char const* openmp = "no";
#endif
#if defined(SSMLEN_HAS_CBLAS)
  char const* cblas = "yes";
  float const dot = cblas_sdot(static_cast<int>(t.size()), t.data(), 1, t.data(), 1);
  ok = ok && std::abs(dot - sum_sq) < 1e-5;
#else
  char const* cblas = "no";
#endif
  std::printf("ssmlen consumer: shape %s, sum %.4f, openmp %s, cblas %s\n", t.shape().str().c_str(), sum, openmp,
              cblas);
  return ok ? 0 : 1;
}
