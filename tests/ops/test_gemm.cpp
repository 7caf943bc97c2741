#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/ops/gemm.hpp>
#include <ssmlen/ops/gemm_blocked.hpp>
#include <ssmlen/ops/gemm_reference.hpp>
#include <ssmlen/ops/gemm_tiling.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

namespace ops = ssmlen::ops;
using ops::trans;
using ssmlen::backends::host;

template <class T>
std::vector<T> random_matrix(std::int64_t rows, std::int64_t ld, std::uint64_t seed) {
  ssmlen::rng g(seed);
  std::vector<T> v(static_cast<std::size_t>(rows * ld));
  for (auto& x : v) {
    x = static_cast<T>(g.uniform(-1.0, 1.0));
  }
  return v;
}

// One GEMM problem with padded leading dimensions and random contents (padding included).
template <class T>
struct problem {
  trans ta, tb;
  std::int64_t m, n, k, lda, ldb, ldc;
  std::vector<T> a, b, c0;
  std::vector<double> abs_products;  // [m, n]: sum over p of |op(A)[i, p] op(B)[p, j]|

  problem(trans ta_, trans tb_, std::int64_t m_, std::int64_t n_, std::int64_t k_, std::int64_t pad, std::uint64_t seed)
      : ta(ta_), tb(tb_), m(m_), n(n_), k(k_) {
    std::int64_t const a_rows = ta == trans::n ? m : k, a_cols = ta == trans::n ? k : m;
    std::int64_t const b_rows = tb == trans::n ? k : n, b_cols = tb == trans::n ? n : k;
    lda = a_cols + pad;
    ldb = b_cols + pad;
    ldc = n + pad;
    a = random_matrix<T>(a_rows, lda, seed);
    b = random_matrix<T>(b_rows, ldb, seed + 1);
    c0 = random_matrix<T>(m, ldc, seed + 2);
    abs_products.resize(static_cast<std::size_t>(m * n));
    for (std::int64_t i = 0; i < m; ++i) {
      for (std::int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (std::int64_t p = 0; p < k; ++p) {
          double const av = ta == trans::n ? a[i * lda + p] : a[p * lda + i];
          double const bv = tb == trans::n ? b[p * ldb + j] : b[j * ldb + p];
          s += std::abs(av * bv);
        }
        abs_products[static_cast<std::size_t>(i * n + j)] = s;
      }
    }
  }

  template <class Gemm>
  std::vector<T> run(Gemm&& gemm, T alpha, T beta) const {
    std::vector<T> c = c0;
    gemm(ta, tb, m, n, k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc);
    return c;
  }

  // Forward error bound of a length-k dot product: (k + 2) eps (|alpha| sum |a||b| + |beta c|).
  T bound(std::int64_t i, std::int64_t j, T alpha, T beta) const {
    double const mag = std::abs(double(alpha)) * abs_products[static_cast<std::size_t>(i * n + j)] +
                       (beta == T(0) ? 0.0 : std::abs(double(beta) * c0[i * ldc + j]));
    return static_cast<T>((k + 2) * std::numeric_limits<T>::epsilon() * mag + 4 * std::numeric_limits<T>::min());
  }
};

auto const reference = [](auto... args) { ops::gemm_reference(args...); };
auto const tiled = [](auto... args) { ops::gemm(host{}, args...); };
auto const blocked = [](auto... args) { ops::gemm_blocked(host{}, args...); };

// Checks got against the reference: within the error bound inside C, padding columns untouched.
template <class T>
void check_against_reference(problem<T> const& p, std::vector<T> const& got, T alpha, T beta) {
  std::vector<T> const want = p.run(reference, alpha, beta);
  int bad = 0;
  for (std::int64_t i = 0; i < p.m; ++i) {
    for (std::int64_t j = 0; j < p.ldc; ++j) {
      auto const at = static_cast<std::size_t>(i * p.ldc + j);
      bool const ok = j < p.n ? std::abs(got[at] - want[at]) <= p.bound(i, j, alpha, beta)
                              : std::memcmp(&got[at], &p.c0[at], sizeof(T)) == 0;  // padding untouched, NaN too
      bad += !ok;
    }
  }
  CHECK_MESSAGE(bad == 0, "m=" << p.m << " n=" << p.n << " k=" << p.k << " ta=" << int(p.ta) << " tb=" << int(p.tb)
                               << " alpha=" << alpha << " beta=" << beta);
}

template <class T, class Gemm>
void check_all_cases(Gemm&& gemm) {
  std::int64_t const dims[] = {1, 3, 17, 65};
  T const scales[][2] = {{1, 0}, {T(0.5), T(-1.5)}, {-2, 1}};
  std::uint64_t seed = 10;
  for (trans ta : {trans::n, trans::t}) {
    for (trans tb : {trans::n, trans::t}) {
      for (auto m : dims) {
        for (auto n : dims) {
          for (auto k : dims) {
            problem<T> const p(ta, tb, m, n, k, (m + n + k) % 2 ? 3 : 0, seed += 3);
            for (auto const& s : scales) {
              check_against_reference(p, p.run(gemm, s[0], s[1]), s[0], s[1]);
            }
          }
        }
      }
      // Shapes that cross the K blocking, several tiles of the grid and the micro-kernel edges.
      problem<T> const big(ta, tb, 150, 70, 300, 5, seed += 3);
      check_against_reference(big, big.run(gemm, T(0.75), T(0.25)), T(0.75), T(0.25));
      problem<T> const wide(ta, tb, 7, 1100, 33, 1, seed += 3);
      check_against_reference(wide, wide.run(gemm, T(1), T(0)), T(1), T(0));
    }
  }
}

}  // namespace

TEST_CASE("gemm_reference: transposed storage gives the same product as plain storage") {
  // A = [[1, 2, 3], [4, 5, 6]], B = [[1, 0], [2, 1], [0, 3]]: A B = [[5, 11], [14, 23]].
  std::vector<double> const a = {1, 2, 3, 4, 5, 6}, at = {1, 4, 2, 5, 3, 6};
  std::vector<double> const b = {1, 0, 2, 1, 0, 3}, bt = {1, 2, 0, 0, 1, 3};
  std::vector<double> const want = {5, 11, 14, 23};
  for (trans ta : {trans::n, trans::t}) {
    for (trans tb : {trans::n, trans::t}) {
      std::vector<double> c(4, 99.0);
      ops::gemm_reference(ta, tb, 2, 2, 3, 1.0, (ta == trans::n ? a : at).data(), ta == trans::n ? 3 : 2,
                          (tb == trans::n ? b : bt).data(), tb == trans::n ? 2 : 3, 0.0, c.data(), 2);
      CHECK(c == want);
    }
  }
}

TEST_CASE_TEMPLATE("gemm matches the reference: all transposes, odd shapes, alpha/beta, padded strides", T, float,
                   double) {
  SUBCASE("gemm (CBLAS tiles where available)") { check_all_cases<T>(tiled); }
  SUBCASE("gemm_blocked") { check_all_cases<T>(blocked); }
}

namespace {

template <class T, class Gemm>
void check_degenerate_scalars(Gemm&& gemm) {
  T const nan = std::numeric_limits<T>::quiet_NaN();
  problem<T> p(trans::n, trans::t, 40, 20, 30, 2, 7);
  p.c0.assign(p.c0.size(), nan);  // beta = 0: C is garbage and must not leak into the result
  auto const c = p.run(gemm, T(1), T(0));
  check_against_reference(p, c, T(1), T(0));
  problem<T> const q(trans::t, trans::n, 9, 11, 5, 1, 8);
  std::vector<T> const a_nan(q.a.size(), nan);  // alpha = 0: A is not read
  std::vector<T> c1 = q.c0, c2 = q.c0;
  gemm(q.ta, q.tb, q.m, q.n, q.k, T(0), a_nan.data(), q.lda, q.b.data(), q.ldb, T(-2), c1.data(), q.ldc);
  gemm(q.ta, q.tb, q.m, q.n, std::int64_t{0}, T(1), static_cast<T const*>(nullptr), q.lda,
       static_cast<T const*>(nullptr), q.ldb, T(-2), c2.data(), q.ldc);
  for (std::int64_t i = 0; i < q.m; ++i) {
    for (std::int64_t j = 0; j < q.n; ++j) {
      CHECK(c1[i * q.ldc + j] == T(-2) * q.c0[i * q.ldc + j]);
      CHECK(c2[i * q.ldc + j] == T(-2) * q.c0[i * q.ldc + j]);
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("gemm: beta = 0 does not read C; alpha = 0 or k = 0 gives beta C", T, float, double) {
  SUBCASE("gemm") { check_degenerate_scalars<T>(tiled); }
  SUBCASE("gemm_blocked") { check_degenerate_scalars<T>(blocked); }
  SUBCASE("gemm_reference") { check_degenerate_scalars<T>(reference); }
}

TEST_CASE("gemm: bad arguments raise ssmlen::error naming the parameter") {
  std::vector<float> a(64, 1.0f), b(64, 1.0f), c(64, 0.0f);
  auto call = [&](std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t lda, std::int64_t ldb, std::int64_t ldc,
                  float const* pa = nullptr) {
    ops::gemm(host{}, trans::n, trans::n, m, n, k, 1.0f, pa ? pa : a.data(), lda, b.data(), ldb, 0.0f, c.data(), ldc);
  };
  CHECK_THROWS_WITH_AS(call(-1, 2, 2, 2, 2, 2), doctest::Contains("gemm m = -1"), ssmlen::error);
  CHECK_THROWS_WITH_AS(call(2, 2, 4, 3, 2, 2), doctest::Contains("gemm lda = 3"), ssmlen::error);
  CHECK_THROWS_WITH_AS(call(2, 4, 2, 2, 3, 4), doctest::Contains("gemm ldb = 3"), ssmlen::error);
  CHECK_THROWS_WITH_AS(call(2, 4, 2, 2, 4, 2), doctest::Contains("gemm ldc = 2"), ssmlen::error);
  CHECK_THROWS_AS(ops::gemm(host{}, trans::n, trans::n, 2, 2, 2, 1.0f, static_cast<float const*>(nullptr), 2, b.data(),
                            2, 0.0f, c.data(), 2),
                  ssmlen::error);
  CHECK_THROWS_AS(
      ops::gemm_blocked(host{}, trans::t, trans::n, 4, 2, 2, 1.0f, a.data(), 3, b.data(), 2, 0.0f, c.data(), 2),
      ssmlen::error);
  CHECK_NOTHROW(call(0, 0, 0, 1, 1, 1));
}

TEST_CASE("gemm_tiles: the grid covers C exactly and keeps each tile's K whole") {
  std::int64_t const shapes[][3] = {{1, 1, 1},          {23040, 256, 64}, {23040, 64, 128}, {256, 64, 23040},
                                    {2048, 2048, 2048}, {5, 1100, 7},     {100, 3, 1},      {33, 513, 4096}};
  for (auto const& s : shapes) {
    auto const g = ops::gemm_tiles(s[0], s[1], s[2]);
    std::int64_t area = 0, outside = 0, overlaps = 0;
    for (std::int64_t t = 0; t < g.count(); ++t) {
      auto const x = g.at(t);
      area += x.rows * x.cols;
      outside += x.rows <= 0 || x.cols <= 0 || x.i0 < 0 || x.j0 < 0 || x.i0 + x.rows > s[0] || x.j0 + x.cols > s[1];
      for (std::int64_t u = 0; u < t; ++u) {
        auto const y = g.at(u);
        overlaps += x.i0 < y.i0 + y.rows && y.i0 < x.i0 + x.rows && x.j0 < y.j0 + y.cols && y.j0 < x.j0 + x.cols;
      }
    }
    CHECK(outside == 0);
    CHECK(overlaps == 0);
    CHECK(area == s[0] * s[1]);  // inside C, disjoint, and the same area: an exact cover
  }
  // Tall-skinny activations keep all columns in a tile; a small output with huge K still yields several tiles.
  CHECK(ops::gemm_tiles(23040, 256, 64).tile_n == 256);
  CHECK(ops::gemm_tiles(256, 64, 23040).count() >= 4);
  CHECK(ops::gemm_tiles(2048, 2048, 2048).tile_n <= 512);
  static_assert(ops::gemm_tiles(0, 5, 5).count() == 0);
}

#if defined(_OPENMP)
TEST_CASE_TEMPLATE("gemm: bit-identical results on 1 and 2 threads", T, float, double) {
  int const saved = omp_get_max_threads();
  struct shape {
    trans ta, tb;
    std::int64_t m, n, k;
  };
  shape const shapes[] = {{trans::n, trans::t, 2000, 64, 40},    // activations: many row tiles
                          {trans::t, trans::n, 64, 48, 2000},    // weight gradient: K = tokens
                          {trans::n, trans::n, 120, 530, 100}};  // two column tiles
  for (auto const& s : shapes) {
    problem<T> const p(s.ta, s.tb, s.m, s.n, s.k, 1, 99);
    for (int impl = 0; impl < 2; ++impl) {
      auto run = [&](int threads) {
        omp_set_num_threads(threads);
        return impl == 0 ? p.run(tiled, T(1.25), T(0.5)) : p.run(blocked, T(1.25), T(0.5));
      };
      auto const one = run(1), two = run(2);
      CHECK_MESSAGE(std::memcmp(one.data(), two.data(), one.size() * sizeof(T)) == 0,
                    "impl " << impl << " m=" << s.m << " n=" << s.n << " k=" << s.k);
    }
  }
  omp_set_num_threads(saved);
}
#endif
