// SPDX-License-Identifier: Apache-2.0
// One training step of the CUDA Mamba language model (forward, masked cross-entropy, backward, AdamW; the step
// waits for its loss and gradient norm), timed by wall clock per step after two warm-up steps, on two shapes:
//   headline  the addition task's model: 4 layers, d_model 64, d_state 16, expand 2, tied embeddings; batches of
//             128 expert traces of additions of at most 5 digits (train::task_batch, as `ssmlen train` samples)
//   paper     the 130M Mamba's shape: 24 layers, d_model 768, d_state 16, expand 2, tied, with the addition
//             vocabulary; 8 sequences × 2048 random tokens, every target counted
//   paper_addition  the same model on the paper-scale run's batches: 128 addition traces of at most 5 digits packed
//             4 to a sequence (32 sequences of about 600 tokens, examples/configs/addition_paper_scale.json)
//   headline_long  the headline model on one sequence of 65,536 random tokens, with the default scan (state_split)
//             and with chunked<128> (`bm_train_step_chunked`), which splits the sequence in time
//   peer      the paper's model on batches × length random tokens (the benchmark's two arguments), the shape
//             bench/peers/compare_hf.py runs Hugging Face's MambaForCausalLM on beside it
// with fp32, TF32 and bf16 GEMMs; `_graphs` runs set mamba_lm_options::step_graphs (on a stream of their own): a step
// whose batch has the previous step's layout replays a CUDA graph (every step of the paper shape's fixed 8 × 2048
// batches after the first; never on addition batches, whose layout changes every step). Counters:
//   tok/s      packed input tokens per second at the median step time (step_ms)
//   mfu        model-flops utilization: 6 · parameters · tok/s (forward 2, backward 4 per parameter and token) over
//              bf16_TF/s, the bf16 matrix rate of the GPU (a cuBLAS 8192³ GEMM of bf16 operands, fp32 accumulate)
//   mfu_prec   the same flops over gemm_TF/s, an 8192³ GEMM in the step's own precision: how much of what that
//              precision can reach the step turns into model flops
//   mfu_sust   the same flops over bf16_sust_TF/s, the bf16 8192³ GEMM on random operands after 2 s of them. The
//              operands of bf16_TF/s (every element 0.0115) switch few transistors, so those GEMMs run at the
//              card's burst rate; on random operands the card reaches its power limit and lowers its clock, which
//              is the rate a long run's GEMMs get (an H200 at 700 W: 868 against about 650 TFLOP/s). mfu divides by
//              the burst rate, the higher of the two
//   replayed   (_graphs runs) the share of timed steps that replayed a captured graph
//   device_GB  device memory in use after the steps, this process's models and pools included (an upper bound on
//              what the step needs)
//   params, vocab  the model's parameter count and vocabulary size (a peer builds the same model from them)
// The rates are measured in this process (median of 10; the sustained one, median of 5 timings of 20 GEMMs). With
// SSMLEN_PROFILE_STEP set, the first timed step of each benchmark runs between cudaProfilerStart and cudaProfilerStop,
// so that `ncu --profile-from-start off` sees one whole step (tests/cuda/profile_on_gpu.sh train: time per kernel).
#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/cuda/mamba_lm.cuh>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/any_task.hpp>
#include <ssmlen/train/batch.hpp>
#include <ssmlen/train/task_batches.hpp>

#include <benchmark/benchmark.h>
#include <cuda_profiler_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "cuda_event_timing.cuh"
#include "cuda_random.cuh"

namespace {

using ssmlen::backends::cuda_check;
using ssmlen::backends::gemm_precision;

char const* name_of(gemm_precision p) {
  return p == gemm_precision::fp32 ? "fp32" : p == gemm_precision::tf32 ? "tf32" : "bf16";
}

//! FLOP/s of an n³ GEMM in precision p on a fresh stream, median of 10 after 3 warm-up calls; measured once.
double gemm_rate(gemm_precision p) {
  static std::map<gemm_precision, double> rates;
  if (auto it = rates.find(p); it != rates.end()) {
    return it->second;
  }
  constexpr std::int64_t n = 8192;
  auto const elems = static_cast<std::size_t>(n * n);
  ssmlen::backends::device_buffer<float> a(elems), b(elems), c(elems);
  ssmlen::backends::device_buffer<ssmlen::bfloat16> a16(elems), b16(elems);
  a.fill_bytes(0x3C);  // 0.0115 in every element: finite, no denormals
  b.fill_bytes(0x3C);
  a16.fill_bytes(0x3C);  // bf16 0x3C3C = 0.0115 too
  b16.fill_bytes(0x3C);
  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  double const seconds = median_event_seconds(stream.get(), [&] {
    if (p == gemm_precision::bf16) {  // bf16 operands: the matrix units' own rate, no conversion in the timing
      ssmlen::backends::gemm(h, ssmlen::ops::trans::n, ssmlen::ops::trans::t, n, n, n, 1.0f, a16.data(), n, b16.data(),
                             n, 0.0f, c.data(), n);
    } else {
      ssmlen::backends::gemm(h, ssmlen::ops::trans::n, ssmlen::ops::trans::t, n, n, n, 1.0f, a.data(), n, b.data(), n,
                             0.0f, c.data(), n, p);
    }
  });
  double const rate = 2.0 * double(n) * double(n) * double(n) / seconds;
  rates[p] = rate;
  return rate;
}

//! FLOP/s of the bf16 8192³ GEMM of gemm_rate on random operands (uniform in [-1, 1)), sustained: after 2 s of
//! such GEMMs back to back, long enough for the card to settle at its power limit, the median of 5 timings of 20
//! back-to-back GEMMs; measured once.
double sustained_bf16_rate() {
  static double const rate = [] {
    constexpr std::int64_t n = 8192;
    auto const a = random_buffer<ssmlen::bfloat16>(n * n, 1, -1.0f, 1.0f);
    auto const b = random_buffer<ssmlen::bfloat16>(n * n, 2, -1.0f, 1.0f);
    ssmlen::backends::device_buffer<float> c(static_cast<std::size_t>(n * n));
    cuda_check(cudaDeviceSynchronize(), "random operands");  // made on the default stream
    ssmlen::backends::cuda_stream stream;
    ssmlen::backends::blas_handle h(stream.backend());
    auto const gemms = [&](int count) {
      for (int i = 0; i < count; ++i) {
        ssmlen::backends::gemm(h, ssmlen::ops::trans::n, ssmlen::ops::trans::t, n, n, n, 1.0f, a.data(), n, b.data(), n,
                               0.0f, c.data(), n);
      }
    };
    auto const start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(2)) {
      gemms(10);
      cuda_check(cudaStreamSynchronize(stream.get()), "sustained GEMMs");
    }
    double const seconds = median_event_seconds(
                               stream.get(), [&] { gemms(20); }, 5, 0) /
                           20;
    return 2.0 * double(n) * double(n) * double(n) / seconds;
  }();
  return rate;
}

ssmlen::tasks::any_task const& addition_task() {
  static ssmlen::tasks::any_task const task(ssmlen::tasks::addition{});
  return task;
}

std::vector<ssmlen::train::batch> addition_batches(int count, std::int64_t traces_per_sequence) {
  std::vector<ssmlen::train::batch> out;
  for (int step = 0; step < count; ++step) {
    out.push_back(ssmlen::train::task_batch(addition_task(), 1, step, 128, 5, traces_per_sequence));
  }
  return out;
}

enum class shape { headline, paper, paper_addition, headline_long, peer };

//! `count` batches of `seqs` sequences of `length` random inputs, every target counted.
std::vector<ssmlen::train::batch> random_batches(int count, std::int64_t seqs, std::int64_t length,
                                                 std::int64_t vocab) {
  std::vector<ssmlen::train::batch> out;
  for (int i = 0; i < count; ++i) {
    ssmlen::rng g(static_cast<std::uint64_t>(100 + i));
    ssmlen::train::batch b;
    for (std::int64_t s = 0; s < seqs; ++s) {
      std::vector<std::int32_t> tokens(static_cast<std::size_t>(length + 1));
      for (auto& t : tokens) {
        t = static_cast<std::int32_t>(g.uniform_int(0, vocab - 1));
      }
      std::vector<std::uint8_t> const predict(tokens.size(), 1);
      b.add(tokens, predict);
    }
    b.finish();
    out.push_back(std::move(b));
  }
  return out;
}

//! One benchmark: the model with scan policy Scan at shape `sh`.
template <class Scan>
void time_train_step(benchmark::State& state, shape sh, gemm_precision precision, bool graphs) {
  if (!ssmlen::backends::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  std::int64_t const vocab = ssmlen::tasks::addition::make_vocab().size();
  ssmlen::models::mamba_config cfg{.vocab = vocab, .d_model = 64, .n_layers = 4, .d_state = 16, .expand = 2};
  if (sh == shape::paper || sh == shape::paper_addition || sh == shape::peer) {
    cfg.d_model = 768;
    cfg.n_layers = 24;
  }
  auto const batches = sh == shape::paper            ? random_batches(2, 8, 2048, vocab)
                       : sh == shape::paper_addition ? addition_batches(4, 4)
                       : sh == shape::headline_long  ? random_batches(2, 1, 65536, vocab)
                       : sh == shape::peer           ? random_batches(2, state.range(0), state.range(1), vocab)
                                                     : addition_batches(8, 1);
  double const rate = gemm_rate(precision);
  ssmlen::models::mamba_lm<float> host(cfg, 1);
  ssmlen::backends::cuda_stream stream;  // used with graphs only: eager runs stay on the legacy default stream
  ssmlen::models::cuda::mamba_lm<Scan> dev(host, {.be = graphs ? stream.backend() : ssmlen::backends::cuda{},
                                                  .precision = precision,
                                                  .optimizer = {.lr = 1e-4},
                                                  .step_graphs = graphs});
  for (int i = 0; i < 2; ++i) {  // warm-up: buffers grow to the largest batch, cuBLAS picks its kernels
    for (auto const& b : batches) {
      dev.train_step(b, 1e-4);
    }
  }
  std::vector<double> seconds;
  std::int64_t tokens = 0;
  double loss = 0;
  std::size_t i = 0;
  bool const profile = std::getenv("SSMLEN_PROFILE_STEP") != nullptr;
  std::int64_t const replays_before = dev.graph_replays();
  for (auto _ : state) {
    auto const& b = batches[i++ % batches.size()];
    bool const profiled = profile && seconds.empty();
    if (profiled) {
      cuda_check(cudaProfilerStart(), "cudaProfilerStart");
    }
    auto const t0 = std::chrono::steady_clock::now();
    auto const r = dev.train_step(b, 1e-4);
    double const s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (profiled) {
      cuda_check(cudaProfilerStop(), "cudaProfilerStop");
    }
    state.SetIterationTime(s);
    seconds.push_back(s);
    tokens += r.tokens;
    loss = r.loss;
  }
  if (seconds.empty()) {
    return;
  }
  std::sort(seconds.begin(), seconds.end());
  double const median = seconds[seconds.size() / 2];
  double const tokens_per_step = double(tokens) / double(seconds.size());
  double const tok_s = tokens_per_step / median;
  double const params = double(dev.n_params());
  char const* const names[] = {"headline", "paper", "paper_addition", "headline_long", "peer"};
  state.SetLabel(std::string(names[static_cast<int>(sh)]) + " " + Scan::name() + " " + name_of(precision) +
                 (graphs ? " graphs " : " ") + std::to_string(static_cast<long long>(params)) + " params, " +
                 std::to_string(static_cast<long long>(tokens_per_step)) + " tokens/step, loss " +
                 std::to_string(loss));
  state.counters["step_ms"] = median * 1e3;
  if (graphs) {  // the share of timed steps that replayed a graph
    state.counters["replayed"] = double(dev.graph_replays() - replays_before) / double(seconds.size());
  }
  state.counters["tok/s"] = tok_s;
  double const bf16_rate = gemm_rate(gemm_precision::bf16);
  state.counters["mfu"] = 6.0 * params * tok_s / bf16_rate;
  state.counters["mfu_prec"] = 6.0 * params * tok_s / rate;
  state.counters["gemm_TF/s"] = rate * 1e-12;
  state.counters["bf16_TF/s"] = bf16_rate * 1e-12;
  double const sustained_rate = sustained_bf16_rate();
  state.counters["mfu_sust"] = 6.0 * params * tok_s / sustained_rate;
  state.counters["bf16_sust_TF/s"] = sustained_rate * 1e-12;
  std::size_t free = 0, total = 0;
  cuda_check(cudaMemGetInfo(&free, &total), "memory info");
  state.counters["device_GB"] = double(total - free) * 1e-9;
  state.counters["params"] = params;
  state.counters["vocab"] = double(vocab);
}

void bm_train_step(benchmark::State& state, shape sh, gemm_precision precision, bool graphs = false) {
  time_train_step<ssmlen::scan::cuda::state_split<>>(state, sh, precision, graphs);
}

void bm_train_step_chunked(benchmark::State& state, shape sh, gemm_precision precision) {
  time_train_step<ssmlen::scan::chunked<128>>(state, sh, precision, false);
}

}  // namespace

BENCHMARK_CAPTURE(bm_train_step, headline_fp32, shape::headline, gemm_precision::fp32)
    ->UseManualTime()
    ->Iterations(40)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, headline_tf32, shape::headline, gemm_precision::tf32)
    ->UseManualTime()
    ->Iterations(40)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, headline_bf16, shape::headline, gemm_precision::bf16)
    ->UseManualTime()
    ->Iterations(40)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, paper_fp32, shape::paper, gemm_precision::fp32)
    ->UseManualTime()
    ->Iterations(6)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, paper_tf32, shape::paper, gemm_precision::tf32)
    ->UseManualTime()
    ->Iterations(6)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, paper_bf16, shape::paper, gemm_precision::bf16)
    ->UseManualTime()
    ->Iterations(6)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, paper_bf16_graphs, shape::paper, gemm_precision::bf16, true)
    ->UseManualTime()
    ->Iterations(6)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, paper_addition_tf32, shape::paper_addition, gemm_precision::tf32)
    ->UseManualTime()
    ->Iterations(8)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, paper_addition_bf16, shape::paper_addition, gemm_precision::bf16)
    ->UseManualTime()
    ->Iterations(8)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, paper_addition_bf16_graphs, shape::paper_addition, gemm_precision::bf16, true)
    ->UseManualTime()
    ->Iterations(8)
    ->Unit(benchmark::kMillisecond);
// batches × length: the length of a 5-digit addition trace, at the batch the peer fits in memory and at the paper's
// 128; the same shapes for both precisions
static void peer_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"batch", "length"})->Args({32, 176})->Args({128, 176});
}
BENCHMARK_CAPTURE(bm_train_step, peer_fp32, shape::peer, gemm_precision::fp32)
    ->Apply(peer_shapes)
    ->UseManualTime()
    ->Iterations(8)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, peer_bf16, shape::peer, gemm_precision::bf16)
    ->Apply(peer_shapes)
    ->UseManualTime()
    ->Iterations(8)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step, headline_long_fp32, shape::headline_long, gemm_precision::fp32)
    ->UseManualTime()
    ->Iterations(6)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_train_step_chunked, headline_long_fp32, shape::headline_long, gemm_precision::fp32)
    ->UseManualTime()
    ->Iterations(10)
    ->Unit(benchmark::kMillisecond);
