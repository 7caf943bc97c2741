// SPDX-License-Identifier: Apache-2.0
// The CUDA selective scan, recurrent against block_parallel, state_split and chunked, forward and forward+backward,
// at the paper's 130M shape (8 × 2048 tokens, ED = 1536, N = 16), a tiny one (128 × 160 tokens, ED = 128, N = 16),
// for the default policy the 130M model's on the paper-scale run's batches (32 × 480 tokens, ED = 1536, N = 16), and
// one long sequence through the tiny model (65,536 tokens, ED = 128, N = 16: four blocks for a policy that walks a
// sequence in one block, where chunked splits it), timed
// with CUDA events (warm-up first; the reported time is the median of the iterations). Counters:
//   GB/s        bytes the scan must move (x, dt, B, C, y, checkpoints, final states; in the backward also dy, dx,
//               ddt, dB, dC, d_init) over the median time;
//   copy_frac   that rate over the device-to-device copy rate measured by bm_copy in this same process;
//   Gtokch/s    tokens × channels per second; Gexp/s  decays a_t = exp(dt A) evaluated per second (N per
//               token-channel and pass; the backward evaluates them once per pass as well);
//   exp_frac    Gexp/s over the exponential rate measured by bm_exp in this same process (ex2.approx, the
//               multi-function unit's);
//   bound_frac  the larger of copy_frac and exp_frac: the time the larger of the two limits allows over the time
//               taken; bound_exp is 1 where the exponentials set that bound, 0 where the bytes do;
//   xcheck      ‖y_block − y_recurrent‖/‖y_recurrent‖ (+ the same for dx), a sanity check of the timed data
//               (the tests compare both against the host oracle).
// bm_scan_as_model times the scan as the bf16 Mamba block calls it: Δ = softplus(dt + bias) made as dt is read, the
// forward also writing y·silu(z) rounded to bf16 (out_proj's operand), the backward also ddt's bf16 rounding; its
// bytes add z, the two bf16 copies and the bias.
// Inputs are random (never zero); shapes whose data would sit in L2 rotate over several input sets.
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/scan/cuda/chunked.cuh>
#include <ssmlen/scan/cuda/selective_scan.cuh>
#include <ssmlen/scan/cuda/state_split.cuh>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda_event_timing.cuh"
#include "cuda_random.cuh"

namespace {

namespace sc = ssmlen::scan::cuda;
using ssmlen::backends::cuda_check;
using ssmlen::backends::device_buffer;

struct bench_shape {
  char const* name;
  std::int64_t seqs, length, ed, ns;
};

bench_shape const shapes[] = {
    {"130m", 8, 2048, 1536, 16},           // 0: the paper's 130M model, one layer
    {"tiny", 128, 160, 128, 16},           // 1: the addition task's model
    {"130m_addition", 32, 480, 1536, 16},  // 2: the 130M model on 128 addition traces packed 4 to a sequence
    {"one_long", 1, 65536, 128, 16},       // 3: one long stream through the addition task's model (a prefill)
};

double rel_diff(device_buffer<float> const& p, device_buffer<float> const& q) {
  auto const hp = p.to_host(), hq = q.to_host();
  double num = 0, den = 0;
  for (std::size_t i = 0; i < hp.size(); ++i) {
    num += (double{hp[i]} - hq[i]) * (double{hp[i]} - hq[i]);
    den += double{hq[i]} * hq[i];
  }
  return std::sqrt(num / den);
}

//! One set of device inputs and outputs for a shape.
struct problem_set {
  device_buffer<float> x, dt, a, b, c, d, dy, y, ck, final_state, dx, ddt, db, dc, da, dd, d_init;
  ssmlen::scan::selective_scan_args<float> args;
  ssmlen::scan::selective_scan_grads<float> grads;
  // As the bf16 Mamba block calls it: dt before the softplus, its bias, the gate's z and the bf16 copies written.
  device_buffer<float> dt_pre, dt_bias, z;
  device_buffer<ssmlen::bfloat16> gated16, ddt16;
  ssmlen::scan::selective_scan_args<float> model_args;

  problem_set(bench_shape const& sh, std::int64_t ck_rows, std::uint64_t seed) {
    std::int64_t const te = sh.seqs * sh.length * sh.ed, tn = sh.seqs * sh.length * sh.ns;
    std::int64_t const state = sh.seqs * sh.ns * sh.ed;
    x = random_buffer(te, seed + 1, -1.0f, 1.0f);
    dt = random_buffer(te, seed + 2, 0.005f, 0.2f);
    a = random_buffer(sh.ns * sh.ed, seed + 3, -8.0f, -0.5f);
    b = random_buffer(tn, seed + 4, -1.0f, 1.0f);
    c = random_buffer(tn, seed + 5, -1.0f, 1.0f);
    d = random_buffer(sh.ed, seed + 6, -1.0f, 1.0f);
    dy = random_buffer(te, seed + 7, -1.0f, 1.0f);
    y = device_buffer<float>(static_cast<std::size_t>(te));
    ck = device_buffer<float>(static_cast<std::size_t>(ck_rows * sh.ns * sh.ed));
    final_state = device_buffer<float>(static_cast<std::size_t>(state));
    dx = device_buffer<float>(static_cast<std::size_t>(te));
    ddt = device_buffer<float>(static_cast<std::size_t>(te));
    db = device_buffer<float>(static_cast<std::size_t>(tn));
    dc = device_buffer<float>(static_cast<std::size_t>(tn));
    da = random_buffer(sh.ns * sh.ed, seed + 8, -1.0f, 1.0f);
    dd = random_buffer(sh.ed, seed + 9, -1.0f, 1.0f);
    d_init = device_buffer<float>(static_cast<std::size_t>(state));
    args = {nullptr, sh.ed, sh.ns, x.data(), dt.data(), a.data(), b.data(), c.data(), sh.ns, d.data(), nullptr};
    dt_pre = random_buffer(te, seed + 10, -5.0f, -1.5f);  // softplus: Δ in about [0.007, 0.2], as dt above
    dt_bias = random_buffer(sh.ed, seed + 11, -0.5f, 0.5f);
    z = random_buffer(te, seed + 12, -2.0f, 2.0f);
    gated16 = device_buffer<ssmlen::bfloat16>(static_cast<std::size_t>(te));
    ddt16 = device_buffer<ssmlen::bfloat16>(static_cast<std::size_t>(te));
    model_args = args;
    model_args.dt = dt_pre.data();
    model_args.dt_softplus = true;
    model_args.dt_bias = dt_bias.data();
    grads = {dy.data(), nullptr, dx.data(), ddt.data(), db.data(),
             dc.data(), sh.ns,   da.data(), dd.data(),  d_init.data()};
  }
};

//! Everything for one shape: input sets (several when one set would fit in L2), workspace, byte counts.
struct problem {
  bench_shape sh;
  std::int64_t ck_rows;
  device_buffer<std::int64_t> offsets;
  sc::device_sequences seqs;
  std::vector<std::unique_ptr<problem_set>> sets;
  device_buffer<char> workspace;
  double xcheck = 0;

  //! Bytes the scan must move with checkpoints every `interval` tokens: forward x dt y, B C, A D, checkpoints
  //! (written), final states; backward x dt dy dx ddt, B C dB dC, A dA (read and written) D dD, checkpoints (read),
  //! d_init.
  [[nodiscard]] double bytes(std::int64_t interval, bool backward) const {
    double const te = double(seqs.tokens) * sh.ed, tn = double(seqs.tokens) * sh.ns, nd = double(sh.ns) * sh.ed;
    double const state = double(sh.seqs) * nd, ck = double(sh.seqs * ((sh.length + interval - 1) / interval)) * nd;
    double const forward = 4 * (3 * te + 2 * tn + nd + sh.ed + ck + state);
    return forward + (backward ? 4 * (5 * te + 4 * tn + 3 * nd + 3 * sh.ed + ck + state) : 0.0);
  }
  //! bytes(), and what the Mamba block's call adds: z read and y·silu(z) written in bf16 (forward), ddt written in
  //! bf16 (backward), Δ's bias read by each pass.
  [[nodiscard]] double model_bytes(std::int64_t interval, bool backward) const {
    double const te = double(seqs.tokens) * sh.ed;
    return bytes(interval, backward) + (4 * te + 2 * te + 4.0 * sh.ed) + (backward ? 2 * te + 4.0 * sh.ed : 0.0);
  }

  explicit problem(bench_shape const& s)
      : sh(s), ck_rows(sh.seqs * ((sh.length + 7) / 8)), offsets(static_cast<std::size_t>(sh.seqs) + 1) {
    std::vector<std::int64_t> off(static_cast<std::size_t>(sh.seqs) + 1);
    for (std::size_t i = 0; i < off.size(); ++i) {
      off[i] = static_cast<std::int64_t>(i) * sh.length;
    }
    offsets.upload(off);
    seqs = {offsets.data(), sh.seqs, sh.seqs * sh.length};
    double const te = double(seqs.tokens) * sh.ed, tn = double(seqs.tokens) * sh.ns;
    double const set_bytes = 4 * (6 * te + 4 * tn);
    auto const copies = static_cast<int>(std::clamp(std::ceil(240e6 / set_bytes), 1.0, 8.0));
    for (int i = 0; i < copies; ++i) {
      sets.push_back(std::make_unique<problem_set>(sh, ck_rows, 100 * static_cast<std::uint64_t>(i)));
    }
    // Enough for every policy timed: chunked<64>'s (more chunks than chunked<128>'s) is the largest.
    workspace = device_buffer<char>(std::max(sc::backward_workspace_bytes(seqs, sh.ed, sh.ns),
                                             sc::workspace_bytes(ssmlen::scan::chunked<64>{}, seqs, sh.ed, sh.ns)));
    // Sanity check of the timed data: the two policies agree.
    auto& p = *sets[0];
    ssmlen::backends::cuda const be{};
    sc::selective_scan_forward(ssmlen::scan::recurrent{}, be, seqs, p.args, p.y.data(), p.ck.data(),
                               p.final_state.data(), workspace.data());
    sc::selective_scan_backward(ssmlen::scan::recurrent{}, be, seqs, p.args, p.ck.data(), p.grads, workspace.data());
    device_buffer<float> y(p.y.size()), dx(p.dx.size());
    cuda_check(cudaMemcpy(y.data(), p.y.data(), y.bytes(), cudaMemcpyDeviceToDevice), "copy y");
    cuda_check(cudaMemcpy(dx.data(), p.dx.data(), dx.bytes(), cudaMemcpyDeviceToDevice), "copy dx");
    sc::selective_scan_forward(sc::block_parallel<>{}, be, seqs, p.args, p.y.data(), p.ck.data(), p.final_state.data(),
                               workspace.data());
    sc::selective_scan_backward(sc::block_parallel<>{}, be, seqs, p.args, p.ck.data(), p.grads, workspace.data());
    cuda_check(cudaDeviceSynchronize(), "cross-check");
    xcheck = std::max(rel_diff(p.y, y), rel_diff(p.dx, dx));
  }
};

problem& get_problem(int index) {
  static std::unique_ptr<problem> cache[std::size(shapes)];
  if (!cache[index]) {
    cache[index] = std::make_unique<problem>(shapes[index]);
  }
  return *cache[index];
}

//! Times `body` with CUDA events per iteration after a warm-up; returns the median seconds.
template <class Body>
double time_iterations(benchmark::State& state, cudaStream_t stream, Body&& body) {
  cudaEvent_t start = nullptr, stop = nullptr;
  cuda_check(cudaEventCreate(&start), "cudaEventCreate");
  cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
  for (int i = 0; i < 3; ++i) {
    body(i);
  }
  cuda_check(cudaStreamSynchronize(stream), "warm-up");
  std::vector<double> seconds;
  int i = 0;
  for (auto _ : state) {
    cuda_check(cudaEventRecord(start, stream), "cudaEventRecord");
    body(i++);
    cuda_check(cudaEventRecord(stop, stream), "cudaEventRecord");
    cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    state.SetIterationTime(ms * 1e-3);
    seconds.push_back(ms * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(seconds.begin(), seconds.end());
  return seconds.empty() ? 0.0 : seconds[seconds.size() / 2];
}

//! Device-to-device copy rate (bytes read + written per second), measured once, for copy_frac.
double copy_rate() {
  static double const rate = [] {
    std::size_t const bytes = std::size_t{1} << 30;
    device_buffer<char> src(bytes), dst(bytes);
    src.fill_bytes(0x3C);
    double const median = median_event_seconds(nullptr, [&] {
      cuda_check(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
    });
    return 2.0 * double(bytes) / median;
  }();
  return rate;
}

//! Independent chains of x = 2^(-x) per thread (a multiply and an ex2.approx per step, the scan's decay), enough
//! threads to fill every SM: the multi-function unit's exponential rate.
__global__ void exp_chains_kernel(float* out, int steps) {
  constexpr int chains = 8;
  float x[chains];
#pragma unroll
  for (int c = 0; c < chains; ++c) {
    x[c] = 0.25f + 0.01f * static_cast<float>(c) + 1e-6f * static_cast<float>(threadIdx.x);
  }
  for (int i = 0; i < steps; ++i) {
#pragma unroll
    for (int c = 0; c < chains; ++c) {
      x[c] = ssmlen::ops::cuda::exp2_approx(-x[c]);  // in [0.5, 1]: no denormals, no overflow
    }
  }
  float sum = 0;
#pragma unroll
  for (int c = 0; c < chains; ++c) {
    sum += x[c];
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = sum;  // keeps the chains alive
}

//! One launch of exp_chains_kernel over 8 blocks of 256 threads per SM; returns the exponentials it evaluates.
double launch_exp_chains(device_buffer<float>& out) {
  static int const sms = [] {  // asked once: not inside every timed launch
    int count = 0;
    cuda_check(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, 0), "multiprocessor count");
    return count;
  }();
  int const blocks = 8 * sms, threads = 256, steps = 2048;
  if (out.size() < static_cast<std::size_t>(blocks) * threads) {
    out = device_buffer<float>(static_cast<std::size_t>(blocks) * threads);
  }
  exp_chains_kernel<<<blocks, threads>>>(out.data(), steps);
  ssmlen::backends::cuda_check_launch("exp_chains_kernel");
  return double(blocks) * threads * 8.0 * steps;
}

//! Exponentials per second, measured once, for exp_frac.
double exp_rate() {
  static double const rate = [] {
    device_buffer<float> out(1);
    double exps = 0;
    double const median = median_event_seconds(nullptr, [&] { exps = launch_exp_chains(out); });
    return exps / median;
  }();
  return rate;
}

void bm_exp(benchmark::State& state) {
  if (!ssmlen::backends::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  device_buffer<float> out(1);
  double exps = 0;
  double const median = time_iterations(state, nullptr, [&](int) { exps = launch_exp_chains(out); });
  state.counters["Gexp/s"] = exps / median * 1e-9;
  state.counters["us_median"] = median * 1e6;
}

void bm_copy(benchmark::State& state) {
  if (!ssmlen::backends::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  std::size_t const bytes = std::size_t{1} << 30;
  device_buffer<char> src(bytes), dst(bytes);
  src.fill_bytes(0x3C);
  double const median = time_iterations(state, nullptr, [&](int) {
    cuda_check(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice), "cudaMemcpyAsync");
  });
  state.counters["GB/s"] = 2.0 * double(bytes) / median * 1e-9;
  state.counters["us_median"] = median * 1e6;
}

//! Times forward (+ backward) of Policy at shape state.range(0); as_model: as the bf16 Mamba block calls it.
template <class Policy, bool Backward>
void time_scan(benchmark::State& state, bool as_model) {
  if (!ssmlen::backends::cuda_device_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  auto& pb = get_problem(static_cast<int>(state.range(0)));
  ssmlen::backends::cuda_stream stream;
  auto const be = stream.backend();
  double const median = time_iterations(state, stream.get(), [&](int i) {
    auto& p = *pb.sets[static_cast<std::size_t>(i) % pb.sets.size()];
    auto const& args = as_model ? p.model_args : p.args;
    sc::gate_output const gate{.z = p.z.data(), .ld_z = pb.sh.ed, .gated_rounded = p.gated16.data()};
    sc::selective_scan_forward(Policy{}, be, pb.seqs, args, p.y.data(), p.ck.data(), p.final_state.data(),
                               pb.workspace.data(), as_model ? gate : sc::gate_output{});
    if constexpr (Backward) {
      sc::selective_scan_backward(Policy{}, be, pb.seqs, args, p.ck.data(), p.grads, pb.workspace.data(),
                                  as_model ? p.ddt16.data() : nullptr);
    }
  });
  double const bytes = as_model ? pb.model_bytes(Policy::checkpoint_interval, Backward)
                                : pb.bytes(Policy::checkpoint_interval, Backward);
  double const tokch = double(pb.seqs.tokens) * pb.sh.ed;
  state.SetLabel(std::string(pb.sh.name) + " " + Policy::name() + (Backward ? " fwd+bwd" : " fwd") +
                 (as_model ? " as the bf16 block calls it" : ""));
  state.counters["us_median"] = median * 1e6;
  state.counters["GB/s"] = bytes / median * 1e-9;
  state.counters["Gtokch/s"] = tokch / median * 1e-9;
  double const exps = tokch * pb.sh.ns * (Backward ? 2 : 1);
  state.counters["Gexp/s"] = exps / median * 1e-9;
  double const copy_frac = bytes / median / copy_rate(), exp_frac = exps / median / exp_rate();
  state.counters["copy_frac"] = copy_frac;
  state.counters["exp_frac"] = exp_frac;
  state.counters["bound_frac"] = std::max(copy_frac, exp_frac);
  state.counters["bound_exp"] = exp_frac > copy_frac ? 1.0 : 0.0;
  state.counters["xcheck"] = pb.xcheck;
}

template <class Policy, bool Backward>
void bm_scan(benchmark::State& state) {
  time_scan<Policy, Backward>(state, false);
}

template <class Policy, bool Backward>
void bm_scan_as_model(benchmark::State& state) {
  time_scan<Policy, Backward>(state, true);
}

void both_shapes(benchmark::internal::Benchmark* b) {
  b->Arg(0)->Arg(1)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void all_shapes(benchmark::internal::Benchmark* b) {
  b->Arg(0)->Arg(1)->Arg(2)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void long_shape(benchmark::internal::Benchmark* b) { b->Arg(3)->UseManualTime()->Unit(benchmark::kMicrosecond); }

}  // namespace

BENCHMARK(bm_copy)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_exp)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(bm_scan, ssmlen::scan::recurrent, false)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::block_parallel<>, false)->Apply(both_shapes);
// Other block shapes (warps × tokens per thread): how the chunk layout moves the time. The backward of
// block_parallel<4, 16> runs the <8, 8> backward kernel (at most 8 tokens per thread).
BENCHMARK_TEMPLATE(bm_scan, sc::block_parallel<4, 8>, false)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::block_parallel<4, 16>, false)->Apply(both_shapes);
// States split over warps (NT states per thread in the forward; the backward splits them 4 per thread).
BENCHMARK_TEMPLATE(bm_scan, sc::state_split<4>, false)->Apply(all_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::state_split<2>, false)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::state_split<8>, false)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::state_split<1>, false)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, ssmlen::scan::recurrent, true)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::block_parallel<>, true)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::block_parallel<4, 8>, true)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::block_parallel<4, 16>, true)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::state_split<4>, true)->Apply(all_shapes);
BENCHMARK_TEMPLATE(bm_scan, sc::state_split<2>, true)->Apply(both_shapes);
// Sequences split in time across blocks: the policy for few sequences × channels, beside the others on one stream.
BENCHMARK_TEMPLATE(bm_scan, ssmlen::scan::chunked<128>, false)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, ssmlen::scan::chunked<128>, true)->Apply(both_shapes);
BENCHMARK_TEMPLATE(bm_scan, ssmlen::scan::recurrent, false)->Apply(long_shape);
BENCHMARK_TEMPLATE(bm_scan, sc::block_parallel<>, false)->Apply(long_shape);
BENCHMARK_TEMPLATE(bm_scan, sc::state_split<4>, false)->Apply(long_shape);
BENCHMARK_TEMPLATE(bm_scan, ssmlen::scan::chunked<128>, false)->Apply(long_shape);
BENCHMARK_TEMPLATE(bm_scan, ssmlen::scan::chunked<64>, false)->Apply(long_shape);
BENCHMARK_TEMPLATE(bm_scan, sc::block_parallel<>, true)->Apply(long_shape);
BENCHMARK_TEMPLATE(bm_scan, sc::state_split<4>, true)->Apply(long_shape);
BENCHMARK_TEMPLATE(bm_scan, ssmlen::scan::chunked<128>, true)->Apply(long_shape);
// The model's default policy, with the fused softplus, gate and bf16 copies of the Mamba block's call.
BENCHMARK_TEMPLATE(bm_scan_as_model, sc::state_split<4>, false)->Apply(all_shapes);
BENCHMARK_TEMPLATE(bm_scan_as_model, sc::state_split<4>, true)->Apply(all_shapes);
