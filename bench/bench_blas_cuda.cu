// SPDX-License-Identifier: Apache-2.0
// The GEMMs of one Mamba layer of the training step at the paper's shape (d_model 768, d_inner 1536, dt_rank 48,
// d_state 16; the paper-scale run's batches, 15,407 tokens), bf16 operands and fp32 sums as the bf16 block calls
// them, each timed through backends::gemm (cublasGemmEx: cuBLAS picks the algorithm) and through every algorithm
// cuBLASLt's heuristic offers for the same problem (at most 8), on random operands. It answers whether choosing
// among those candidates per shape, by timing, would shorten the step. One row per GEMM, then `layer`, their sums.
// Counters (µs: the median of 15 timings of 20 back-to-back launches, so that the host's enqueue time is hidden):
//   gemm_us      backends::gemm
//   first_us     cuBLASLt's first candidate
//   best_us      the fastest candidate that gave the same bits on two runs (a split-K candidate whose slices were
//                added in a varying order would not), and best, its index
//   speedup      gemm_us / best_us
//   TF/s         the GEMM's flops over gemm_us
//   rel_diff     the largest |difference| between a candidate's result and backends::gemm's, over the largest |value|
//   candidates   how many cuBLASLt offered
#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cublasLt.h>
#include <map>
#include <string>
#include <vector>

#include "cuda_event_timing.cuh"
#include "cuda_random.cuh"

namespace {

using ssmlen::bfloat16;
using ssmlen::backends::cublas_check;
using ssmlen::backends::cuda_check;
using ssmlen::backends::device_buffer;
using ssmlen::ops::trans;

//! Row-major C[M, N] = op(A)[M, K] op(B)[K, N] + beta C, as backends::gemm takes it.
struct layer_gemm {
  char const* name;
  trans ta, tb;
  std::int64_t m, n, k;
  float beta;
  bool c_bf16;  // C written in bf16 (x_proj's backward into dxs)
};

constexpr std::int64_t tokens = 15407, d = 768, ed = 1536, r = 48, w = r + 2 * 16;
// The bf16 block's GEMMs in the order of a step (layers/cuda/mamba_block.cuh): forward, then backward.
constexpr std::array<layer_gemm, 12> gemms{{
    {"in_proj", trans::n, trans::t, tokens, 2 * ed, d, 0.0f, false},
    {"x_proj", trans::n, trans::t, tokens, w, ed, 0.0f, false},
    {"dt_proj", trans::n, trans::t, tokens, ed, r, 0.0f, false},
    {"out_proj", trans::n, trans::t, tokens, d, ed, 0.0f, false},
    {"out_proj_dweight", trans::t, trans::n, d, ed, tokens, 1.0f, false},
    {"out_proj_dinput", trans::n, trans::n, tokens, ed, d, 0.0f, false},
    {"dt_proj_dweight", trans::t, trans::n, ed, r, tokens, 1.0f, false},
    {"dt_proj_dinput", trans::n, trans::n, tokens, r, ed, 0.0f, false},
    {"x_proj_dweight", trans::t, trans::n, w, ed, tokens, 1.0f, false},
    {"x_proj_dinput_bf16", trans::n, trans::n, tokens, ed, w, 0.0f, true},
    {"in_proj_dweight", trans::t, trans::n, 2 * ed, d, tokens, 1.0f, false},
    {"in_proj_dinput", trans::n, trans::n, tokens, d, 2 * ed, 1.0f, false},
}};

struct result {
  double gemm_us = 0, first_us = 0, best_us = 0, rel_diff = 0;
  int best = -1, candidates = 0;
};

//! Microseconds per launch of `enqueue`: the median of 15 event timings of 20 back-to-back launches, after 20.
template <class F>
double launch_us(cudaStream_t stream, F&& enqueue) {
  auto const twenty = [&] {
    for (int i = 0; i < 20; ++i) {
      enqueue();
    }
  };
  return median_event_seconds(stream, twenty, 15, 1) * 1e6 / 20;
}

//! C's bytes, copied to the host.
std::vector<unsigned char> host_bytes(void const* c, std::size_t bytes) {
  std::vector<unsigned char> out(bytes);
  cuda_check(cudaMemcpy(out.data(), c, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
  return out;
}

//! C's values from its bytes (bf16 or fp32), widened to float.
std::vector<float> floats_of(std::vector<unsigned char> const& bytes, bool bf16) {
  std::size_t const count = bytes.size() / (bf16 ? 2 : 4);
  std::vector<float> out(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (bf16) {
      bfloat16 v;
      std::memcpy(&v, bytes.data() + 2 * i, 2);
      out[i] = static_cast<float>(v);
    } else {
      std::memcpy(&out[i], bytes.data() + 4 * i, 4);
    }
  }
  return out;
}

//! Times gemms[index] through backends::gemm and through each cuBLASLt candidate (cached: `layer` reuses it).
result const& measure(std::size_t index) {
  static std::map<std::size_t, result> cache;
  if (auto it = cache.find(index); it != cache.end()) {
    return it->second;
  }
  layer_gemm const& g = gemms[index];
  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  cudaStream_t const st = stream.get();
  auto const c_count = static_cast<std::size_t>(g.m * g.n);
  auto const a = random_buffer<bfloat16>(g.m * g.k, 1, -0.1f, 0.1f),
             b = random_buffer<bfloat16>(g.k * g.n, 2, -0.1f, 0.1f);
  device_buffer<bfloat16> c16(g.c_bf16 ? c_count : 1), c16_ref(g.c_bf16 ? c_count : 1);
  device_buffer<float> c(g.c_bf16 ? 1 : c_count), c_ref(g.c_bf16 ? 1 : c_count);
  cuda_check(cudaDeviceSynchronize(), "random operands");  // made on the default stream
  void* const c_out = g.c_bf16 ? static_cast<void*>(c16.data()) : static_cast<void*>(c.data());
  void* const c_lib = g.c_bf16 ? static_cast<void*>(c16_ref.data()) : static_cast<void*>(c_ref.data());
  std::size_t const c_bytes = c_count * (g.c_bf16 ? 2 : 4);
  // Row strides as stored: A [M, K] or [K, M], B [K, N] or [N, K], C [M, N].
  std::int64_t const lda = g.ta == trans::n ? g.k : g.m, ldb = g.tb == trans::n ? g.n : g.k;
  auto const library = [&](void* out) {
    if (g.c_bf16) {
      ssmlen::backends::gemm(h, g.ta, g.tb, g.m, g.n, g.k, 1.0f, {nullptr, lda, a.data()}, {nullptr, ldb, b.data()},
                             g.beta, static_cast<bfloat16*>(out), g.n);
    } else {
      ssmlen::backends::gemm(h, g.ta, g.tb, g.m, g.n, g.k, 1.0f, a.data(), lda, b.data(), ldb, g.beta,
                             static_cast<float*>(out), g.n);
    }
  };
  result res;
  cuda_check(cudaMemsetAsync(c_lib, 0, c_bytes, st), "cudaMemsetAsync");
  res.gemm_us = launch_us(st, [&] { library(c_out); });
  cuda_check(cudaMemsetAsync(c_lib, 0, c_bytes, st), "cudaMemsetAsync");
  library(c_lib);  // the reference: one call on zeros (beta C adds nothing)
  std::vector<float> const ref = floats_of(host_bytes(c_lib, c_bytes), g.c_bf16);
  float ref_max = 0;
  for (float v : ref) {
    ref_max = std::max(ref_max, std::fabs(v));
  }

  // Column-major, as cuBLAS sees it: Cᵀ[N, M] = op(B)ᵀ[N, K] op(A)ᵀ[K, M], operands swapped.
  cublasLtHandle_t lt = nullptr;
  cublas_check(cublasLtCreate(&lt), "cublasLtCreate");
  cublasOperation_t const op_b = g.tb == trans::n ? CUBLAS_OP_N : CUBLAS_OP_T;
  cublasOperation_t const op_a = g.ta == trans::n ? CUBLAS_OP_N : CUBLAS_OP_T;
  auto const rows = [](cublasOperation_t op, std::int64_t outer, std::int64_t inner) {
    return op == CUBLAS_OP_N ? outer : inner;  // rows of the stored column-major operand
  };
  cublasLtMatmulDesc_t desc = nullptr;
  cublas_check(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  cublas_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_b, sizeof(op_b)), "transa");
  cublas_check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_a, sizeof(op_a)), "transb");
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cudaDataType_t const c_type = g.c_bf16 ? CUDA_R_16BF : CUDA_R_32F;
  cublas_check(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, static_cast<std::uint64_t>(rows(op_b, g.n, g.k)),
                                          static_cast<std::uint64_t>(rows(op_b, g.k, g.n)), ldb),
               "layout B");
  cublas_check(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, static_cast<std::uint64_t>(rows(op_a, g.k, g.m)),
                                          static_cast<std::uint64_t>(rows(op_a, g.m, g.k)), lda),
               "layout A");
  cublas_check(
      cublasLtMatrixLayoutCreate(&lc, c_type, static_cast<std::uint64_t>(g.n), static_cast<std::uint64_t>(g.m), g.n),
      "layout C");
  std::size_t const workspace_bytes = std::size_t{64} << 20;
  device_buffer<char> workspace(workspace_bytes);
  cublasLtMatmulPreference_t pref = nullptr;
  cublas_check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  cublas_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                    sizeof(workspace_bytes)),
               "workspace preference");
  std::array<cublasLtMatmulHeuristicResult_t, 8> found{};
  cublas_check(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, static_cast<int>(found.size()),
                                              found.data(), &res.candidates),
               "cublasLtMatmulAlgoGetHeuristic");
  float const alpha = 1.0f, beta = g.beta;
  for (int i = 0; i < res.candidates; ++i) {
    auto const run = [&](void* out) {
      cublas_check(cublasLtMatmul(lt, desc, &alpha, b.data(), la, a.data(), lb, &beta, out, lc, out, lc,
                                  &found[static_cast<std::size_t>(i)].algo, workspace.data(), workspace_bytes, st),
                   "cublasLtMatmul");
    };
    double const us = launch_us(st, [&] { run(c_out); });
    cuda_check(cudaMemsetAsync(c_out, 0, c_bytes, st), "cudaMemsetAsync");
    run(c_out);
    std::vector<unsigned char> const first_bits = host_bytes(c_out, c_bytes);
    std::vector<float> const first = floats_of(first_bits, g.c_bf16);
    cuda_check(cudaMemsetAsync(c_out, 0, c_bytes, st), "cudaMemsetAsync");
    run(c_out);
    bool const same = host_bytes(c_out, c_bytes) == first_bits;
    for (std::size_t e = 0; e < c_count; ++e) {
      res.rel_diff = std::max(res.rel_diff, double(std::fabs(first[e] - ref[e])) / std::max(ref_max, 1e-30f));
    }
    if (i == 0) {
      res.first_us = us;
    }
    if (same && (res.best < 0 || us < res.best_us)) {
      res.best_us = us, res.best = i;
    }
  }
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(lt);
  cuda_check(cudaStreamSynchronize(st), "bench_blas_cuda");
  return cache[index] = res;
}

void report(benchmark::State& state, result const& res, double flops) {
  for (auto _ : state) {
    state.SetIterationTime(res.gemm_us * 1e-6);
  }
  state.counters["gemm_us"] = res.gemm_us;
  state.counters["first_us"] = res.first_us;
  state.counters["best_us"] = res.best_us;
  if (res.best >= 0) {
    state.counters["best"] = res.best;
  }
  state.counters["speedup"] = res.best_us > 0 ? res.gemm_us / res.best_us : 0.0;
  state.counters["TF/s"] = flops / res.gemm_us * 1e-6;
  state.counters["rel_diff"] = res.rel_diff;
  state.counters["candidates"] = res.candidates;
}

bool device_ready(benchmark::State& state) {
  if (!ssmlen::backends::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return false;
  }
  return true;
}

void bm_layer_gemm(benchmark::State& state) {
  if (!device_ready(state)) {
    return;
  }
  auto const index = static_cast<std::size_t>(state.range(0));
  layer_gemm const& g = gemms[index];
  state.SetLabel(g.name);
  report(state, measure(index), 2.0 * double(g.m) * double(g.n) * double(g.k));
}

//! The layer's twelve GEMMs together: sums of the rows above (each GEMM's best candidate apart).
void bm_layer(benchmark::State& state) {
  if (!device_ready(state)) {
    return;
  }
  result total;
  double flops = 0;
  for (std::size_t i = 0; i < gemms.size(); ++i) {
    result const& r = measure(i);
    total.gemm_us += r.gemm_us, total.first_us += r.first_us, total.best_us += std::min(r.best_us, r.gemm_us);
    total.rel_diff = std::max(total.rel_diff, r.rel_diff), total.candidates += r.candidates;
    flops += 2.0 * double(gemms[i].m) * double(gemms[i].n) * double(gemms[i].k);
  }
  state.SetLabel("layer: the twelve GEMMs; best_us takes backends::gemm where no candidate beat it");
  report(state, total, flops);
}

}  // namespace

BENCHMARK(bm_layer_gemm)
    ->DenseRange(0, static_cast<int>(gemms.size()) - 1)
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_layer)->Iterations(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
