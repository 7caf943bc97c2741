// Helpers shared by the language models' tests: random token streams, and one forward and backward whose every output
// bit is collected (logits, then every parameter's gradient), compared across thread counts.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <omp.h>
#include <vector>

#include "gradcheck.hpp"

namespace ssmlen::testing {

inline std::vector<std::int32_t> random_tokens(rng& g, std::int64_t n, std::int64_t vocab) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (auto& v : t) {
    v = static_cast<std::int32_t>(g.uniform_int(0, vocab - 1));
  }
  return t;
}

//! Logits of random tokens over `seqs`, then the gradient of every parameter for random dlogits, in one vector.
template <class Model>
std::vector<typename Model::value_type> logits_and_gradients(Model& m, sequences const& seqs, std::uint64_t seed) {
  backends::host const be;
  std::int64_t const v = m.config().vocab;
  rng g(seed);
  auto const tokens = random_tokens(g, seqs.tokens(), v);
  std::vector<typename Model::value_type> logits(static_cast<std::size_t>(seqs.tokens() * v)), dlogits(logits.size());
  fill_normal(dlogits, g);
  typename Model::cache k;
  m.forward(be, tokens, seqs, logits.data(), k);
  m.zero_grad();
  m.backward(be, dlogits.data(), k);
  for (auto& p : m.named_params()) {
    logits.insert(logits.end(), p.p->grad.begin(), p.p->grad.end());
  }
  return logits;
}

//! logits_and_gradients of the model `make()` returns, on 1, 2 and again 2 threads: every bit the same.
template <class Make>
void check_bit_identical_across_threads(Make&& make, sequences const& seqs) {
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    auto m = make();
    return logits_and_gradients(m, seqs, 4);
  };
  int const before = omp_get_max_threads();
  auto const a = run(1), b = run(2), c = run(2);
  omp_set_num_threads(before);
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
  CHECK(std::memcmp(b.data(), c.data(), b.size() * sizeof(b[0])) == 0);
}

}  // namespace ssmlen::testing
