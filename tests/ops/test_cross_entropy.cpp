#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/ops/cross_entropy.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ops = ssmlen::ops;
using ssmlen::backends::host;

namespace {

struct batch {
  std::int64_t tokens, vocab;
  std::vector<double> logits;  // [tokens, vocab]
  std::vector<std::int32_t> targets;
  std::vector<std::uint8_t> mask;

  batch(std::int64_t t, std::int64_t v, std::uint64_t seed, double spread = 4.0) : tokens(t), vocab(v) {
    ssmlen::rng g(seed);
    logits.resize(static_cast<std::size_t>(t * v));
    for (auto& x : logits) {
      x = g.uniform(-spread, spread);
    }
    for (std::int64_t i = 0; i < t; ++i) {
      targets.push_back(static_cast<std::int32_t>(g.uniform_int(0, v - 1)));
      mask.push_back(g.uniform() < 0.7f ? 1 : 0);
    }
  }

  template <class T>
  std::vector<T> logits_as() const {
    return std::vector<T>(logits.begin(), logits.end());
  }

  // The textbook formula in double: -log(exp(x_y) / sum exp(x_v)), no max subtraction.
  double naive_loss(std::vector<double> const& x) const {
    double total = 0;
    for (std::int64_t t = 0; t < tokens; ++t) {
      if (!mask[t]) {
        continue;
      }
      double s = 0;
      for (std::int64_t v = 0; v < vocab; ++v) {
        s += std::exp(x[t * vocab + v]);
      }
      total -= std::log(std::exp(x[t * vocab + targets[t]]) / s);
    }
    return total;
  }
};

}  // namespace

TEST_CASE_TEMPLATE("cross_entropy: loss, count and gradient match a plain double computation", T, float, double) {
  batch const b(300, 37, 1);
  auto const x = b.logits_as<T>();
  std::vector<T> d(x.size(), T(7));
  std::int64_t const count = ops::masked_count(b.tokens, b.mask.data());
  auto const r = ops::softmax_cross_entropy(host{}, b.tokens, b.vocab, x.data(), b.targets.data(), b.mask.data(),
                                            d.data(), 1.0 / double(count));
  CHECK(r.count == count);
  CHECK(r.count > 150);
  double const tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  CHECK(r.loss == doctest::Approx(b.naive_loss(std::vector<double>(x.begin(), x.end()))).epsilon(tol));
  CHECK(r.mean() == doctest::Approx(r.loss / double(count)));
  for (std::int64_t t = 0; t < b.tokens; ++t) {
    double s = 0;
    for (std::int64_t v = 0; v < b.vocab; ++v) {
      s += std::exp(double(x[t * b.vocab + v]));
    }
    for (std::int64_t v = 0; v < b.vocab; ++v) {
      double const want =
          b.mask[t] ? (std::exp(double(x[t * b.vocab + v])) / s - (v == b.targets[t])) / double(count) : 0.0;
      REQUIRE(double(d[t * b.vocab + v]) == doctest::Approx(want).epsilon(tol).scale(1.0 / double(count)));
    }
  }
}

TEST_CASE("cross_entropy: the gradient matches finite differences of the loss (double)") {
  batch const b(6, 11, 2);
  auto x = b.logits_as<double>();
  std::vector<double> d(x.size());
  double const scale = 0.25;
  ops::softmax_cross_entropy(host{}, b.tokens, b.vocab, x.data(), b.targets.data(), b.mask.data(), d.data(), scale);
  auto loss = [&] {
    return ops::softmax_cross_entropy(host{}, b.tokens, b.vocab, x.data(), b.targets.data(), b.mask.data(),
                                      static_cast<double*>(nullptr))
        .loss;
  };
  double const h = 1e-5;
  for (std::size_t i = 0; i < x.size(); ++i) {
    double const x0 = x[i];
    x[i] = x0 + h;
    double const up = loss();
    x[i] = x0 - h;
    double const down = loss();
    x[i] = x0;
    REQUIRE(d[i] == doctest::Approx(scale * (up - down) / (2 * h)).epsilon(1e-6).scale(1e-2));
  }
}

TEST_CASE("cross_entropy: masked tokens add nothing, get zero gradient, and their inputs are not read") {
  batch b(200, 9, 3);
  std::vector<double> d1(b.logits.size(), 5.0);
  auto const r1 = ops::softmax_cross_entropy(host{}, b.tokens, b.vocab, b.logits.data(), b.targets.data(),
                                             b.mask.data(), d1.data());
  for (std::int64_t t = 0; t < b.tokens; ++t) {
    if (!b.mask[t]) {
      b.targets[t] = -1;  // padding
      for (std::int64_t v = 0; v < b.vocab; ++v) {
        b.logits[t * b.vocab + v] = std::numeric_limits<double>::quiet_NaN();
      }
    }
  }
  std::vector<double> d2(b.logits.size(), -5.0);
  auto const r2 = ops::softmax_cross_entropy(host{}, b.tokens, b.vocab, b.logits.data(), b.targets.data(),
                                             b.mask.data(), d2.data());
  CHECK(r1.loss == r2.loss);
  CHECK(r1.count == r2.count);
  for (std::int64_t t = 0; t < b.tokens; ++t) {
    for (std::int64_t v = 0; v < b.vocab; ++v) {
      auto const i = static_cast<std::size_t>(t * b.vocab + v);
      if (!b.mask[t]) {
        REQUIRE(d2[i] == 0.0);
        REQUIRE(d1[i] == 0.0);
      } else {
        REQUIRE(d1[i] == d2[i]);
      }
    }
  }
  // A null mask counts every token.
  std::vector<std::uint8_t> const all(static_cast<std::size_t>(b.tokens), 1);
  batch const c(50, 9, 4);
  auto const ra = ops::softmax_cross_entropy(host{}, c.tokens, c.vocab, c.logits.data(), c.targets.data(), all.data(),
                                             static_cast<double*>(nullptr));
  auto const rn = ops::softmax_cross_entropy(host{}, c.tokens, c.vocab, c.logits.data(), c.targets.data(),
                                             static_cast<std::uint8_t const*>(nullptr), static_cast<double*>(nullptr));
  CHECK(ra.loss == rn.loss);
  CHECK(rn.count == c.tokens);
}

TEST_CASE("cross_entropy: huge logits stay finite (max subtraction)") {
  std::vector<float> x = {1000.0f, 999.0f, -1000.0f, 3e38f, -3e38f, 0.0f};
  std::vector<std::int32_t> const y = {1, 1};
  std::vector<float> d(x.size());
  auto const r =
      ops::softmax_cross_entropy(host{}, 2, 3, x.data(), y.data(), static_cast<std::uint8_t const*>(nullptr), d.data());
  CHECK(std::isfinite(r.loss));
  double const first = std::log1p(std::exp(-1.0)) + 1.0;  // -log softmax([1000, 999, -1000])[1]
  CHECK(r.loss == doctest::Approx(first + 6e38).epsilon(1e-6));
  for (float g : d) {
    CHECK(std::isfinite(g));
  }
  CHECK(d[0] == doctest::Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
  CHECK(d[3] == doctest::Approx(1.0f));
  CHECK(d[4] == doctest::Approx(-1.0f));
}

TEST_CASE("cross_entropy: out-of-range targets of counted tokens are a clear error") {
  batch b(10, 5, 6);
  b.mask.assign(b.mask.size(), 1);
  b.targets[4] = 5;
  std::vector<double> d(b.logits.size(), 1.0);
  auto const before = d;
  CHECK_THROWS_WITH_AS(
      ops::softmax_cross_entropy(host{}, b.tokens, b.vocab, b.logits.data(), b.targets.data(), b.mask.data(), d.data()),
      doctest::Contains("cross_entropy target = 5: must be in [0, 5) (token 4)"), ssmlen::error);
  CHECK(d == before);
  b.targets[4] = -2;
  CHECK_THROWS_AS(
      ops::softmax_cross_entropy(host{}, b.tokens, b.vocab, b.logits.data(), b.targets.data(), b.mask.data(), d.data()),
      ssmlen::error);
  b.mask[4] = 0;  // masked out: its target is padding and not checked
  CHECK_NOTHROW(ops::softmax_cross_entropy(host{}, b.tokens, b.vocab, b.logits.data(), b.targets.data(), b.mask.data(),
                                           d.data()));
  CHECK_THROWS_AS(ops::softmax_cross_entropy(host{}, 3, 0, b.logits.data(), b.targets.data(), b.mask.data(), d.data()),
                  ssmlen::error);
}

#if defined(_OPENMP)
TEST_CASE("cross_entropy: bit-identical loss and gradient on 1 and 2 threads") {
  int const saved = omp_get_max_threads();
  batch const b(5000, 33, 8);
  auto const x = b.logits_as<float>();
  auto run = [&](int threads, std::vector<float>& d) {
    omp_set_num_threads(threads);
    return ops::softmax_cross_entropy(host{}, b.tokens, b.vocab, x.data(), b.targets.data(), b.mask.data(), d.data(),
                                      1e-3);
  };
  std::vector<float> d1(x.size()), d2(x.size());
  auto const r1 = run(1, d1);
  auto const r2 = run(2, d2);
  omp_set_num_threads(saved);
  CHECK(std::memcmp(&r1.loss, &r2.loss, sizeof(double)) == 0);
  CHECK(r1.count == r2.count);
  CHECK(std::memcmp(d1.data(), d2.data(), d1.size() * sizeof(float)) == 0);
}
#endif
