#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/ops/elementwise.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ops = ssmlen::ops;
using ssmlen::backends::host;

namespace {

// Central difference of f at x in double.
template <class F>
double derivative(F f, double x) {
  double const h = 1e-6 * std::max(1.0, std::abs(x));
  return (f(x + h) - f(x - h)) / (2 * h);
}

std::vector<double> sample_points() {
  std::vector<double> xs = {-30, -19.5, -5, -1, -1e-3, 0, 1e-3, 0.5, 3, 19.9, 20.1, 35};
  ssmlen::rng g(5);
  for (int i = 0; i < 50; ++i) {
    xs.push_back(g.uniform(-10.0, 10.0));
  }
  return xs;
}

}  // namespace

TEST_CASE("silu and softplus match their definitions, derivatives match finite differences") {
  for (double x : sample_points()) {
    double const sig = 1.0 / (1.0 + std::exp(-x));
    CHECK(ops::silu(x) == doctest::Approx(x * sig).epsilon(1e-12));
    CHECK(ops::silu(float(x)) == doctest::Approx(x * sig).epsilon(1e-5));
    // Above 20 softplus is x itself: off by e^-x < 2e-9, which float cannot see.
    CHECK(ops::softplus(x) == doctest::Approx(std::log1p(std::exp(x))).epsilon(x > 20 ? 1e-9 : 1e-12));
    CHECK(ops::softplus(float(x)) == doctest::Approx(std::log1p(std::exp(x))).epsilon(1e-5));
    if (std::abs(x - 20.0) > 1e-3) {  // the threshold is a (sub-ulp) kink
      CHECK(ops::softplus_grad(x) ==
            doctest::Approx(derivative([](double v) { return ops::softplus(v); }, x)).epsilon(1e-6));
    }
    CHECK(ops::silu_grad(x) == doctest::Approx(derivative([](double v) { return ops::silu(v); }, x)).epsilon(1e-6));
    CHECK(ops::softplus_grad(float(x)) == doctest::Approx(x > 20 ? 1.0 : sig).epsilon(1e-5));
  }
}

TEST_CASE("softplus and sigmoid stay finite and accurate at extreme inputs") {
  for (float x : {-1000.0f, -100.0f, -88.0f, 88.0f, 100.0f, 1000.0f, 1e30f}) {
    CHECK(std::isfinite(ops::softplus(x)));
    CHECK(ops::softplus(x) >= 0.0f);
    CHECK(std::isfinite(ops::silu(x)));
    CHECK(std::isfinite(ops::silu_grad(x)));
    CHECK(ops::softplus_grad(x) >= 0.0f);
    CHECK(ops::softplus_grad(x) <= 1.0f);
  }
  CHECK(ops::softplus(100.0f) == 100.0f);  // linear above the threshold, like PyTorch
  CHECK(ops::softplus(-100.0) == doctest::Approx(std::exp(-100.0)).epsilon(1e-12));
  CHECK(ops::softplus(-100.0f) < 1e-30f);
  CHECK(ops::silu(-1000.0f) == doctest::Approx(0.0f));
  CHECK(ops::silu(1000.0f) == 1000.0f);
}

TEST_CASE_TEMPLATE("array maps agree with the scalar functions, in place too", T, float, double) {
  host const be;
  std::int64_t const n = 40000;  // several chunks
  ssmlen::rng g(9);
  std::vector<T> x(n), dy(n), y(n), d(n);
  for (std::int64_t i = 0; i < n; ++i) {
    x[i] = static_cast<T>(g.uniform(-25.0, 25.0));
    dy[i] = static_cast<T>(g.uniform(-1.0, 1.0));
  }
  ops::silu(be, n, x.data(), y.data());
  ops::silu_backward(be, n, x.data(), dy.data(), d.data());
  for (std::int64_t i = 0; i < n; i += 97) {
    REQUIRE(y[i] == ops::silu(x[i]));
    REQUIRE(d[i] == dy[i] * ops::silu_grad(x[i]));
  }
  ops::softplus(be, n, x.data(), y.data());
  ops::softplus_backward(be, n, x.data(), dy.data(), d.data());
  for (std::int64_t i = 0; i < n; i += 97) {
    REQUIRE(y[i] == ops::softplus(x[i]));
    REQUIRE(d[i] == dy[i] * ops::softplus_grad(x[i]));
  }
  ops::exponential(be, n, x.data(), y.data());
  for (std::int64_t i = 0; i < n; i += 97) {
    REQUIRE(y[i] == doctest::Approx(std::exp(double(x[i]))).epsilon(1e-6));
  }
  std::vector<T> z = x;
  ops::add(be, n, x.data(), dy.data(), y.data());
  ops::mul(be, n, x.data(), dy.data(), d.data());
  ops::axpy(be, n, T(2), dy.data(), z.data());
  for (std::int64_t i = 0; i < n; i += 97) {
    REQUIRE(y[i] == x[i] + dy[i]);
    REQUIRE(d[i] == x[i] * dy[i]);
    REQUIRE(z[i] == x[i] + T(2) * dy[i]);
  }
  ops::scale(be, n, T(-0.5), z.data());
  for (std::int64_t i = 0; i < n; i += 97) {
    REQUIRE(z[i] == (x[i] + T(2) * dy[i]) * T(-0.5));
  }
  std::vector<T> const x0 = x;
  ops::silu(be, n, x.data(), x.data());  // aliasing input and output is allowed
  for (std::int64_t i = 0; i < n; i += 97) {
    REQUIRE(x[i] == ops::silu(x0[i]));
  }
}

TEST_CASE("array maps reject a negative count and null arrays") {
  host const be;
  std::vector<float> x(4, 1.0f);
  CHECK_THROWS_AS(ops::silu(be, -1, x.data(), x.data()), ssmlen::error);
  CHECK_THROWS_AS(ops::add(be, 4, x.data(), static_cast<float const*>(nullptr), x.data()), ssmlen::error);
  CHECK_NOTHROW(ops::softplus(be, 0, static_cast<float const*>(nullptr), static_cast<float*>(nullptr)));
}
