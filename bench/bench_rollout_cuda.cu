// SPDX-License-Identifier: Apache-2.0
// Greedy tool-driven rollouts with the model on the GPU (agent/cuda/rollout.cuh: one captured CUDA graph per step,
// B token ids each way over the bus, the tools on the host), timed by wall clock:
//   bm_rollout/gpu/digits:n    256 concurrent additions of n digits (one batch of 256 slots) with the trained
//                              headline model (addition, 4 layers × d_model 64), whole rollouts: graph capture,
//                              every step, the tools and the bookkeeping
//   bm_rollout/host/digits:n   the same with the host rollout (agent/rollout.hpp, OpenMP over rows), for scale
//   bm_ssm_step/buffers:n      the fused SSM step kernel alone at the paper's shape (256 rows), beside a copy of the
//                              state bytes it reads and writes (copy_frac: the copy's time over the step's)
//   bm_step_loop/<model>_<precision>[_layers]_<graph|eager>
//                              the device step loop alone for 256 rows, each step's argmax fed back as the next
//                              token: `graph` replays the captured step (agent::cuda::step_graph: ids in, every
//                              layer, argmax out, through pinned memory) and waits; `eager` enqueues the same
//                              kernels and GEMMs one by one, with a copy each way. The headline's fp32
//                              step is one kernel (models/cuda/fused_step.cuh); `_layers` runs it layer by layer
//                              (mamba_lm_options::fused_step off), the path every larger model takes. Models: the
//                              headline model, and a random one of the paper's 130M shape (24 layers, d_model 768,
//                              d_state 16, expand 2, tied) with the vocabulary of 50280 (`paper_`) or with the task's
//                              (`paper_task_vocab_`, the paper-scale model 04_train_cuda trains); rollouts of these
//                              random models would end at once. With SSMLEN_PROFILE_STEP set, an eager loop runs one
//                              more step between cudaProfilerStart and cudaProfilerStop, for `ncu --profile-from-start
//                              off` (tests/cuda/profile_on_gpu.sh step: time per kernel).
// Counters:
//   tok/s      episode tokens (prompt, model and observation tokens) per second; for the step loop, rows × steps
//   step_us    seconds per step: every step feeds one token to each live slot, so at a flat step time the cost per
//              generated token does not grow with the episode length
//   ns/tok     seconds per episode token
//   exact      fraction of additions answered exactly (checked before the numbers mean anything)
//   TF/s, GB/s for the 130M step: 2 · parameters · rows FLOP, and the bytes every step must move at least
//              (fp32 weights once, every state read and written once), per second
// The headline checkpoint: $SSMLEN_HEADLINE_MODEL, else tests/fixtures/addition_headline_seed3.safetensors beside
// this source file (the path is taken from __FILE__, so run from the repository root when built by hand).
#include <ssmlen/agent/cuda/rollout.cuh>
#include <ssmlen/agent/cuda/step_graph.cuh>
#include <ssmlen/agent/rollout.hpp>
#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/checkpoint.hpp>
#include <ssmlen/models/cuda/mamba_lm.cuh>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/scan/cuda/selective_scan_step.cuh>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/any_task.hpp>

#include <benchmark/benchmark.h>
#include <cuda_profiler_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace agent = ssmlen::agent;
namespace mc = ssmlen::models::cuda;
using ssmlen::backends::cuda_check;
using ssmlen::backends::gemm_precision;

constexpr std::int64_t rows = 256;

std::filesystem::path headline_path() {
  if (char const* p = std::getenv("SSMLEN_HEADLINE_MODEL")) {
    return p;
  }
  return std::filesystem::path(__FILE__).parent_path().parent_path() / "tests" / "fixtures" /
         "addition_headline_seed3.safetensors";
}

ssmlen::tasks::any_task const& addition_task() {
  static ssmlen::tasks::any_task const task(ssmlen::tasks::addition{});
  return task;
}

//! The headline model, loaded once; null (and the reason in `why`) when the checkpoint cannot be read.
ssmlen::models::mamba_lm<float>* headline_model(std::string& why) {
  static std::unique_ptr<ssmlen::models::mamba_lm<float>> model;
  static std::string error;
  if (!model && error.empty()) {
    try {
      model = std::make_unique<ssmlen::models::mamba_lm<float>>(ssmlen::models::load_model<float>(headline_path()));
    } catch (std::exception const& e) {
      error = std::string("headline checkpoint: ") + e.what() + " (set SSMLEN_HEADLINE_MODEL)";
    }
  }
  why = error;
  return model.get();
}

//! A random model of the paper's 130M shape, made once: with the vocabulary of 50280, or with the addition task's
//! (the shape of the paper-scale model that 04_train_cuda trains).
ssmlen::models::mamba_lm<float>& paper_model(bool task_vocab = false) {
  auto make = [](std::int64_t vocab) {
    return ssmlen::models::mamba_lm<float>(
        ssmlen::models::mamba_config{.vocab = vocab, .d_model = 768, .n_layers = 24, .d_state = 16, .expand = 2}, 1);
  };
  if (task_vocab) {
    static auto model = make(static_cast<std::int64_t>(ssmlen::tasks::addition::make_vocab().size()));
    return model;
  }
  static auto model = make(50280);
  return model;
}

//! Which model a step loop runs.
enum class step_model { headline, paper, paper_task_vocab };

struct additions {
  std::vector<ssmlen::tasks::episode_spec> specs;
  std::vector<agent::episode_input> inputs;
  std::int64_t longest = 0;
};

additions sample_additions(int digits, std::int64_t count) {
  additions a;
  ssmlen::rng g(static_cast<std::uint64_t>(1000 + digits));
  for (std::int64_t i = 0; i < count; ++i) {
    a.specs.push_back(addition_task().sample_exact(g, digits));
    a.longest = std::max<std::int64_t>(a.longest, static_cast<std::int64_t>(a.specs.back().expert.size()));
  }
  for (auto const& s : a.specs) {
    a.inputs.push_back({s.prompt, &s.expert});
  }
  return a;
}

void bm_rollout(benchmark::State& state, bool gpu) {
  if (gpu && !ssmlen::backends::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  std::string why;
  auto* host = headline_model(why);
  if (host == nullptr) {
    state.SkipWithError(why.c_str());
    return;
  }
  auto const digits = static_cast<int>(state.range(0));
  auto const a = sample_additions(digits, rows);
  auto const& task = addition_task();
  auto const make_tool = [&](std::size_t) { return task.make_tool(); };
  agent::rollout_config rc;
  rc.batch = rows;
  rc.max_tokens = 2 * a.longest + 64;
  std::span<agent::episode_input const> const inputs(a.inputs);
  std::unique_ptr<mc::mamba_lm<>> dev;
  if (gpu) {
    dev = std::make_unique<mc::mamba_lm<>>(*host);
    auto const warm = sample_additions(3, 4);  // cuBLAS and the kernels loaded before the timing
    agent::cuda::rollout(*dev, std::span<agent::episode_input const>(warm.inputs), make_tool, task.markers(), rc);
  }
  std::vector<agent::rollout_result> results;
  double seconds = 0;
  for (auto _ : state) {
    auto const t0 = std::chrono::steady_clock::now();
    results = gpu ? agent::cuda::rollout(*dev, inputs, make_tool, task.markers(), rc)
                  : agent::rollout(ssmlen::backends::host{}, *host, inputs, make_tool, task.markers(), rc);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    state.SetIterationTime(seconds);
  }
  std::int64_t tokens = 0, longest = 0, exact = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    tokens += results[i].tokens;
    longest = std::max(longest, results[i].tokens);
    exact += results[i].reason == agent::end_reason::eos && a.specs[i].check(results[i].output);
  }
  // All episodes start together: the rollout takes as many steps as its longest episode feeds tokens (all but the
  // last, which is predicted and not fed).
  auto const steps = static_cast<double>(longest - 1);
  state.SetLabel(std::string(gpu ? "gpu" : "host") + " headline, " + std::to_string(rows) + " additions of " +
                 std::to_string(digits) + " digits, " + std::to_string(tokens) + " tokens, exact " +
                 std::to_string(exact) + "/" + std::to_string(results.size()));
  state.counters["tok/s"] = static_cast<double>(tokens) / seconds;
  state.counters["step_us"] = seconds / steps * 1e6;
  state.counters["ns/tok"] = seconds / static_cast<double>(tokens) * 1e9;
  state.counters["exact"] = static_cast<double>(exact) / static_cast<double>(results.size());
}

//! The device step loop alone: each step's argmax ids are the next step's tokens.
void bm_step_loop(benchmark::State& state, step_model which, gemm_precision precision, bool graph, bool fused,
                  std::int64_t rows) {
  if (!ssmlen::backends::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  std::string why;
  bool const paper = which != step_model::headline;
  auto* host = paper ? &paper_model(which == step_model::paper_task_vocab) : headline_model(why);
  if (host == nullptr) {
    state.SkipWithError(why.c_str());
    return;
  }
  int const steps = paper ? 100 : 1000, warmup = 10;
  mc::mamba_lm<> dev(*host, {.precision = precision, .fused_step = fused});
  std::int64_t const v = host->config().vocab;
  ssmlen::rng g(7);
  std::vector<std::int32_t> first(static_cast<std::size_t>(rows));
  for (auto& t : first) {
    t = mc::fresh_token(static_cast<std::int32_t>(g.uniform_int(0, v - 1)));
  }
  double seconds = 0;
  if (graph) {
    agent::cuda::step_graph<mc::mamba_lm<>> sg(dev, rows);
    std::copy(first.begin(), first.end(), sg.tokens().begin());
    for (auto _ : state) {
      std::chrono::steady_clock::time_point t0;
      for (int s = 0; s < warmup + steps; ++s) {
        if (s == warmup) {
          t0 = std::chrono::steady_clock::now();
        }
        auto const next = sg.run();
        std::copy(next.begin(), next.end(), sg.tokens().begin());
      }
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      state.SetIterationTime(seconds);
    }
  } else {
    ssmlen::backends::cuda_stream stream;
    ssmlen::backends::blas_handle h(stream.backend());
    auto st = dev.make_state(rows);
    mc::mamba_lm<>::step_workspace w;
    ssmlen::backends::pinned_buffer<std::int32_t> up(static_cast<std::size_t>(rows)),
        down(static_cast<std::size_t>(rows));
    ssmlen::backends::device_buffer<std::int32_t> tokens(static_cast<std::size_t>(rows)),
        next(static_cast<std::size_t>(rows));
    std::copy(first.begin(), first.end(), up.span().begin());
    auto const bytes = static_cast<std::size_t>(rows) * sizeof(std::int32_t);
    for (auto _ : state) {
      std::chrono::steady_clock::time_point t0;
      for (int s = 0; s < warmup + steps; ++s) {
        if (s == warmup) {
          t0 = std::chrono::steady_clock::now();
        }
        cuda_check(cudaMemcpyAsync(tokens.data(), up.span().data(), bytes, cudaMemcpyHostToDevice, stream.get()),
                   "cudaMemcpyAsync");
        dev.greedy_step(h, tokens.data(), next.data(), rows, st, w);
        cuda_check(cudaMemcpyAsync(down.span().data(), next.data(), bytes, cudaMemcpyDeviceToHost, stream.get()),
                   "cudaMemcpyAsync");
        stream.synchronize();
        std::copy(down.span().begin(), down.span().end(), up.span().begin());
      }
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      state.SetIterationTime(seconds);
    }
    if (std::getenv("SSMLEN_PROFILE_STEP") != nullptr) {  // one more step, alone in ncu's view
      cuda_check(cudaProfilerStart(), "cudaProfilerStart");
      dev.greedy_step(h, tokens.data(), next.data(), rows, st, w);
      stream.synchronize();
      cuda_check(cudaProfilerStop(), "cudaProfilerStop");
    }
  }
  double const step_s = seconds / steps;
  auto const& cfg = host->config();
  double const params = static_cast<double>(dev.n_params());
  double const state_bytes =
      4.0 * static_cast<double>(cfg.n_layers * rows * cfg.d_inner() * (cfg.d_conv - 1 + cfg.d_state));
  char const* prec = precision == gemm_precision::fp32 ? "fp32" : precision == gemm_precision::tf32 ? "tf32" : "bf16";
  state.SetLabel(std::string(paper ? "paper 130M shape, vocabulary " + std::to_string(cfg.vocab) : "headline") + ", " +
                 prec + ", " + (graph ? "graph" : "eager") + (fused ? "" : ", layer by layer") + ", " +
                 std::to_string(rows) + " rows, " + std::to_string(static_cast<long long>(params)) + " params");
  state.counters["step_us"] = step_s * 1e6;
  state.counters["tok/s"] = static_cast<double>(rows) / step_s;
  state.counters["TF/s"] = 2.0 * params * static_cast<double>(rows) / step_s * 1e-12;
  state.counters["GB/s"] = (4.0 * params + 2.0 * state_bytes) / step_s * 1e-9;
}

//! The fused SSM step alone (scan/cuda/selective_scan_step.cuh) at the paper's shape: 256 rows, ED 1536, N 16,
//! dt_proj of rank 48 inside, gated fp32 output. `buffers` state buffers are used in turn, as the model's 24 layers
//! use theirs: with 24 (25 MB each) the states come from DRAM, with 1 they stay in L2. Beside it, in the same
//! process, a device-to-device copy of the same state bytes (read and written once), whose time is the kernel's
//! floor: copy_frac = copy time / step time.
void bm_ssm_step(benchmark::State& state) {
  if (!ssmlen::backends::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  namespace scan = ssmlen::scan::cuda;
  using ssmlen::backends::device_buffer;
  std::int64_t const ed = 1536, ns = 16, r = 48, w = r + 2 * ns, buffers = state.range(0);
  auto const state_size = static_cast<std::size_t>(rows * ns * ed);
  ssmlen::rng g(11);
  auto random = [&](std::size_t n, float lo, float hi) {
    std::vector<float> v(n);
    for (auto& e : v) {
      e = static_cast<float>(g.uniform(lo, hi));
    }
    return device_buffer<float>(std::span<float const>(v));
  };
  auto x = random(static_cast<std::size_t>(rows * ed), -1, 1), dbc = random(static_cast<std::size_t>(rows * w), -1, 1);
  auto dt_weight = random(static_cast<std::size_t>(ed * r), -0.2f, 0.2f), dt_bias = random(ed, -4, -2);
  auto a_log = random(static_cast<std::size_t>(ed * ns), 0, 2.8f), d = random(ed, 0, 1);
  auto xz = random(static_cast<std::size_t>(rows * 2 * ed), -2, 2);
  device_buffer<float> y(static_cast<std::size_t>(rows * ed));
  std::vector<device_buffer<float>> states;
  for (std::int64_t i = 0; i < buffers; ++i) {
    states.push_back(random(state_size, -1, 1));
  }
  device_buffer<float> copy_to(state_size);
  ssmlen::backends::cuda_stream stream;
  scan::selective_scan_step_args a;
  a.batch = rows, a.channels = ed, a.states = ns;
  a.x = x.data(), a.dt_low = dbc.data(), a.ld_dt_low = w, a.dt_rank = r, a.dt_weight = dt_weight.data();
  a.dt_bias = dt_bias.data(), a.a_log = a_log.data(), a.b = dbc.data() + r, a.c = dbc.data() + r + ns, a.ld_bc = w;
  a.d = d.data(), a.z = xz.data() + ed, a.ld_z = 2 * ed, a.y = y.data();
  int const rounds = 20;
  cudaEvent_t start, stop;
  cuda_check(cudaEventCreate(&start), "cudaEventCreate");
  cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
  // Seconds per call of `call(i)` over rounds × 24 calls (buffer i % buffers), after one round of warm-up.
  auto timed = [&](auto call) {
    for (int i = 0; i < 24; ++i) {
      call(i);
    }
    cuda_check(cudaEventRecord(start, stream.get()), "cudaEventRecord");
    for (int i = 0; i < rounds * 24; ++i) {
      call(i);
    }
    cuda_check(cudaEventRecord(stop, stream.get()), "cudaEventRecord");
    cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    return ms * 1e-3 / (rounds * 24);
  };
  double step_s = 0, copy_s = 0;
  for (auto _ : state) {
    step_s = timed([&](int i) {
      a.state = states[static_cast<std::size_t>(i % buffers)].data();
      scan::selective_scan_step(stream.backend(), a);
    });
    copy_s = timed([&](int i) {
      cuda_check(cudaMemcpyAsync(copy_to.data(), states[static_cast<std::size_t>(i % buffers)].data(),
                                 state_size * sizeof(float), cudaMemcpyDeviceToDevice, stream.get()),
                 "cudaMemcpyAsync");
    });
    state.SetIterationTime(step_s);
  }
  cuda_check(cudaEventDestroy(start), "cudaEventDestroy");
  cuda_check(cudaEventDestroy(stop), "cudaEventDestroy");
  state.SetLabel("paper shape, 256 rows, " + std::to_string(buffers) + " state buffers");
  state.counters["step_us"] = step_s * 1e6;
  state.counters["copy_us"] = copy_s * 1e6;
  state.counters["copy_frac"] = copy_s / step_s;
  state.counters["state_GB/s"] = 2.0 * static_cast<double>(state_size * sizeof(float)) / step_s * 1e-9;
}

}  // namespace

BENCHMARK(bm_ssm_step)
    ->ArgName("buffers")
    ->Arg(24)
    ->Arg(1)
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bm_rollout, gpu, true)
    ->ArgName("digits")
    ->Arg(100)
    ->Arg(1000)
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bm_rollout, host, false)
    ->ArgName("digits")
    ->Arg(100)
    ->UseManualTime()
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

namespace {

//! The step loops, registered from one table: bm_step_loop/<name>.
struct step_loop_case {
  char const* name;
  step_model model;
  gemm_precision precision;
  bool graph;
  bool fused = true;  // mamba_lm_options::fused_step (it applies to the headline's fp32 step only)
  std::int64_t rows = ::rows;
};

[[maybe_unused]] int const step_loops_registered = [] {
  using enum step_model;
  for (auto const& c :
       {step_loop_case{"headline_fp32_graph", headline, gemm_precision::fp32, true},
        step_loop_case{"headline_fp32_eager", headline, gemm_precision::fp32, false},
        step_loop_case{"headline_fp32_layers_graph", headline, gemm_precision::fp32, true, false},
        step_loop_case{"headline_fp32_layers_eager", headline, gemm_precision::fp32, false, false},
        step_loop_case{"headline_fp32_graph_32_rows", headline, gemm_precision::fp32, true, true, 32},
        step_loop_case{"headline_fp32_layers_graph_32_rows", headline, gemm_precision::fp32, true, false, 32},
        step_loop_case{"paper_fp32_graph", paper, gemm_precision::fp32, true},
        step_loop_case{"paper_fp32_eager", paper, gemm_precision::fp32, false},
        step_loop_case{"paper_tf32_graph", paper, gemm_precision::tf32, true},
        step_loop_case{"paper_bf16_graph", paper, gemm_precision::bf16, true},
        step_loop_case{"paper_task_vocab_bf16_graph", paper_task_vocab, gemm_precision::bf16, true},
        step_loop_case{"paper_task_vocab_bf16_eager", paper_task_vocab, gemm_precision::bf16, false}}) {
    benchmark::RegisterBenchmark(
        (std::string("bm_step_loop/") + c.name).c_str(),
        [c](benchmark::State& state) { bm_step_loop(state, c.model, c.precision, c.graph, c.fused, c.rows); })
        ->UseManualTime()
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  return 0;
}();

}  // namespace
