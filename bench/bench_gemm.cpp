// SPDX-License-Identifier: Apache-2.0
// GEMM throughput on the host: ssmlen::ops::gemm (tiled, one single-threaded CBLAS call per tile),
// ssmlen::ops::gemm_blocked (the portable kernel) and OpenBLAS's own multithreaded cblas_sgemm on the
// same shapes, side by side in one run. Shapes are the library's: a square reference and the
// activation / weight-gradient products of a Mamba block over 23040 tokens.
#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/ops/gemm.hpp>
#include <ssmlen/ops/gemm_blocked.hpp>

#include <benchmark/benchmark.h>

#if defined(SSMLEN_HAS_CBLAS)
#include <cblas.h>
#endif

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace {

namespace ops = ssmlen::ops;
using ops::trans;

struct gemm_case {
  trans ta, tb;
  std::int64_t m, n, k;
};

// The shapes, indexed by the benchmark argument.
gemm_case const cases[] = {
    {trans::n, trans::n, 2048, 2048, 2048},  // 0: square reference
    {trans::n, trans::t, 23040, 256, 64},    // 1: y = x Wᵀ, in_proj-like (64 -> 256)
    {trans::n, trans::t, 23040, 64, 128},    // 2: y = x Wᵀ, out_proj-like (128 -> 64)
    {trans::n, trans::n, 23040, 64, 256},    // 3: dx = dy W of in_proj
    {trans::t, trans::n, 256, 64, 23040},    // 4: dW = dyᵀ x of in_proj, K = tokens
};

struct operands {
  gemm_case g;
  std::vector<float> a, b, c;
  std::int64_t lda, ldb, ldc;

  explicit operands(gemm_case const& gc) : g(gc) {
    lda = g.ta == trans::n ? g.k : g.m;
    ldb = g.tb == trans::n ? g.n : g.k;
    ldc = g.n;
    ssmlen::rng r(1);
    a.resize(static_cast<std::size_t>(g.m * g.k));
    b.resize(static_cast<std::size_t>(g.k * g.n));
    c.assign(static_cast<std::size_t>(g.m * g.n), 0.0f);
    for (auto& v : a) {
      v = r.uniform() * 2.0f - 1.0f;
    }
    for (auto& v : b) {
      v = r.uniform() * 2.0f - 1.0f;
    }
  }

  // Spot-checks 64 elements of C (computed with alpha = 1, beta = 0) against double dot products.
  [[nodiscard]] bool verify() const {
    ssmlen::rng r(2);
    for (int s = 0; s < 64; ++s) {
      auto const i = r.uniform_int(0, g.m - 1), j = r.uniform_int(0, g.n - 1);
      double ref = 0, mag = 0;
      for (std::int64_t p = 0; p < g.k; ++p) {
        double const av = g.ta == trans::n ? a[i * lda + p] : a[p * lda + i];
        double const bv = g.tb == trans::n ? b[p * ldb + j] : b[j * ldb + p];
        ref += av * bv;
        mag += std::abs(av * bv);
      }
      if (std::abs(c[i * ldc + j] - ref) > 1e-5 * (mag + 1)) {
        return false;
      }
    }
    return true;
  }
};

void set_counters(benchmark::State& state, gemm_case const& g) {
  state.counters["flops"] =
      benchmark::Counter(2.0 * g.m * g.n * g.k * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetLabel(std::to_string(g.m) + "x" + std::to_string(g.n) + "x" + std::to_string(g.k) +
                 (g.ta == trans::n ? " n" : " t") + (g.tb == trans::n ? "n" : "t"));
}

template <class Run>
void run_case(benchmark::State& state, Run&& run) {
  operands o(cases[state.range(0)]);
  run(o);
  if (!o.verify()) {
    state.SkipWithError("result does not match the double-precision check");
    return;
  }
  for (auto _ : state) {
    run(o);
    benchmark::DoNotOptimize(o.c.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, o.g);
}

void bm_gemm_ssmlen(benchmark::State& state) {
  ssmlen::backends::host const be;
  run_case(state, [&](operands& o) {
    ops::gemm(be, o.g.ta, o.g.tb, o.g.m, o.g.n, o.g.k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb, 0.0f, o.c.data(),
              o.ldc);
  });
}

void bm_gemm_blocked(benchmark::State& state) {
  ssmlen::backends::host const be;
  run_case(state, [&](operands& o) {
    ops::gemm_blocked(be, o.g.ta, o.g.tb, o.g.m, o.g.n, o.g.k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb, 0.0f,
                      o.c.data(), o.ldc);
  });
}

#if defined(SSMLEN_HAS_CBLAS) && defined(OPENBLAS_VERSION)
// OpenBLAS threading itself over as many threads as OpenMP has; ssmlen's one-thread setting is restored after.
void bm_openblas_threaded(benchmark::State& state) {
  ops::detail::cblas_single_threaded();  // the library's one-time setting happens first, not after this run
  openblas_set_num_threads(ssmlen::backends::host::threads());
  auto const i = [](std::int64_t v) { return static_cast<ops::detail::cblas_int>(v); };
  run_case(state, [&](operands& o) {
    cblas_sgemm(CblasRowMajor, o.g.ta == trans::n ? CblasNoTrans : CblasTrans,
                o.g.tb == trans::n ? CblasNoTrans : CblasTrans, i(o.g.m), i(o.g.n), i(o.g.k), 1.0f, o.a.data(),
                i(o.lda), o.b.data(), i(o.ldb), 0.0f, o.c.data(), i(o.ldc));
  });
  openblas_set_num_threads(1);
}
#endif

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgName("shape")
      ->DenseRange(0, static_cast<int>(std::size(cases)) - 1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(bm_gemm_ssmlen)->Apply(shapes);
BENCHMARK(bm_gemm_blocked)->Apply(shapes);
#if defined(SSMLEN_HAS_CBLAS) && defined(OPENBLAS_VERSION)
BENCHMARK(bm_openblas_threaded)->Apply(shapes);
#endif
