// SPDX-License-Identifier: Apache-2.0
//! @file test_layers.cu
//! Parity of the CUDA GEMM, RMSNorm, cross-entropy, AdamW, embedding and conv1d with their host oracles (run in
//! double precision unless said otherwise) on random inputs, odd shapes and ragged packed sequences; every output
//! is poisoned with NaN first, and gradients that accumulate start from non-zero values. Also: bit-identical
//! reductions across runs, and argument checks.
//! Built alone (nvcc this file) it is its own doctest program; in the CMake build the shared test main links in.
//! Without a GPU every case that needs one prints a skip message and passes.
#ifndef SSMLEN_TEST_DATA_DIR
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#endif
#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/math.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/conv1d.hpp>
#include <ssmlen/layers/cuda/conv1d.cuh>
#include <ssmlen/layers/cuda/embedding.cuh>
#include <ssmlen/layers/cuda/rmsnorm.cuh>
#include <ssmlen/layers/embedding.hpp>
#include <ssmlen/layers/rmsnorm.hpp>
#include <ssmlen/ops/cross_entropy.hpp>
#include <ssmlen/ops/cuda/cross_entropy.cuh>
#include <ssmlen/ops/gemm_reference.hpp>
#include <ssmlen/train/adamw.hpp>
#include <ssmlen/train/cuda/adamw.cuh>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "../support/cuda_testing.hpp"

namespace {

using ssmlen::testing::gpu_or_skip;
using ssmlen::testing::mismatched_roundings;
using ssmlen::testing::normal;
using ssmlen::testing::rel_error;

namespace lc = ssmlen::layers::cuda;
using ssmlen::backends::device_buffer;
using ssmlen::ops::trans;

constexpr double fp32_tol = 1e-5;
constexpr double bf16_tol = 1e-2;
constexpr float nan_f = std::numeric_limits<float>::quiet_NaN();

std::vector<double> widen(std::vector<float> const& v) { return {v.begin(), v.end()}; }

template <class T>
device_buffer<T> on_device(std::vector<T> const& v) {
  return device_buffer<T>(std::span<T const>(v));
}

//! The legacy default stream, where fill_bytes enqueues by default, does not order the non-blocking streams the
//! kernels run on: wait for the fill before any kernel may write the buffer.
template <class T>
void fill_nan(device_buffer<T>& b) {
  b.fill_bytes(0xFF);
  SSMLEN_CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

//! A device buffer of n floats, every one NaN: outputs that are never written stay visible.
device_buffer<float> poisoned(std::size_t n) {
  device_buffer<float> b(n);
  fill_nan(b);
  return b;
}

bool same_bits(std::vector<float> const& a, std::vector<float> const& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

constexpr std::uint16_t bf16_poison = 0xFFFF;  // what fill_nan leaves in a bfloat16

//! A device buffer of n bfloat16, every one NaN.
device_buffer<ssmlen::bfloat16> poisoned_bf16(std::size_t n) {
  device_buffer<ssmlen::bfloat16> b(n);
  fill_nan(b);
  return b;
}

//! rounded holds the bf16 rounding of every value, bit for bit, and then one spare element still poisoned.
bool is_rounding_of(std::vector<ssmlen::bfloat16> const& rounded, std::vector<float> const& values) {
  if (rounded.size() != values.size() + 1 || rounded.back().bits != bf16_poison) {
    return false;
  }
  return ssmlen::testing::mismatched_roundings({rounded.begin(), rounded.end() - 1}, values) == 0;
}

// ---------------------------------------------------------------------------------------------------------------
// GEMM

struct gemm_case {
  trans ta, tb;
  std::int64_t m, n, k;
  float alpha, beta;
  std::int64_t pad_a = 3, pad_b = 1;  // row strides: stored width + pad (NaN-filled)
};

char const* name_of(ssmlen::backends::gemm_precision p) {
  using ssmlen::backends::gemm_precision;
  return p == gemm_precision::fp32 ? "fp32" : (p == gemm_precision::tf32 ? "tf32" : "bf16");
}

std::vector<float> round_bf16(std::vector<float> v) {
  for (auto& e : v) {
    e = static_cast<float>(ssmlen::bfloat16(e));
  }
  return v;
}

//! Runs one GEMM on the device with padded strides (A, B padding NaN; C padding must stay untouched) and returns
//! the relative error of the M × N result against gemm_reference in double on `ref_a`, `ref_b`.
double gemm_error(ssmlen::backends::blas_handle& h, gemm_case const& g, ssmlen::backends::gemm_precision precision,
                  bool round_reference_inputs, std::uint64_t seed, double* error_vs_rounded = nullptr) {
  std::int64_t const a_rows = g.ta == trans::n ? g.m : g.k, a_cols = g.ta == trans::n ? g.k : g.m;
  std::int64_t const b_rows = g.tb == trans::n ? g.k : g.n, b_cols = g.tb == trans::n ? g.n : g.k;
  std::int64_t const lda = a_cols + g.pad_a, ldb = b_cols + g.pad_b, ldc = g.n + 2;
  auto a = normal(static_cast<std::size_t>(a_rows * lda), 1.0, seed);
  auto b = normal(static_cast<std::size_t>(b_rows * ldb), 1.0, seed + 1);
  auto c = normal(static_cast<std::size_t>(g.m * ldc), 1.0, seed + 2);
  for (std::int64_t r = 0; r < a_rows; ++r) {
    for (std::int64_t j = a_cols; j < lda; ++j) {
      a[static_cast<std::size_t>(r * lda + j)] = nan_f;
    }
  }
  for (std::int64_t r = 0; r < b_rows; ++r) {
    for (std::int64_t j = b_cols; j < ldb; ++j) {
      b[static_cast<std::size_t>(r * ldb + j)] = nan_f;
    }
  }
  if (g.beta == 0.0f) {
    std::fill(c.begin(), c.end(), nan_f);  // beta = 0: C must not be read
  }
  auto da = on_device(a), db = on_device(b), dc = on_device(c);
  ssmlen::backends::gemm(h, g.ta, g.tb, g.m, g.n, g.k, g.alpha, da.data(), lda, db.data(), ldb, g.beta, dc.data(), ldc,
                         precision);
  h.backend().synchronize();
  auto const out = dc.to_host();

  auto reference = [&](std::vector<float> const& ra, std::vector<float> const& rb) {
    auto wa = widen(ra), wb = widen(rb), wc = widen(c);
    ssmlen::ops::gemm_reference<double>(g.ta, g.tb, g.m, g.n, g.k, g.alpha, wa.data(), lda, wb.data(), ldb, g.beta,
                                        wc.data(), ldc);
    return wc;
  };
  std::vector<float> got;
  std::vector<double> want, want_rounded;
  auto const ref = reference(a, b);
  auto const ref_rounded = round_reference_inputs ? reference(round_bf16(a), round_bf16(b)) : ref;
  for (std::int64_t i = 0; i < g.m; ++i) {
    for (std::int64_t j = 0; j < ldc; ++j) {
      auto const e = static_cast<std::size_t>(i * ldc + j);
      if (j < g.n) {
        got.push_back(out[e]);
        want.push_back(ref[e]);
        want_rounded.push_back(ref_rounded[e]);
      } else {
        CHECK_MESSAGE(same_bits({out[e]}, {c[e]}), "C padding written at row ", i);
      }
    }
  }
  if (error_vs_rounded != nullptr) {
    *error_vs_rounded = rel_error(got, want_rounded);
  }
  return rel_error(got, want);
}

std::vector<gemm_case> gemm_cases() {
  std::vector<gemm_case> cases;
  for (trans ta : {trans::n, trans::t}) {
    for (trans tb : {trans::n, trans::t}) {
      cases.push_back({ta, tb, 37, 29, 53, 0.7f, -1.3f});
      cases.push_back({ta, tb, 1, 65, 130, 1.0f, 0.0f});
      cases.push_back({ta, tb, 131, 1, 7, -0.5f, 0.0f});
      cases.push_back({ta, tb, 67, 97, 1023, 1.0f, 1.0f});
    }
  }
  return cases;
}

TEST_CASE("cuda gemm: fp32, tf32 and bf16 match gemm_reference on odd shapes") {
  if (!gpu_or_skip()) {
    return;
  }
  using ssmlen::backends::gemm_precision;
  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  double worst[3] = {0, 0, 0}, worst_rounded = 0;
  std::uint64_t seed = 100;
  for (auto const& g : gemm_cases()) {
    for (auto p : {gemm_precision::fp32, gemm_precision::tf32, gemm_precision::bf16}) {
      CAPTURE(name_of(p));
      CAPTURE(g.m);
      CAPTURE(g.n);
      CAPTURE(g.k);
      CAPTURE(static_cast<int>(g.ta));
      CAPTURE(static_cast<int>(g.tb));
      double rounded = 0;
      double const err = gemm_error(h, g, p, p == gemm_precision::bf16, seed += 3, &rounded);
      CHECK(err < (p == gemm_precision::fp32 ? fp32_tol : bf16_tol));
      worst[static_cast<int>(p)] = std::max(worst[static_cast<int>(p)], err);
      if (p == gemm_precision::bf16) {
        CHECK(rounded < fp32_tol);  // exactly the product of the rounded inputs, summed in fp32
        worst_rounded = std::max(worst_rounded, rounded);
      }
    }
  }
  std::printf("gemm max relative error: fp32 %.2e, tf32 %.2e, bf16 %.2e (vs bf16-rounded inputs %.2e)\n", worst[0],
              worst[1], worst[2], worst_rounded);
}

TEST_CASE("cuda gemm: fp32 products small enough for one launch of tiles (a rollout step's shapes)") {
  if (!gpu_or_skip()) {
    return;
  }
  using ssmlen::backends::gemm_precision;
  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  // The headline model's step (in_proj, x_proj, out_proj, head at 256 rows) with 16-byte rows, then ragged tiles, K
  // past one chunk (with a partial quad), 4-float rows with a K that is not, one row, one column, one product, and
  // a wider tile grid.
  std::vector<gemm_case> const cases = {{trans::n, trans::t, 256, 256, 64, 1.0f, 0.0f, 4, 4},
                                        {trans::n, trans::t, 256, 36, 128, 1.0f, 0.0f, 4, 4},
                                        {trans::n, trans::t, 256, 64, 128, 1.0f, 0.0f, 4, 4},
                                        {trans::n, trans::t, 256, 20, 64, 1.0f, 0.0f, 4, 4},
                                        {trans::n, trans::t, 37, 45, 260, 0.7f, -1.3f, 4, 4},
                                        {trans::n, trans::t, 17, 33, 129, 1.0f, 0.0f},
                                        {trans::n, trans::t, 40, 70, 301, -0.5f, 2.0f},
                                        {trans::n, trans::t, 19, 31, 6, 1.0f, 0.5f, 2, 2},
                                        {trans::n, trans::t, 1, 1, 1, 1.0f, 0.0f},
                                        {trans::n, trans::t, 300, 1, 3, 2.0f, 1.0f},
                                        {trans::n, trans::t, 256, 160, 96, 1.0f, 0.0f, 4, 4}};
  double worst = 0;
  std::uint64_t seed = 900;
  for (auto const& g : cases) {
    CAPTURE(g.m);
    CAPTURE(g.n);
    CAPTURE(g.k);
    CHECK(ssmlen::backends::small_gemm_fits(g.m, g.n, g.k));
    double const err = gemm_error(h, g, gemm_precision::fp32, false, seed += 3);
    CHECK(err < fp32_tol);
    worst = std::max(worst, err);
  }
  CHECK_FALSE(ssmlen::backends::small_gemm_fits(15407, 256, 64));  // a training step's in_proj: cuBLAS
  std::printf("small fp32 gemm max relative error %.2e\n", worst);
}

TEST_CASE("cuda bf16 rounding: the host's bits for every kind of float, dense and strided") {
  if (!gpu_or_skip()) {
    return;
  }
  // Ties both ways, denormals, zeros, infinities, values that round up to infinity, NaNs with payloads, and normal
  // values over the whole exponent range: the device converts with one instruction, the host with bit arithmetic.
  std::vector<std::uint32_t> bits{0x00000000u, 0x80000000u, 0x00000001u, 0x807FFFFFu, 0x00008000u,
                                  0x00018000u, 0x3F808000u, 0x3F818000u, 0x3F807FFFu, 0x3F808001u,
                                  0x7F7FFFFFu, 0xFF7F8000u, 0x7F7F7FFFu, 0x7F800000u, 0xFF800000u,
                                  0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x7FA12345u, 0xFF812345u};
  std::uint64_t state = 12345;
  while (bits.size() < 4000) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    bits.push_back(static_cast<std::uint32_t>(state >> 32));
  }
  std::vector<float> values(bits.size());
  std::memcpy(values.data(), bits.data(), bits.size() * sizeof(float));
  ssmlen::backends::cuda_stream stream;
  auto const src = on_device(values);
  struct shape {
    std::int64_t rows, cols, ld;
  };
  for (shape const sh : {shape{50, 80, 80}, shape{40, 97, 100}, shape{25, 80, 160}, shape{1, 4000, 4000}}) {
    CAPTURE(sh.rows);
    CAPTURE(sh.cols);
    CAPTURE(sh.ld);
    auto out = poisoned_bf16(static_cast<std::size_t>(sh.rows * sh.cols) + 1);
    ssmlen::backends::round_to_bf16(stream.backend(), sh.rows, sh.cols, src.data(), sh.ld, out.data());
    stream.synchronize();
    std::vector<float> read;  // the [rows, cols] values the call reads
    for (std::int64_t r = 0; r < sh.rows; ++r) {
      auto const row = values.begin() + static_cast<std::ptrdiff_t>(r * sh.ld);
      read.insert(read.end(), row, row + sh.cols);
    }
    CHECK(is_rounding_of(out.to_host(), read));
  }
}

TEST_CASE("cuda gemm: bfloat16 operands, k = 0 and alpha = 0, argument checks") {
  if (!gpu_or_skip()) {
    return;
  }
  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  std::int64_t const m = 45, n = 33, k = 70;
  auto const a = round_bf16(normal(static_cast<std::size_t>(k * m), 1.0, 7));  // stored [K, M]: ta = t
  auto const b = round_bf16(normal(static_cast<std::size_t>(k * n), 1.0, 8));  // stored [K, N]: tb = n
  std::vector<ssmlen::bfloat16> a16, b16;
  for (float v : a) {
    a16.emplace_back(v);
  }
  for (float v : b) {
    b16.emplace_back(v);
  }
  auto da = on_device(a16), db = on_device(b16);
  auto dc = poisoned(static_cast<std::size_t>(m * n));
  ssmlen::backends::gemm(h, trans::t, trans::n, m, n, k, 1.5f, da.data(), m, db.data(), n, 0.0f, dc.data(), n);
  stream.synchronize();
  auto wa = widen(a), wb = widen(b);
  std::vector<double> ref(static_cast<std::size_t>(m * n));
  ssmlen::ops::gemm_reference<double>(trans::t, trans::n, m, n, k, 1.5, wa.data(), m, wb.data(), n, 0.0, ref.data(), n);
  double const err = rel_error(dc.to_host(), ref);
  CHECK(err < fp32_tol);
  std::printf("gemm bfloat16 operands: relative error %.2e\n", err);

  // k = 0: C = beta C; alpha = 0 likewise; beta = 0 clears NaN.
  auto const c0 = normal(static_cast<std::size_t>(m * n), 1.0, 9);
  auto dc0 = on_device(c0);
  float const unused = 0;
  ssmlen::backends::gemm(h, trans::n, trans::n, m, n, 0, 1.0f, &unused, 1, &unused, n, -2.0f, dc0.data(), n);
  stream.synchronize();
  auto const scaled = dc0.to_host();
  bool all = true;
  for (std::size_t i = 0; i < c0.size(); ++i) {
    all = all && scaled[i] == -2.0f * c0[i];
  }
  CHECK(all);
  auto dc1 = poisoned(static_cast<std::size_t>(m * n));
  auto dfa = on_device(a), dfb = on_device(b);
  ssmlen::backends::gemm(h, trans::t, trans::n, m, n, k, 0.0f, dfa.data(), m, dfb.data(), n, 0.0f, dc1.data(), n);
  stream.synchronize();
  auto const zeros = dc1.to_host();
  CHECK(std::all_of(zeros.begin(), zeros.end(), [](float v) { return v == 0.0f; }));

  CHECK_THROWS_AS(ssmlen::backends::gemm(h, trans::n, trans::n, m, n, k, 1.0f, dfa.data(), k - 1, dfb.data(), n, 0.0f,
                                         dc1.data(), n),
                  ssmlen::error);
  CHECK_THROWS_AS(
      ssmlen::backends::gemm(h, trans::n, trans::n, -1, n, k, 1.0f, dfa.data(), k, dfb.data(), n, 0.0f, dc1.data(), n),
      ssmlen::error);
}

TEST_CASE("cuda gemm: a bfloat16 C, with beta, strided, and its degenerate cases") {
  if (!gpu_or_skip()) {
    return;
  }
  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  std::int64_t const m = 45, n = 33, k = 70, ldc = 40;              // C's row padding must keep its poison
  auto const a = normal(static_cast<std::size_t>(m * k), 1.0, 17);  // stored [M, K]: ta = n; rounded by gemm
  auto const b = round_bf16(normal(static_cast<std::size_t>(n * k), 1.0, 18));  // stored [N, K]: tb = t
  std::vector<ssmlen::bfloat16> b16, c16(static_cast<std::size_t>(m * ldc), ssmlen::bfloat16(nan_f));
  for (float v : b) {
    b16.emplace_back(v);
  }
  auto const c0 = normal(static_cast<std::size_t>(m * n), 1.0, 19);
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      c16[static_cast<std::size_t>(i * ldc + j)] = ssmlen::bfloat16(c0[static_cast<std::size_t>(i * n + j)]);
    }
  }
  auto da = on_device(a);
  auto db = on_device(b16), dc = on_device(c16);
  ssmlen::backends::gemm(h, trans::n, trans::t, m, n, k, 1.5f, {da.data(), k}, {nullptr, k, db.data()}, 0.5f, dc.data(),
                         ldc);
  stream.synchronize();
  auto const got = dc.to_host();
  auto const wa = widen(round_bf16(a)), wb = widen(b);
  std::vector<double> ref(static_cast<std::size_t>(m * n)), out;
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      ref[static_cast<std::size_t>(i * n + j)] = 0.5 * static_cast<float>(c16[static_cast<std::size_t>(i * ldc + j)]);
    }
  }
  ssmlen::ops::gemm_reference<double>(trans::n, trans::t, m, n, k, 1.5, wa.data(), k, wb.data(), k, 1.0, ref.data(), n);
  bool padding_untouched = true;
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < ldc; ++j) {
      auto const v = got[static_cast<std::size_t>(i * ldc + j)];
      if (j < n) {
        out.push_back(static_cast<float>(v));
      } else {
        padding_untouched = padding_untouched && std::isnan(static_cast<float>(v));
      }
    }
  }
  CHECK(padding_untouched);
  double const err = rel_error(out, ref);
  CHECK(err < 4e-3);  // one bf16 rounding of the fp32 sums: at most 2^-9 of each element
  CHECK(err > 1e-6);  // and the rounding did happen: C is not fp32 bits read as something else
  std::printf("gemm into bfloat16: relative error %.2e\n", err);

  // k = 0: C = beta C in bf16; alpha = 0 and beta = 0 write zeros over NaN.
  auto dk0 = on_device(c16);
  float const unused = 0;
  ssmlen::backends::gemm(h, trans::n, trans::t, m, n, 0, 1.0f, {&unused, 1}, {&unused, 1}, -2.0f, dk0.data(), ldc);
  auto dz = on_device(std::vector<ssmlen::bfloat16>(c16.size(), ssmlen::bfloat16(nan_f)));
  ssmlen::backends::gemm(h, trans::n, trans::t, m, n, k, 0.0f, {da.data(), k}, {nullptr, k, db.data()}, 0.0f, dz.data(),
                         ldc);
  stream.synchronize();
  auto const scaled = dk0.to_host(), zeros = dz.to_host();
  bool all_scaled = true, all_zero = true;
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      auto const e = static_cast<std::size_t>(i * ldc + j);
      all_scaled = all_scaled && scaled[e].bits == ssmlen::bfloat16(-2.0f * static_cast<float>(c16[e])).bits;
      all_zero = all_zero && zeros[e].bits == 0;
    }
  }
  CHECK(all_scaled);
  CHECK(all_zero);
  CHECK_THROWS_AS(ssmlen::backends::gemm(h, trans::n, trans::t, m, n, k, 1.0f, {da.data(), k}, {nullptr, k, db.data()},
                                         0.0f, dz.data(), n - 1),
                  ssmlen::error);
}

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm

struct rmsnorm_case {
  std::int64_t rows, dim;
  bool fused = false, in_place = false, accumulate = false;
  bool rounded = false;  // the forward also writes y rounded to bf16, and the backward dx (its final value) rounded
  bool y_too = true;     // false: the forward writes y16 alone (y null)
  // Elements every float tensor, and every bf16 output, starts past its buffer's start: vectors need 4 and 4.
  std::size_t offset = 0, rounded_offset = 0;
};

//! v on the device after `offset` poisoned elements (NaN): reading them shows, and writing them is seen.
device_buffer<float> on_device_at(std::vector<float> const& v, std::size_t offset) {
  auto b = poisoned(offset + v.size());
  SSMLEN_CUDA_CHECK(cudaMemcpy(b.data() + offset, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  return b;
}

//! The elements of a device buffer from `offset` on.
template <class T>
std::vector<T> from(device_buffer<T> const& b, std::size_t offset) {
  auto const all = b.to_host();
  return {all.begin() + static_cast<std::ptrdiff_t>(offset), all.end()};
}

//! Whether the first `offset` elements of a buffer poisoned by fill_nan still hold the poison.
template <class T>
bool poison_before(device_buffer<T> const& b, std::size_t offset) {
  auto const all = b.to_host();
  auto const* bytes = reinterpret_cast<unsigned char const*>(all.data());
  return std::all_of(bytes, bytes + offset * sizeof(T), [](unsigned char c) { return c == 0xFF; });
}

void check_rmsnorm(rmsnorm_case const& rc, std::uint64_t seed) {
  CAPTURE(rc.rows);
  CAPTURE(rc.dim);
  CAPTURE(rc.fused);
  CAPTURE(rc.in_place);
  CAPTURE(rc.accumulate);
  CAPTURE(rc.rounded);
  CAPTURE(rc.y_too);
  CAPTURE(rc.offset);
  CAPTURE(rc.rounded_offset);
  REQUIRE((rc.y_too || rc.rounded));
  std::int64_t const rows = rc.rows, dim = rc.dim;
  std::size_t const off = rc.offset, off16 = rc.rounded_offset;
  auto const n = static_cast<std::size_t>(rows * dim);
  auto const x = normal(n, 2.0, seed), residual = normal(n, 1.0, seed + 1), dy = normal(n, 1.0, seed + 2);
  auto const weight = normal(static_cast<std::size_t>(dim), 1.0, seed + 3);
  auto const dx0 = normal(n, 1.0, seed + 4), dw0 = normal(static_cast<std::size_t>(dim), 1.0, seed + 5);

  ssmlen::layers::rmsnorm<double> ref(dim, 1e-5);
  std::copy(weight.begin(), weight.end(), ref.weight.value.data());
  std::copy(dw0.begin(), dw0.end(), ref.weight.grad.data());
  std::vector<double> h = widen(x);
  if (rc.fused) {
    for (std::size_t i = 0; i < n; ++i) {
      h[i] += residual[i];
    }
  }
  std::vector<double> y_ref(n), rstd_ref(static_cast<std::size_t>(rows)), dx_ref = widen(dx0);
  ssmlen::backends::host const be;
  ref.forward(be, h.data(), y_ref.data(), rstd_ref.data(), rows);
  auto const dy_wide = widen(dy);
  ref.backward(be, h.data(), rstd_ref.data(), dy_wide.data(), dx_ref.data(), rows, rc.accumulate);

  ssmlen::backends::cuda_stream stream;
  auto dx_in = on_device_at(x, off), dres = on_device_at(residual, off), dweight = on_device_at(weight, off);
  auto ddy = on_device_at(dy, off);
  auto dhout = poisoned(n + off), dyout = poisoned(n + off), drstd = poisoned(static_cast<std::size_t>(rows));
  auto ddx = rc.accumulate ? on_device_at(dx0, off) : poisoned(n + off);
  auto ddw = on_device(dw0);
  // The bf16 outputs, one element longer than they need: the spare element must keep its poison.
  auto dy16 = poisoned_bf16(n + 1 + off16), ddx16 = poisoned_bf16(n + 1 + off16);
  float* h_out = rc.fused ? (rc.in_place ? dres.data() : dhout.data()) + off : nullptr;
  lc::rmsnorm_forward(stream.backend(), rows, dim, 1e-5, dx_in.data() + off, rc.fused ? dres.data() + off : nullptr,
                      h_out, dweight.data() + off, rc.y_too ? dyout.data() + off : nullptr, drstd.data(),
                      rc.rounded ? dy16.data() + off16 : nullptr);
  float const* h_dev = rc.fused ? h_out : dx_in.data() + off;
  lc::rmsnorm_backward(stream.backend(), rows, dim, h_dev, drstd.data(), dweight.data() + off, ddy.data() + off,
                       ddx.data() + off, ddw.data(), rc.accumulate, nullptr,
                       rc.rounded ? ddx16.data() + off16 : nullptr);
  // y16 alone must be the rounding of the y that a forward over h writes beside a y16 as aligned (the same path)
  auto dy16_beside = poisoned_bf16(rc.y_too ? 0 : n + 1 + off16);
  if (!rc.y_too) {
    lc::rmsnorm_forward(stream.backend(), rows, dim, 1e-5, h_dev, nullptr, nullptr, dweight.data() + off,
                        dyout.data() + off, nullptr, dy16_beside.data() + off16);
  }
  stream.synchronize();
  auto const y_got = from(dyout, off), dx_got = from(ddx, off);
  CHECK(rel_error(y_got, y_ref) < fp32_tol);
  if (rc.rounded) {  // the rounding of the fp32 output written beside it, bit for bit (dx: after the accumulation)
    CHECK(is_rounding_of(from(dy16, off16), y_got));
    CHECK(is_rounding_of(from(ddx16, off16), dx_got));
  }
  CHECK(rel_error(drstd.to_host(), rstd_ref) < fp32_tol);
  if (rc.fused) {
    CHECK(rel_error(from(rc.in_place ? dres : dhout, off), h) < fp32_tol);
  }
  CHECK(rel_error(dx_got, dx_ref) < fp32_tol);
  std::vector<double> dw_ref(ref.weight.grad.data(), ref.weight.grad.data() + dim);
  double const e_dw = rel_error(ddw.to_host(), dw_ref);
  CHECK(e_dw < fp32_tol);
  for (auto const* b : {&dres, &dhout, &dyout, &ddx}) {  // nothing written before the tensors' start
    CHECK(poison_before(*b, off));
  }
  CHECK(poison_before(dy16, off16));
  CHECK(poison_before(ddx16, off16));

  // dx and dweight are the same bits when recomputed from the same start.
  auto ddw2 = on_device(dw0), ddw3 = on_device(dw0);
  auto ddx2 = poisoned(n + off), ddx3 = poisoned(n + off);
  lc::rmsnorm_backward(stream.backend(), rows, dim, h_dev, drstd.data(), dweight.data() + off, ddy.data() + off,
                       ddx2.data() + off, ddw2.data(), false);
  lc::rmsnorm_backward(stream.backend(), rows, dim, h_dev, drstd.data(), dweight.data() + off, ddy.data() + off,
                       ddx3.data() + off, ddw3.data(), false);
  stream.synchronize();
  CHECK(same_bits(ddw2.to_host(), ddw3.to_host()));
  CHECK(same_bits(ddx2.to_host(), ddx3.to_host()));
}

// Rows of D % 4 == 0 with aligned pointers take 16-byte vectors, others the scalar path; rows of up to 1024 columns
// stay in registers, longer ones are walked in windows of 1024 (several windows and a partial one below).
TEST_CASE("cuda rmsnorm: forward (plain, fused residual, in place) and backward match the host layer") {
  if (!gpu_or_skip()) {
    return;
  }
  check_rmsnorm({.rows = 131, .dim = 37}, 1);
  check_rmsnorm({.rows = 200, .dim = 64, .fused = true, .accumulate = true}, 11);
  check_rmsnorm({.rows = 65, .dim = 1000, .fused = true, .in_place = true}, 21);
  check_rmsnorm({.rows = 1, .dim = 1, .accumulate = true}, 31);
  check_rmsnorm({.rows = 9, .dim = 2052, .fused = true, .accumulate = true}, 32);                    // vectors, windows
  check_rmsnorm({.rows = 7, .dim = 1501, .fused = true, .in_place = true, .accumulate = true}, 33);  // scalar, windows
  check_rmsnorm({.rows = 50, .dim = 64, .fused = true, .accumulate = true, .offset = 1}, 34);        // misaligned
  check_rmsnorm({.rows = 5, .dim = 1032, .fused = true, .in_place = true, .offset = 1}, 35);
}

TEST_CASE("cuda rmsnorm: the bf16 outputs are the roundings of y and of the final dx") {
  if (!gpu_or_skip()) {
    return;
  }
  check_rmsnorm({.rows = 131, .dim = 37, .rounded = true}, 41);
  // dx16: the rounding of dx after the accumulation
  check_rmsnorm({.rows = 200, .dim = 64, .fused = true, .accumulate = true, .rounded = true}, 42);
  check_rmsnorm({.rows = 65, .dim = 1000, .fused = true, .in_place = true, .accumulate = true, .rounded = true}, 43);
  check_rmsnorm({.rows = 3, .dim = 33, .rounded = true}, 44);
  check_rmsnorm({.rows = 1, .dim = 1, .fused = true, .accumulate = true, .rounded = true}, 45);
  check_rmsnorm({.rows = 33, .dim = 36, .rounded = true, .offset = 1, .rounded_offset = 1}, 46);    // all misaligned
  check_rmsnorm({.rows = 33, .dim = 36, .fused = true, .rounded = true, .rounded_offset = 1}, 48);  // bf16 by 2 bytes
  check_rmsnorm({.rows = 33, .dim = 36, .accumulate = true, .rounded = true, .offset = 4, .rounded_offset = 4},
                49);  // vectors at an offset
  check_rmsnorm({.rows = 9, .dim = 2052, .fused = true, .accumulate = true, .rounded = true}, 47);
}

TEST_CASE("cuda rmsnorm: the forward writes y16 alone when y is null (a block input only bf16 GEMMs read)") {
  if (!gpu_or_skip()) {
    return;
  }
  check_rmsnorm(
      {.rows = 200, .dim = 768, .fused = true, .in_place = true, .accumulate = true, .rounded = true, .y_too = false},
      51);  // the model's shape of row
  check_rmsnorm({.rows = 131, .dim = 37, .fused = true, .rounded = true, .y_too = false}, 52);
  check_rmsnorm({.rows = 9, .dim = 2052, .rounded = true, .y_too = false}, 53);
  check_rmsnorm(
      {.rows = 40, .dim = 64, .fused = true, .rounded = true, .y_too = false, .offset = 1, .rounded_offset = 1}, 54);
}

// ---------------------------------------------------------------------------------------------------------------
// Cross-entropy

struct ce_outcome {
  ssmlen::ops::cross_entropy_result totals;
  std::vector<float> dlogits;
};

ce_outcome run_cross_entropy(std::int64_t tokens, std::int64_t vocab, std::vector<float> const& logits,
                             std::vector<std::int32_t> const& targets, std::vector<std::uint8_t> const* mask,
                             float scale, bool want_grad) {
  ssmlen::backends::cuda_stream stream;
  auto dl = on_device(logits);
  auto dt = on_device(targets);
  device_buffer<std::uint8_t> dm = mask != nullptr ? on_device(*mask) : device_buffer<std::uint8_t>();
  auto dg = poisoned(want_grad ? logits.size() : 0);
  device_buffer<ssmlen::ops::cross_entropy_result> dr(1);
  fill_nan(dr);
  ssmlen::ops::cuda::softmax_cross_entropy(stream.backend(), tokens, vocab, dl.data(), dt.data(),
                                           mask != nullptr ? dm.data() : nullptr, want_grad ? dg.data() : nullptr,
                                           scale, dr.data());
  stream.synchronize();
  return {dr.to_host()[0], dg.to_host()};
}

void check_cross_entropy(std::int64_t tokens, std::int64_t vocab, bool masked, float scale, std::uint64_t seed) {
  CAPTURE(tokens);
  CAPTURE(vocab);
  CAPTURE(masked);
  auto const n = static_cast<std::size_t>(tokens * vocab);
  auto logits = normal(n, 3.0, seed);
  ssmlen::rng g(seed + 1);
  std::vector<std::int32_t> targets(static_cast<std::size_t>(tokens));
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(tokens), 1);
  for (std::int64_t t = 0; t < tokens; ++t) {
    targets[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(g.uniform_int(0, vocab - 1));
    if (masked && g.uniform_double() < 0.3) {
      mask[static_cast<std::size_t>(t)] = 0;
      targets[static_cast<std::size_t>(t)] = -5;  // masked tokens' targets and logits must not be read
      std::fill(logits.begin() + t * vocab, logits.begin() + (t + 1) * vocab, nan_f);
    }
  }
  auto const* mask_ptr = masked ? &mask : nullptr;
  auto const got = run_cross_entropy(tokens, vocab, logits, targets, mask_ptr, scale, true);

  auto const wide = widen(logits);
  std::int64_t const count = ssmlen::ops::masked_count(tokens, masked ? mask.data() : nullptr);
  std::vector<double> d_ref(n);
  ssmlen::backends::host const be;
  auto const ref = ssmlen::ops::softmax_cross_entropy<double>(
      be, tokens, vocab, wide.data(), targets.data(), masked ? mask.data() : nullptr, d_ref.data(),
      count > 0 ? static_cast<double>(scale) / static_cast<double>(count) : 0);
  CHECK(got.totals.count == ref.count);
  double const loss_err = std::abs(got.totals.loss - ref.loss) / std::max(std::abs(ref.loss), 1e-30);
  CHECK(loss_err < fp32_tol);
  CHECK(std::abs(got.totals.mean() - ref.mean()) <= fp32_tol * std::abs(ref.mean()));
  double const d_err = rel_error(got.dlogits, d_ref);
  CHECK(d_err < fp32_tol);
  bool zero_rows = true;
  for (std::int64_t t = 0; t < tokens; ++t) {
    if (mask[static_cast<std::size_t>(t)] == 0) {
      for (std::int64_t v = 0; v < vocab; ++v) {
        zero_rows = zero_rows && got.dlogits[static_cast<std::size_t>(t * vocab + v)] == 0.0f;
      }
    }
  }
  CHECK(zero_rows);
  std::printf("cross entropy T=%lld V=%lld masked=%d: loss rel error %.2e, dlogits rel error %.2e\n",
              static_cast<long long>(tokens), static_cast<long long>(vocab), masked ? 1 : 0, loss_err, d_err);

  auto const again = run_cross_entropy(tokens, vocab, logits, targets, mask_ptr, scale, false);
  CHECK(std::memcmp(&again.totals.loss, &got.totals.loss, sizeof(double)) == 0);  // the same bits, with or without
                                                                                  // the gradient
}

TEST_CASE("cuda cross entropy: loss and dlogits match the host op, masked tokens are not read") {
  if (!gpu_or_skip()) {
    return;
  }
  check_cross_entropy(203, 37, true, 1.0f, 1);
  check_cross_entropy(203, 37, false, 0.5f, 2);
  check_cross_entropy(70, 1000, true, 1.0f, 3);
  check_cross_entropy(1, 1, false, 1.0f, 4);
}

TEST_CASE("cuda cross entropy: nothing counted, no tokens, a bad target") {
  if (!gpu_or_skip()) {
    return;
  }
  std::int64_t const tokens = 9, vocab = 5;
  auto const logits = normal(static_cast<std::size_t>(tokens * vocab), 1.0, 5);
  std::vector<std::int32_t> targets(static_cast<std::size_t>(tokens), 2);
  std::vector<std::uint8_t> none(static_cast<std::size_t>(tokens), 0);
  auto const empty = run_cross_entropy(tokens, vocab, logits, targets, &none, 1.0f, true);
  CHECK(empty.totals.count == 0);
  CHECK(empty.totals.loss == 0.0);
  CHECK(std::all_of(empty.dlogits.begin(), empty.dlogits.end(), [](float v) { return v == 0.0f; }));

  auto const no_tokens = run_cross_entropy(0, vocab, {}, {}, nullptr, 1.0f, false);
  CHECK(no_tokens.totals.count == 0);
  CHECK(no_tokens.totals.loss == 0.0);

  targets[4] = static_cast<std::int32_t>(vocab);  // counted and out of range: the loss says so
  auto const bad = run_cross_entropy(tokens, vocab, logits, targets, nullptr, 1.0f, true);
  CHECK(std::isnan(bad.totals.loss));
  CHECK(std::isnan(bad.dlogits[static_cast<std::size_t>(4 * vocab)]));
}

// ---------------------------------------------------------------------------------------------------------------
// AdamW

TEST_CASE("cuda adamw: three steps match the host optimizer (clipping on and off, decay on some tensors)") {
  if (!gpu_or_skip()) {
    return;
  }
  std::vector<std::int64_t> const sizes{1, 37, 4096, 4097, 10001};
  std::vector<bool> const decay{true, false, true, false, true};
  for (double clip : {1.0, 0.0, 1e6}) {
    CAPTURE(clip);
    ssmlen::train::adamw_config const cfg{
        .lr = 3e-3, .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-8, .weight_decay = 0.1, .clip_norm = clip};
    std::vector<ssmlen::layers::param<double>> host(sizes.size());
    std::vector<ssmlen::layers::named_param<double>> named;
    std::vector<device_buffer<float>> value, grad, m, v;
    std::vector<device_buffer<ssmlen::bfloat16>> rounded;  // every tensor but the third keeps a bf16 copy
    std::vector<std::vector<float>> start;
    std::vector<ssmlen::train::cuda::adamw_tensor> tensors;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      auto const n = static_cast<std::size_t>(sizes[i]);
      host[i] = ssmlen::layers::param<double>({sizes[i]}, decay[i]);
      start.push_back(normal(n, 0.5, 40 + i));
      std::copy(start[i].begin(), start[i].end(), host[i].value.data());
      named.push_back({std::to_string(i), &host[i], {sizes[i]}});
      value.push_back(on_device(start[i]));
      grad.push_back(poisoned(n));
      m.push_back(on_device(std::vector<float>(n, 0.0f)));
      v.push_back(on_device(std::vector<float>(n, 0.0f)));
      rounded.emplace_back(i == 2 ? 0 : n);
      rounded.back().fill_bytes(0xFF, nullptr);
    }
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      tensors.push_back({value[i].data(), grad[i].data(), m[i].data(), v[i].data(), sizes[i], decay[i],
                         i == 2 ? nullptr : rounded[i].data()});
    }
    ssmlen::train::adamw<double> ref(cfg, named);
    ssmlen::backends::cuda_stream stream;
    ssmlen::train::cuda::adamw opt(cfg, tensors, stream.backend());
    ssmlen::backends::host const be;
    for (int step = 1; step <= 3; ++step) {
      for (std::size_t i = 0; i < sizes.size(); ++i) {
        auto const g = normal(static_cast<std::size_t>(sizes[i]), 0.05, 1000 * step + i);  // norm ≈ 6: clips at 1
        grad[i].upload(g);
        std::copy(g.begin(), g.end(), host[i].grad.data());
      }
      double const lr = 1e-3 * step;
      double const norm_ref = ref.step(be, lr);
      opt.step(lr);
      double const norm = opt.grad_norm();
      CHECK(std::abs(norm - norm_ref) <= 1e-12 * norm_ref);
    }
    CHECK(opt.steps() == 3);
    double worst = 0;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      CAPTURE(i);
      auto const w = value[i].to_host();
      std::vector<double> const w_ref(host[i].value.data(), host[i].value.data() + sizes[i]);
      std::vector<double> const m_ref(ref.first_moments()[i].data(), ref.first_moments()[i].data() + sizes[i]);
      std::vector<double> const v_ref(ref.second_moments()[i].data(), ref.second_moments()[i].data() + sizes[i]);
      double const e = rel_error(w, w_ref);
      CHECK(e < fp32_tol);
      CHECK(rel_error(m[i].to_host(), m_ref) < fp32_tol);
      CHECK(rel_error(v[i].to_host(), v_ref) < fp32_tol);
      // The update itself (not only the weight it lands on): float weights store it to about 1e-5 of itself.
      std::vector<float> delta(w.size());
      std::vector<double> delta_ref(w.size());
      for (std::size_t j = 0; j < w.size(); ++j) {
        delta[j] = w[j] - start[i][j];
        delta_ref[j] = w_ref[j] - start[i][j];
      }
      double const ed = rel_error(delta, delta_ref);
      CHECK(ed < 1e-3);
      worst = std::max(worst, e);
      if (i != 2) {  // the bf16 copy holds the new weights rounded to nearest even, bit for bit
        CHECK(mismatched_roundings(rounded[i].to_host(), w) == 0);
      }
    }
    std::printf("adamw clip=%g: max relative error of the weights after 3 steps %.2e\n", clip, worst);
  }
}

TEST_CASE("cuda adamw: a non-finite gradient norm leaves everything unchanged") {
  if (!gpu_or_skip()) {
    return;
  }
  std::size_t const n = 300;
  auto const w0 = normal(n, 1.0, 3);
  auto g = normal(n, 1.0, 4);
  g[17] = std::numeric_limits<float>::infinity();
  auto value = on_device(w0), grad = on_device(g), m = on_device(std::vector<float>(n, 0.25f)),
       v = on_device(std::vector<float>(n, 0.5f));
  device_buffer<ssmlen::bfloat16> rounded(n);
  rounded.fill_bytes(0x3F, nullptr);
  ssmlen::backends::cuda_stream stream;
  ssmlen::train::cuda::adamw opt(
      {}, {{value.data(), grad.data(), m.data(), v.data(), static_cast<std::int64_t>(n), true, rounded.data()}},
      stream.backend());
  opt.step(1e-3);
  CHECK_FALSE(std::isfinite(opt.grad_norm()));
  CHECK(same_bits(value.to_host(), w0));
  CHECK(same_bits(m.to_host(), std::vector<float>(n, 0.25f)));
  CHECK(same_bits(v.to_host(), std::vector<float>(n, 0.5f)));
  auto const r = rounded.to_host();
  CHECK(std::all_of(r.begin(), r.end(), [](ssmlen::bfloat16 b) { return b.bits == 0x3F3F; }));
}

// ---------------------------------------------------------------------------------------------------------------
// Embedding

//! The device's order for dE: each id's tokens in token order, summed in 8 interleaved parts (part g: the id's
//! tokens g, g + 8, ..., from 0), the parts added to dE as ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)).
std::vector<float> embedding_grad_in_parts(std::int64_t vocab, std::int64_t dim,
                                           std::vector<std::int32_t> const& tokens, std::vector<float> const& dy,
                                           std::vector<float> dw) {
  std::vector<std::vector<std::int64_t>> uses(static_cast<std::size_t>(vocab));
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] >= 0 && tokens[t] < vocab) {
      uses[static_cast<std::size_t>(tokens[t])].push_back(static_cast<std::int64_t>(t));
    }
  }
  for (std::int64_t id = 0; id < vocab; ++id) {
    auto const& ts = uses[static_cast<std::size_t>(id)];
    if (ts.empty()) {
      continue;
    }
    for (std::int64_t d = 0; d < dim; ++d) {
      float p[8] = {};
      for (std::size_t m = 0; m < ts.size(); ++m) {
        p[m % 8] += dy[static_cast<std::size_t>(ts[m] * dim + d)];
      }
      dw[static_cast<std::size_t>(id * dim + d)] += ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    }
  }
  return dw;
}

void check_embedding(std::int64_t vocab, std::int64_t dim, std::int64_t n, std::uint64_t seed) {
  CAPTURE(vocab);
  CAPTURE(dim);
  CAPTURE(n);
  ssmlen::rng g(seed);
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(n));
  for (auto& t : tokens) {  // skewed: id 3 is frequent, the top ids never occur
    t = g.uniform_double() < 0.25 ? 3 : static_cast<std::int32_t>(g.uniform_int(0, vocab - 1 - vocab / 4));
  }
  auto const weight = normal(static_cast<std::size_t>(vocab * dim), 1.0, seed + 1);
  auto const dy = normal(static_cast<std::size_t>(n * dim), 1.0, seed + 2);
  auto const dw0 = normal(weight.size(), 1.0, seed + 3);

  ssmlen::layers::embedding<float> ref(vocab, dim);  // the forward: the same rows, bit for bit
  std::copy(weight.begin(), weight.end(), ref.weight.value.data());
  std::vector<float> y_ref(static_cast<std::size_t>(n * dim));
  ssmlen::backends::host const be;
  ref.forward(be, tokens.data(), n, y_ref.data());
  auto const dw_ref = embedding_grad_in_parts(vocab, dim, tokens, dy, dw0);  // the backward: bit for bit
  ssmlen::layers::embedding<double> ref64(vocab, dim);
  std::copy(dw0.begin(), dw0.end(), ref64.weight.grad.data());
  auto const dy64 = widen(dy);
  ref64.backward(tokens.data(), n, dy64.data());

  ssmlen::backends::cuda_stream stream;
  auto dtok = on_device(tokens);
  auto dweight = on_device(weight), ddy = on_device(dy), ddw = on_device(dw0);
  auto dyout = poisoned(static_cast<std::size_t>(n * dim));
  lc::embedding_forward(stream.backend(), vocab, dim, dweight.data(), dtok.data(), n, dyout.data());
  lc::embedding_backward(stream.backend(), vocab, dim, dtok.data(), n, ddy.data(), ddw.data());
  auto ddw2 = on_device(dw0);
  device_buffer<char> ws(lc::embedding_backward_workspace_bytes(vocab, n));
  lc::embedding_backward(stream.backend(), vocab, dim, dtok.data(), n, ddy.data(), ddw2.data(), ws.data());
  stream.synchronize();
  CHECK(same_bits(dyout.to_host(), y_ref));
  auto const dw = ddw.to_host();
  CHECK(same_bits(dw, dw_ref));
  CHECK(same_bits(ddw2.to_host(), dw));
  CHECK(rel_error(dw, std::vector<double>(ref64.weight.grad.data(), ref64.weight.grad.data() + vocab * dim)) <
        fp32_tol);
}

TEST_CASE("cuda embedding: gather and deterministic scatter-add match the host layer (the sums' order bit for bit)") {
  if (!gpu_or_skip()) {
    return;
  }
  check_embedding(37, 37, 500, 1);
  check_embedding(40, 64, 1, 2);
  check_embedding(1000, 8, 70000, 3);  // ids of 10 bits: two radix passes
  check_embedding(13, 100, 20000, 4);  // runs of about 1500 tokens, columns past a tile of 32
}

TEST_CASE("cuda embedding: ids out of range give NaN rows forward and nothing backward") {
  if (!gpu_or_skip()) {
    return;
  }
  std::int64_t const vocab = 6, dim = 5;
  std::vector<std::int32_t> const tokens{2, -1, 5, 6, 2};
  auto const weight = normal(static_cast<std::size_t>(vocab * dim), 1.0, 9);
  auto const dy = normal(tokens.size() * dim, 1.0, 10);
  ssmlen::backends::cuda_stream stream;
  auto dtok = on_device(tokens);
  auto dweight = on_device(weight), ddy = on_device(dy);
  auto ddw = on_device(std::vector<float>(weight.size(), 0.0f));
  auto dyout = poisoned(tokens.size() * dim);
  lc::embedding_forward(stream.backend(), vocab, dim, dweight.data(), dtok.data(), 5, dyout.data());
  lc::embedding_backward(stream.backend(), vocab, dim, dtok.data(), 5, ddy.data(), ddw.data());
  stream.synchronize();
  auto const y = dyout.to_host(), dw = ddw.to_host();
  for (std::int64_t d = 0; d < dim; ++d) {
    CHECK(y[static_cast<std::size_t>(d)] == weight[static_cast<std::size_t>(2 * dim + d)]);
    CHECK(std::isnan(y[static_cast<std::size_t>(dim + d)]));
    CHECK(std::isnan(y[static_cast<std::size_t>(3 * dim + d)]));
    CHECK(dw[static_cast<std::size_t>(2 * dim + d)] ==
          dy[static_cast<std::size_t>(d)] + dy[static_cast<std::size_t>(4 * dim + d)]);
    CHECK(dw[static_cast<std::size_t>(5 * dim + d)] == dy[static_cast<std::size_t>(2 * dim + d)]);
  }
  double other = 0;
  for (std::int64_t id : {0, 1, 3, 4}) {
    for (std::int64_t d = 0; d < dim; ++d) {
      other += std::abs(dw[static_cast<std::size_t>(id * dim + d)]);
    }
  }
  CHECK(other == 0.0);
}

// ---------------------------------------------------------------------------------------------------------------
// Conv1d

//! fused: the forward also writes silu(y) and its bf16 rounding, and the backward also writes dx rounded to bf16
//! (then, again, that rounding alone). misaligned: those new pointers one element off alignment (the other pointers
//! stay aligned), which must select the one-channel kernels.
struct conv_shape {
  std::vector<std::int64_t> lengths;
  std::int64_t channels = 0, width = 0, ldx = 0, lddx = 0;
  bool init = false, d_final = false;
  bool fused = false, misaligned = false;
  bool through_silu = false;  // fused only: the forward writes no y, the backward's dy is ∂L/∂silu(y)
};

void check_conv1d(conv_shape const& sh, std::uint64_t seed) {
  CAPTURE(sh.channels);
  CAPTURE(sh.width);
  CAPTURE(sh.ldx);
  CAPTURE(sh.lddx);
  CAPTURE(sh.init);
  CAPTURE(sh.d_final);
  CAPTURE(sh.fused);
  CAPTURE(sh.misaligned);
  CAPTURE(sh.through_silu);
  REQUIRE((sh.fused || !sh.through_silu));
  auto const seqs = ssmlen::sequences::from_lengths(sh.lengths);
  std::int64_t const tokens = seqs.tokens(), c = sh.channels, k = sh.width;
  auto const state = static_cast<std::size_t>(seqs.count() * (k - 1) * c);
  auto x = normal(static_cast<std::size_t>(tokens * sh.ldx), 1.0, seed);
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t j = c; j < sh.ldx; ++j) {
      x[static_cast<std::size_t>(t * sh.ldx + j)] = nan_f;  // row padding must not be read
    }
  }
  auto const weight = normal(static_cast<std::size_t>(c * k), 0.5, seed + 1);
  auto const bias = normal(static_cast<std::size_t>(c), 0.5, seed + 2);
  auto const init = sh.init ? normal(state, 1.0, seed + 3) : std::vector<float>{};
  auto const dy = normal(static_cast<std::size_t>(tokens * c), 1.0, seed + 4);
  auto const d_final = sh.d_final ? normal(state, 1.0, seed + 5) : std::vector<float>{};
  auto const dw0 = normal(weight.size(), 1.0, seed + 6), db0 = normal(bias.size(), 1.0, seed + 7);

  ssmlen::layers::conv1d<double> ref(c, k);
  std::copy(weight.begin(), weight.end(), ref.weight.value.data());
  std::copy(bias.begin(), bias.end(), ref.bias.value.data());
  std::copy(dw0.begin(), dw0.end(), ref.weight.grad.data());
  std::copy(db0.begin(), db0.end(), ref.bias.grad.data());
  auto const wx = widen(x), winit = widen(init), wdf = widen(d_final);
  auto const wdy = widen(dy);
  std::vector<double> y_ref(static_cast<std::size_t>(tokens * c)), final_ref(state), d_init_ref(state);
  std::vector<double> dx_ref(static_cast<std::size_t>(tokens * sh.lddx));
  ssmlen::backends::host const be;
  ref.forward(be, seqs, wx.data(), sh.ldx, y_ref.data(), sh.init ? winit.data() : nullptr, final_ref.data());
  std::vector<double> silu_ref(y_ref.size());
  for (std::size_t i = 0; i < y_ref.size(); ++i) {
    silu_ref[i] = ssmlen::silu(y_ref[i]);
  }
  ref.backward(be, seqs, wx.data(), sh.ldx, wdy.data(), dx_ref.data(), sh.lddx, sh.init ? winit.data() : nullptr,
               sh.d_final ? wdf.data() : nullptr, d_init_ref.data(), sh.through_silu ? y_ref.data() : nullptr);

  std::vector<std::int64_t> offsets;
  for (std::int64_t s = 0; s <= seqs.count(); ++s) {
    offsets.push_back(s < seqs.count() ? seqs.begin(s) : tokens);
  }
  auto doff = on_device(offsets);
  auto dx_in = on_device(x), dweight = on_device(weight), dbias = on_device(bias), dinit = on_device(init),
       ddy = on_device(dy), ddf = on_device(d_final), ddw = on_device(dw0), ddb = on_device(db0);
  auto dyout = poisoned(y_ref.size()), dfinal = poisoned(state), ddx = poisoned(dx_ref.size()),
       ddinit = poisoned(state);
  ssmlen::device_sequences const ps{doff.data(), seqs.count(), tokens};
  lc::conv1d_weights const w{c, k, dweight.data(), dbias.data()};
  ssmlen::backends::cuda_stream stream;
  // The fused outputs, one element longer than they need: the misaligned pointers start one element in.
  std::size_t const off = sh.misaligned ? 1 : 0;
  auto dsilu = poisoned(y_ref.size() + 1);
  auto dsilu16 = poisoned_bf16(y_ref.size() + 1);
  auto ddx16 = poisoned_bf16(dx_ref.size() + 1);
  lc::conv_silu_out const silu_out{sh.fused ? dsilu.data() + off : nullptr, sh.fused ? dsilu16.data() + off : nullptr};
  lc::conv1d_forward(stream.backend(), ps, w, dx_in.data(), sh.ldx, sh.through_silu ? nullptr : dyout.data(),
                     sh.init ? dinit.data() : nullptr, dfinal.data(), silu_out);
  stream.synchronize();
  auto const y = dyout.to_host();
  if (sh.through_silu) {  // y was not asked for: it keeps its poison
    CHECK(std::all_of(y.begin(), y.end(), [](float v) { return std::isnan(v); }));
  } else {
    CHECK(rel_error(y, y_ref) < fp32_tol);
  }
  CHECK(rel_error(dfinal.to_host(), final_ref) < fp32_tol);
  ssmlen::bfloat16* const dx16_out = sh.fused ? ddx16.data() + off : nullptr;
  if (sh.fused) {
    auto const act = dsilu.to_host();
    auto const act16 = dsilu16.to_host();
    std::vector<float> const act_valid(act.begin() + static_cast<std::ptrdiff_t>(off),
                                       act.end() - static_cast<std::ptrdiff_t>(1 - off));
    CHECK(rel_error(act_valid, silu_ref) < fp32_tol);
    // bf16: the rounding of the fp32 activation written beside it, bit for bit; the spare element keeps its poison.
    bool rounded_exactly = true;
    for (std::size_t i = 0; i < act_valid.size(); ++i) {
      rounded_exactly = rounded_exactly && act16[i + off].bits == ssmlen::bfloat16(act_valid[i]).bits;
    }
    CHECK(rounded_exactly);
    CHECK(act16[sh.misaligned ? 0 : act16.size() - 1].bits == bf16_poison);
  }
  auto const dy_of = sh.through_silu ? lc::conv_activation::silu : lc::conv_activation::none;
  lc::conv1d_backward(stream.backend(), ps, w, dx_in.data(), sh.ldx, ddy.data(), ddx.data(), sh.lddx,
                      sh.init ? dinit.data() : nullptr, sh.d_final ? ddf.data() : nullptr, ddinit.data(), ddw.data(),
                      ddb.data(), nullptr, dx16_out, dy_of);
  stream.synchronize();
  // dx: the valid columns match; the row padding keeps its poison.
  auto const dx = ddx.to_host();
  std::vector<float> dx_valid;
  std::vector<double> dx_ref_valid;
  bool padding_untouched = true;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t j = 0; j < sh.lddx; ++j) {
      auto const e = static_cast<std::size_t>(t * sh.lddx + j);
      if (j < c) {
        dx_valid.push_back(dx[e]);
        dx_ref_valid.push_back(dx_ref[e]);
      } else {
        padding_untouched = padding_untouched && std::isnan(dx[e]);
      }
    }
  }
  CHECK(padding_untouched);
  if (sh.fused) {  // dx16: dx's rounding bit for bit in the valid columns, poison in the padding
    auto const dx16 = ddx16.to_host();
    bool rounded_exactly = true;
    for (std::size_t e = 0; e < dx.size(); ++e) {
      bool const valid = static_cast<std::int64_t>(e) % sh.lddx < c;
      std::uint16_t const want = valid ? ssmlen::bfloat16(dx[e]).bits : bf16_poison;
      rounded_exactly = rounded_exactly && dx16[e + off].bits == want;
    }
    CHECK(rounded_exactly);
  }
  double const e_dx = rel_error(dx_valid, dx_ref_valid);
  CHECK(e_dx < fp32_tol);
  CHECK(rel_error(ddinit.to_host(), d_init_ref) < fp32_tol);
  std::vector<double> const dw_ref(ref.weight.grad.data(), ref.weight.grad.data() + c * k);
  std::vector<double> const db_ref(ref.bias.grad.data(), ref.bias.grad.data() + c);
  double const e_dw = rel_error(ddw.to_host(), dw_ref);
  CHECK(e_dw < fp32_tol);
  CHECK(rel_error(ddb.to_host(), db_ref) < fp32_tol);
  std::printf("conv1d C=%lld K=%lld ldx=%lld init=%d d_final=%d fused=%d through_silu=%d: dx %.2e, dweight %.2e\n",
              static_cast<long long>(c), static_cast<long long>(k), static_cast<long long>(sh.ldx), sh.init ? 1 : 0,
              sh.d_final ? 1 : 0, sh.fused ? 1 : 0, sh.through_silu ? 1 : 0, e_dx, e_dw);

  // dweight, dbias: the same bits when recomputed from the same start. Fused: this time dx16 alone, without dx (as
  // the block with bf16 GEMMs asks), the same bits again.
  auto ddw2 = on_device(dw0), ddb2 = on_device(db0);
  auto ddx16_alone = poisoned_bf16(dx_ref.size() + 1);
  lc::conv1d_backward(stream.backend(), ps, w, dx_in.data(), sh.ldx, ddy.data(), sh.fused ? nullptr : ddx.data(),
                      sh.lddx, sh.init ? dinit.data() : nullptr, sh.d_final ? ddf.data() : nullptr, nullptr,
                      ddw2.data(), ddb2.data(), nullptr, sh.fused ? ddx16_alone.data() + off : nullptr, dy_of);
  stream.synchronize();
  CHECK(same_bits(ddw2.to_host(), ddw.to_host()));
  CHECK(same_bits(ddb2.to_host(), ddb.to_host()));
  if (sh.fused) {
    auto const a = ddx16_alone.to_host(), b = ddx16.to_host();
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(ssmlen::bfloat16)) == 0);
  }

  // Fused: dy in two parts, as the block with bf16 GEMMs gives it: a = bf16(dy / 2) in dy_add and dy - a in fp32
  // (their sum is dy within fp32 rounding), so a part not added, or added twice, shows in every output.
  if (sh.fused) {
    std::vector<ssmlen::bfloat16> add(dy.size() + 1, ssmlen::bfloat16(nan_f));  // misaligned: one element in
    std::vector<float> rest(dy.size());
    for (std::size_t i = 0; i < dy.size(); ++i) {
      add[i + off] = ssmlen::bfloat16(0.5f * dy[i]);
      rest[i] = dy[i] - static_cast<float>(add[i + off]);
    }
    auto dadd = on_device(add);
    auto drest = on_device(rest), ddw3 = on_device(dw0), ddb3 = on_device(db0);
    auto ddx3 = poisoned(dx_ref.size()), ddinit3 = poisoned(state);
    lc::conv1d_backward(stream.backend(), ps, w, dx_in.data(), sh.ldx, drest.data(), ddx3.data(), sh.lddx,
                        sh.init ? dinit.data() : nullptr, sh.d_final ? ddf.data() : nullptr, ddinit3.data(),
                        ddw3.data(), ddb3.data(), nullptr, nullptr, dy_of, dadd.data() + off);
    stream.synchronize();
    auto const dx3 = ddx3.to_host();
    std::vector<float> dx3_valid;
    for (std::size_t e = 0; e < dx3.size(); ++e) {
      if (static_cast<std::int64_t>(e) % sh.lddx < c) {
        dx3_valid.push_back(dx3[e]);
      }
    }
    CHECK(rel_error(dx3_valid, dx_ref_valid) < fp32_tol);
    CHECK(rel_error(ddinit3.to_host(), d_init_ref) < fp32_tol);
    CHECK(rel_error(ddw3.to_host(), dw_ref) < fp32_tol);
    CHECK(rel_error(ddb3.to_host(), db_ref) < fp32_tol);
  }
}

//! The conv1d cases in one mode (`fused`: the silu and bf16 outputs; `through_silu`: also the backward through the
//! SiLU): at C = 37 (one channel per thread) and 64 (16-byte vectors) every width of `widths`, without and with the
//! states, on ragged lengths (an empty sequence, sequences shorter than K - 1, whose states reach into the initial
//! one); strided rows, vectorized and not; the `wide` widths (5-8: the 8-wide register window; 9: taps read from
//! memory), fused ones also with only the new pointers misaligned; and sequences, empty ones too, starting and ending
//! on the edges of the forward's 16-token runs and the backward's 128-token blocks, one spanning three blocks.
void check_conv1d_cases(bool fused, bool through_silu, std::initializer_list<std::int64_t> widths,
                        std::initializer_list<std::int64_t> wide, std::uint64_t seed) {
  std::vector<std::int64_t> const ragged{1, 7, 0, 130, 2, 300};
  std::vector<std::int64_t> const edges{0, 16, 0, 0, 3, 1, 12, 0, 96, 2, 14, 0, 16, 1, 0, 128, 300, 1};
  auto const check = [&](std::vector<std::int64_t> const& lengths, std::int64_t c, std::int64_t k, std::int64_t ldx,
                         std::int64_t lddx, bool init, bool d_final, bool misaligned = false) {
    check_conv1d({lengths, c, k, ldx, lddx, init, d_final, fused, misaligned, through_silu}, seed++);
  };
  for (std::int64_t c : {37, 64}) {
    for (std::int64_t k : widths) {
      for (bool states : {false, true}) {
        check(ragged, c, k, c, c, states, states);
      }
    }
  }
  check(ragged, 64, 4, 128, 68, true, false);  // strided rows, still vectorized
  check(ragged, 64, 4, 66, 65, false, true);   // strides not a multiple of 4: scalar path
  check({1, 7, 130}, 37, 4, 40, 37, true, true);
  for (std::int64_t k : wide) {
    check(ragged, 64, k, 64, 64, true, true);
    check(ragged, 37, k, 37, 37, true, false);
    if (fused) {
      check(ragged, 64, k, 64, 64, true, true, true);
    }
  }
  check(edges, 64, 4, 64, 64, true, true);
  check(edges, 37, 4, 37, 37, false, true);
}

TEST_CASE("cuda conv1d: forward and backward match the host layer on ragged sequences, with and without states") {
  if (gpu_or_skip()) {
    check_conv1d_cases(false, false, {4, 3, 1}, {2, 5, 9}, 1);
  }
}

TEST_CASE("cuda conv1d: the fused silu and bf16 outputs match the host layer and the roundings") {
  if (gpu_or_skip()) {
    check_conv1d_cases(true, false, {4, 1}, {3, 5, 9}, 200);
  }
}

TEST_CASE("cuda conv1d: the backward through the SiLU (y recomputed, none stored) matches the host layer's") {
  if (gpu_or_skip()) {
    check_conv1d_cases(true, true, {4, 3, 2, 1}, {5, 8, 9}, 300);
  }
}

TEST_CASE("cuda conv1d: step matches the host layer over consecutive tokens") {
  if (!gpu_or_skip()) {
    return;
  }
  for (std::int64_t c : {37, 64}) {
    for (std::int64_t k : {4, 1, 2, 3, 6}) {  // 2-4: the window in registers; 1 and 6: the general loop
      CAPTURE(c);
      CAPTURE(k);
      std::int64_t const batch = 5, ldx = c + 3;
      ssmlen::layers::conv1d<double> ref(c, k);
      auto const weight = normal(static_cast<std::size_t>(c * k), 0.5, 70 + c + k);
      auto const bias = normal(static_cast<std::size_t>(c), 0.5, 71 + c + k);
      std::copy(weight.begin(), weight.end(), ref.weight.value.data());
      std::copy(bias.begin(), bias.end(), ref.bias.value.data());
      auto const state0 = normal(static_cast<std::size_t>(batch * (k - 1) * c), 1.0, 72 + c + k);
      std::vector<double> state_ref = widen(state0);
      auto dweight = on_device(weight), dbias = on_device(bias), dstate = on_device(state0);
      lc::conv1d_weights const w{c, k, dweight.data(), dbias.data()};
      ssmlen::backends::cuda_stream stream;
      ssmlen::backends::host const be;
      for (int step = 0; step < 3; ++step) {
        auto const x = normal(static_cast<std::size_t>(batch * ldx), 1.0, 80 + step);
        auto const wx = widen(x);
        std::vector<double> y_ref(static_cast<std::size_t>(batch * c));
        ref.step(be, wx.data(), ldx, y_ref.data(), state_ref.data(), batch);
        bool const with_silu = step == 2;  // the Mamba block's form: the activation of the convolution
        if (with_silu) {
          for (auto& v : y_ref) {
            v = ssmlen::silu(v);
          }
        }
        auto dx = on_device(x);
        auto dy = poisoned(y_ref.size());
        device_buffer<ssmlen::bfloat16> dy16(step == 1 ? 0 : y_ref.size());  // the second step: y16 not asked for
        dy16.fill_bytes(0xFF, nullptr);
        lc::conv1d_step(stream.backend(), w, dx.data(), ldx, dy.data(), dstate.data(), batch,
                        with_silu ? lc::conv_activation::silu : lc::conv_activation::none,
                        step == 1 ? nullptr : dy16.data());
        stream.synchronize();
        auto const y = dy.to_host();
        CHECK(rel_error(y, y_ref) < fp32_tol);
        CHECK(rel_error(dstate.to_host(), state_ref) < fp32_tol);
        if (step != 1) {  // y16 is y rounded to nearest even, bit for bit
          CHECK(mismatched_roundings(dy16.to_host(), y) == 0);
        }
      }
    }
  }
}

TEST_CASE("cuda layers: shapes past the grid caps (grid-stride loops)") {
  if (!gpu_or_skip()) {
    return;
  }
  check_rmsnorm({.rows = 70001, .dim = 8, .fused = true, .rounded = true}, 90);  // 8 rows a block, at most 8192 blocks
  check_conv1d({{20000, 1, 0, 20003}, 256, 4, 256, 256, true, true}, 91);        // 2.56 M vectors > 8192 × 256 threads
}

// ---------------------------------------------------------------------------------------------------------------
// One small call of every kernel, for the memory, race and initialization checkers.

TEST_CASE("cuda layers: small shapes of every kernel") {
  if (!gpu_or_skip()) {
    return;
  }
  using ssmlen::backends::gemm_precision;
  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  for (auto p : {gemm_precision::fp32, gemm_precision::tf32, gemm_precision::bf16}) {
    CHECK(gemm_error(h, {trans::t, trans::n, 9, 7, 5, 1.0f, 0.0f}, p, false, 3) < bf16_tol);
  }
  check_rmsnorm({.rows = 70, .dim = 37, .fused = true, .accumulate = true, .rounded = true}, 5);
  check_rmsnorm({.rows = 7, .dim = 1028, .fused = true, .accumulate = true, .rounded = true, .y_too = false}, 4);
  check_cross_entropy(70, 37, true, 1.0f, 6);
  check_embedding(37, 8, 100, 7);
  check_conv1d({{1, 7, 0, 130, 2}, 64, 4, 64, 64, true, true}, 8);
  check_conv1d({{1, 7, 0, 130, 2}, 37, 3, 37, 37, true, true}, 9);
  check_conv1d({{1, 7, 0, 130, 2}, 64, 4, 64, 64, true, true, true}, 12);
  check_conv1d({{1, 7, 0, 130, 2}, 37, 9, 37, 37, true, true, true}, 13);
  std::int64_t const n = 5000;
  auto value = on_device(normal(n, 1.0, 10)), grad = on_device(normal(n, 1.0, 11));
  auto m = on_device(std::vector<float>(n, 0.0f)), v = on_device(std::vector<float>(n, 0.0f));
  ssmlen::train::cuda::adamw opt({}, {{value.data(), grad.data(), m.data(), v.data(), n, true}}, stream.backend());
  opt.step(1e-3);
  CHECK(std::isfinite(opt.grad_norm()));
}

TEST_CASE("cuda layers: bad arguments throw before any launch") {
  ssmlen::backends::cuda const be{};
  float const f = 0;
  float out = 0;
  CHECK_THROWS_AS(lc::rmsnorm_forward(be, 4, 0, 1e-5, &f, nullptr, nullptr, &f, &out, nullptr), ssmlen::error);
  CHECK_THROWS_AS(lc::rmsnorm_forward(be, 4, 8, 0.0, &f, nullptr, nullptr, &f, &out, nullptr), ssmlen::error);
  CHECK_THROWS_AS(lc::rmsnorm_forward(be, 4, 8, 1e-5, &f, &f, nullptr, &f, &out, nullptr), ssmlen::error);
  CHECK_THROWS_AS(lc::rmsnorm_backward(be, -1, 8, &f, &f, &f, &f, &out, &out, false), ssmlen::error);
  CHECK_THROWS_AS(lc::rmsnorm_forward(be, 4, 8, 1e-5, &f, nullptr, nullptr, &f, nullptr, nullptr, nullptr),
                  ssmlen::error);  // neither y nor y16
  // A bf16 output must not overwrite what the kernel reads or its fp32 output.
  auto* const out16 = reinterpret_cast<ssmlen::bfloat16*>(&out);
  CHECK_THROWS_AS(lc::rmsnorm_forward(be, 4, 8, 1e-5, &f, nullptr, nullptr, &f, &out, nullptr, out16), ssmlen::error);
  CHECK_THROWS_AS(lc::rmsnorm_backward(be, 4, 8, &f, &f, &f, &f, &out, &out, false, nullptr, out16), ssmlen::error);
  std::int32_t const id = 0;
  ssmlen::ops::cross_entropy_result r;
  CHECK_THROWS_AS(ssmlen::ops::cuda::softmax_cross_entropy(be, 4, 0, &f, &id, nullptr, nullptr, 1.0f, &r),
                  ssmlen::error);
  CHECK_THROWS_AS(ssmlen::ops::cuda::softmax_cross_entropy(be, 4, 8, &f, &id, nullptr, nullptr, 1.0f, nullptr),
                  ssmlen::error);
  CHECK_THROWS_AS(lc::embedding_forward(be, 0, 8, &f, &id, 1, &out), ssmlen::error);
  CHECK_THROWS_AS(lc::embedding_forward(be, 8, 0, &f, &id, 1, &out), ssmlen::error);
  std::int64_t const off = 0;
  ssmlen::device_sequences const ps{&off, 1, 4};
  CHECK_THROWS_AS(lc::conv1d_forward(be, ps, {8, 0, &f, &f}, &f, 8, &out, nullptr, nullptr), ssmlen::error);
  CHECK_THROWS_AS(lc::conv1d_forward(be, ps, {8, 4, &f, &f}, &f, 7, &out, nullptr, nullptr), ssmlen::error);
  CHECK_THROWS_AS(lc::conv1d_forward(be, {&off, 0, 4}, {8, 4, &f, &f}, &f, 8, &out, nullptr, nullptr), ssmlen::error);
  CHECK_THROWS_AS(
      lc::conv1d_backward(be, ps, {8, 4, &f, &f}, &f, 8, &f, &out, 7, nullptr, nullptr, nullptr, &out, &out),
      ssmlen::error);
  float y = 0;  // the fused outputs must not overwrite what the backward reads, nor dx16 dx
  CHECK_THROWS_AS(lc::conv1d_forward(be, ps, {8, 4, &f, &f}, &f, 8, &y, nullptr, nullptr, {&y, nullptr}),
                  ssmlen::error);
  CHECK_THROWS_AS(lc::conv1d_backward(be, ps, {8, 4, &f, &f}, &f, 8, &f, &y, 8, nullptr, nullptr, nullptr, &out, &out,
                                      nullptr, reinterpret_cast<ssmlen::bfloat16*>(&y)),
                  ssmlen::error);
  CHECK_THROWS_AS(
      lc::conv1d_backward(be, ps, {8, 4, &f, &f}, &f, 8, &f, nullptr, 8, nullptr, nullptr, nullptr, &out, &out),
      ssmlen::error);  // neither dx nor dx16
  CHECK_THROWS_AS(lc::conv1d_step(be, {8, 4, &f, &f}, &f, 8, &out, nullptr, 2), ssmlen::error);
  CHECK_THROWS_AS(ssmlen::train::cuda::adamw({.lr = -1.0}, {}, be), ssmlen::error);
  CHECK_THROWS_AS(ssmlen::train::cuda::adamw({}, {{nullptr, nullptr, nullptr, nullptr, 3, false}}, be), ssmlen::error);
}

}  // namespace
