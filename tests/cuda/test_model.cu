// SPDX-License-Identifier: Apache-2.0
//! @file test_model.cu
//! Parity of the CUDA Mamba block and language model with the host ones in float: on random packed batches of
//! ragged lengths with a random loss mask, the loss and every parameter gradient (the block: also its output, ∂L/∂u
//! and the gradients through initial and final states), the parameters after three AdamW steps against the host
//! trainer, and 20 training steps on addition traces (every step's loss, then the parameters). Errors are norm-wise
//! per tensor, ‖gpu − host‖ / ‖host‖; each case also prints the host float model's own error against the host model
//! in double, for scale. Every activation, workspace and output is poisoned with NaN first; gradients that
//! accumulate start from non-zero values. Also: bit-identical gradients across runs, and the checks a bad batch must
//! fail.
//! Built alone (nvcc this file) it is its own doctest program; in the CMake build the shared test main links in.
//! Without a GPU every case that needs one prints a skip message and passes.
#ifndef SSMLEN_TEST_DATA_DIR
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#endif
#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/cuda/mamba_block.cuh>
#include <ssmlen/layers/mamba_block.hpp>
#include <ssmlen/models/cuda/mamba_lm.cuh>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/ops/cross_entropy.hpp>
#include <ssmlen/scan/cuda/selective_scan.cuh>
#include <ssmlen/scan/policy.hpp>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/any_task.hpp>
#include <ssmlen/train/batch.hpp>
#include <ssmlen/train/checkpoint.hpp>
#include <ssmlen/train/task_batches.hpp>
#include <ssmlen/train/trainer.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
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
namespace mc = ssmlen::models::cuda;
using ssmlen::backends::device_buffer;
using ssmlen::backends::gemm_precision;
using ssmlen::models::mamba_config;
template <class T>
using host_model = ssmlen::models::mamba_lm<T, ssmlen::scan::recurrent>;

constexpr double tol = 1e-4;       // norm-wise relative, per tensor
constexpr double bf16_tol = 3e-2;  // the same with bf16 GEMMs (inputs rounded to 8-bit mantissas)

device_buffer<float> on_device(std::vector<float> const& v) { return device_buffer<float>(std::span<float const>(v)); }

//! A training batch: one sequence per length (inputs; a sequence has one token more), random tokens, and a
//! random loss mask that counts about 70 % of the targets.
ssmlen::train::batch random_batch(std::int64_t vocab, std::vector<std::int64_t> const& lengths, std::uint64_t seed) {
  ssmlen::rng g(seed);
  ssmlen::train::batch b;
  for (auto const len : lengths) {
    std::vector<std::int32_t> tokens(static_cast<std::size_t>(len + 1));
    std::vector<std::uint8_t> predict(tokens.size());
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = static_cast<std::int32_t>(g.uniform_int(0, vocab - 1));
      predict[i] = g.uniform() < 0.7f ? 1 : 0;
    }
    b.add(tokens, predict);
  }
  b.finish();
  return b;
}

//! Copies every parameter value of `from` into `to` (same configuration, any element types).
template <class A, class B>
void copy_params(A& from, B& to) {
  auto src = from.named_params();
  auto dst = to.named_params();
  REQUIRE(src.size() == dst.size());
  for (std::size_t i = 0; i < src.size(); ++i) {
    REQUIRE(src[i].p->value.size() == dst[i].p->value.size());
    std::copy(src[i].p->value.begin(), src[i].p->value.end(), dst[i].p->value.begin());
  }
}

//! Loss and gradients on the host, as train::trainer computes them: mean cross-entropy over counted targets.
template <class T>
ssmlen::ops::cross_entropy_result host_gradients(host_model<T>& m, ssmlen::train::batch const& b) {
  ssmlen::backends::host const be;
  std::int64_t const rows = b.tokens(), v = m.config().vocab;
  std::vector<T> logits(static_cast<std::size_t>(rows * v)), dlogits(logits.size());
  typename host_model<T>::cache k;
  m.forward(be, b.inputs, b.seqs, logits.data(), k);
  auto const count = ssmlen::ops::masked_count(rows, b.mask.data());
  auto const ce = ssmlen::ops::softmax_cross_entropy(be, rows, v, logits.data(), b.targets.data(), b.mask.data(),
                                                     dlogits.data(), 1.0 / static_cast<double>(count));
  m.zero_grad();
  m.backward(be, dlogits.data(), k);
  return ce;
}

struct model_case {
  char const* name;
  mamba_config cfg;
  std::vector<std::int64_t> lengths;  // inputs per sequence: ragged, around and past the 64-token scan chunk
};

std::int64_t addition_vocab() { return ssmlen::tasks::addition::make_vocab().size(); }

std::vector<model_case> model_cases() {
  return {
      {"headline",
       {.vocab = addition_vocab(), .d_model = 64, .n_layers = 4, .d_state = 16, .expand = 2},
       {37, 1, 64, 200, 5, 129, 63, 90, 2, 150, 65, 17}},
      {"odd",
       {.vocab = 23,
        .d_model = 40,
        .n_layers = 3,
        .d_state = 16,
        .expand = 2,
        .tie_embeddings = false,
        .delta_min = 0.02},
       {70, 3, 129, 1, 44, 128, 9}},
  };
}

//! Loss and every gradient of the device model against the host model in float (and, printed, in double).
template <class Scan>
void check_gradients(model_case const& mcase, std::uint64_t seed) {
  CAPTURE(mcase.name);
  CAPTURE(Scan::name());
  host_model<float> ref(mcase.cfg, seed);
  host_model<double> ref64(mcase.cfg, 0);
  copy_params(ref, ref64);
  auto const b = random_batch(mcase.cfg.vocab, mcase.lengths, seed + 100);

  mc::mamba_lm<Scan> dev(ref);
  dev.reserve(b.seqs);
  dev.poison();
  dev.compute_gradients(b);
  auto const ce = dev.loss();

  auto const ce_ref = host_gradients(ref, b);
  auto const ce_ref64 = host_gradients(ref64, b);
  CHECK(ce.count == ce_ref.count);
  double const loss_err = std::abs(ce.mean() - ce_ref.mean()) / ce_ref.mean();
  CHECK(loss_err < tol);

  host_model<float> got(mcase.cfg, seed + 1);  // other values: every one must be overwritten by download
  dev.download(got);
  auto const pg = got.named_params(), pr = ref.named_params();
  auto const p64 = ref64.named_params();
  double worst = 0, worst_host = 0;
  std::string worst_name;
  for (std::size_t i = 0; i < pr.size(); ++i) {
    CAPTURE(pr[i].name);
    auto const n = pr[i].p->value.size();
    CHECK(std::memcmp(pg[i].p->value.data(), pr[i].p->value.data(), static_cast<std::size_t>(n) * sizeof(float)) ==
          0);  // values round-trip exactly
    double const e = rel_error(pg[i].p->grad.data(), pr[i].p->grad.data(), n);
    CHECK(e < tol);
    if (e > worst) {
      worst = e;
      worst_name = pr[i].name;
    }
    worst_host = std::max(worst_host, rel_error(pr[i].p->grad.data(), p64[i].p->grad.data(), n));
  }
  std::printf("model %-8s %-22s loss %.6f (host %.6f, double %.6f), loss error %.1e; worst gradient error %.2e (%s); "
              "host float vs double: worst %.2e\n",
              mcase.name, Scan::name().c_str(), ce.mean(), ce_ref.mean(), ce_ref64.mean(), loss_err, worst,
              worst_name.c_str(), worst_host);

  // The same batch again: the same bits (no atomics, fixed reduction orders, cuBLAS deterministic on one GPU).
  std::vector<float> first(dev.params().capacity()), second(first.size());
  ssmlen::backends::cuda_check(
      cudaMemcpy(first.data(), dev.params().grads(), first.size() * sizeof(float), cudaMemcpyDeviceToHost), "copy");
  dev.compute_gradients(b);
  CHECK(dev.loss().loss == ce.loss);
  ssmlen::backends::cuda_check(
      cudaMemcpy(second.data(), dev.params().grads(), second.size() * sizeof(float), cudaMemcpyDeviceToHost), "copy");
  CHECK(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)) == 0);
}

TEST_CASE("cuda mamba_lm: loss and every gradient match the host model (headline and odd configurations)") {
  if (!gpu_or_skip()) {
    return;
  }
  auto const cases = model_cases();
  check_gradients<ssmlen::scan::cuda::state_split<>>(cases[0], 1);  // the default
  check_gradients<ssmlen::scan::cuda::state_split<>>(cases[1], 2);
  check_gradients<ssmlen::scan::cuda::block_parallel<>>(cases[1], 4);
  check_gradients<ssmlen::scan::recurrent>(cases[1], 3);
  check_gradients<ssmlen::scan::chunked<64>>(cases[1], 5);  // the chunks as a view's sequences, in a block
}

TEST_CASE("cuda mamba_lm: three AdamW steps match the host trainer") {
  if (!gpu_or_skip()) {
    return;
  }
  ssmlen::train::adamw_config const opt{.lr = 1e-3, .weight_decay = 0.1};
  ssmlen::train::warmup_cosine const schedule{.peak = 1e-3, .warmup = 2, .total = 3};
  std::uint64_t seed = 10;
  for (auto const& mcase : model_cases()) {
    CAPTURE(mcase.name);
    host_model<float> ref(mcase.cfg, seed);
    host_model<float> start = ref;  // the parameters before training
    mc::mamba_lm<> dev(ref, {.optimizer = opt});
    ssmlen::train::trainer host(ref, opt, schedule);
    ssmlen::backends::host const be;
    for (int step = 0; step < 3; ++step) {
      CAPTURE(step);
      auto const b = random_batch(mcase.cfg.vocab, mcase.lengths, seed + 1000 + static_cast<std::uint64_t>(step));
      dev.reserve(b.seqs);
      dev.poison();
      auto const want = host.step(be, b);
      auto const got = dev.train_step(b, want.lr);
      CHECK(got.step == want.step);
      CHECK(got.predicted == want.predicted);
      CHECK(std::abs(got.loss - want.loss) < tol * want.loss);
      CHECK(std::abs(got.grad_norm - want.grad_norm) < tol * want.grad_norm);
    }
    CHECK(dev.optimizer().steps() == 3);
    host_model<float> got(mcase.cfg, seed + 1);
    dev.download(got);
    auto const pg = got.named_params(), pr = ref.named_params();
    auto const p0 = start.named_params();
    double worst = 0, worst_update = 0;
    for (std::size_t i = 0; i < pr.size(); ++i) {
      CAPTURE(pr[i].name);
      auto const n = pr[i].p->value.size();
      double const e = rel_error(pg[i].p->value.data(), pr[i].p->value.data(), n);
      CHECK(e < tol);
      worst = std::max(worst, e);
      std::vector<float> du(static_cast<std::size_t>(n)), du_ref(du.size());  // what the three steps changed
      for (std::int64_t j = 0; j < n; ++j) {
        du[static_cast<std::size_t>(j)] = pg[i].p->value[j] - p0[i].p->value[j];
        du_ref[static_cast<std::size_t>(j)] = pr[i].p->value[j] - p0[i].p->value[j];
      }
      worst_update = std::max(worst_update, rel_error(du, du_ref));
    }
    std::printf("adamw %-8s worst parameter error after 3 steps %.2e; worst error of the update itself %.2e\n",
                mcase.name, worst, worst_update);
    ++seed;
  }
}

TEST_CASE("cuda mamba_lm: 20 training steps on addition traces reach the host trainer's parameters") {
  if (!gpu_or_skip()) {
    return;
  }
  // The headline's optimizer and a compressed schedule (warm-up, then cosine), so clipping, warm-up and decay all
  // act, on batches of expert traces as `ssmlen train` samples them. Float rounding differs between the two sides
  // and compounds over the steps: the parameters get a looser bound than a single step's gradients.
  constexpr int steps = 20;
  ssmlen::train::adamw_config const opt{.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.98, .weight_decay = 0.01};
  ssmlen::train::warmup_cosine const schedule{.peak = 3e-3, .warmup = 5, .total = steps};
  ssmlen::tasks::any_task const task(ssmlen::tasks::addition{});
  mamba_config const cfg{.vocab = task.vocab().size(), .d_model = 32, .n_layers = 2, .d_state = 8, .expand = 2};
  host_model<float> ref(cfg, 50);
  mc::mamba_lm<> dev(ref, {.optimizer = opt});
  ssmlen::train::trainer host(ref, opt, schedule);
  ssmlen::backends::host const be;
  double worst_loss = 0;
  for (int step = 0; step < steps; ++step) {
    CAPTURE(step);
    auto const b = ssmlen::train::task_batch(task, 51, step, 32, 5);
    auto const want = host.step(be, b);
    auto const got = dev.train_step(b, want.lr);
    double const loss_err = std::abs(got.loss - want.loss) / want.loss;
    CHECK(got.predicted == want.predicted);
    CHECK(loss_err < 1e-4);
    worst_loss = std::max(worst_loss, loss_err);
    if (step == 0 || step == steps - 1) {
      std::printf("train20 step %2d: loss %.6f (host %.6f), |g| %.4f (host %.4f)\n", step, got.loss, want.loss,
                  got.grad_norm, want.grad_norm);
    }
  }
  host_model<float> got(cfg, 52);
  dev.download(got);
  auto const pg = got.named_params(), pr = ref.named_params();
  double worst = 0;
  std::string worst_name;
  for (std::size_t i = 0; i < pr.size(); ++i) {
    CAPTURE(pr[i].name);
    double const e = rel_error(pg[i].p->value.data(), pr[i].p->value.data(), pr[i].p->value.size());
    CHECK(e < 1e-3);
    if (e > worst) {
      worst = e;
      worst_name = pr[i].name;
    }
  }
  std::printf("train20 worst loss error over %d steps %.2e; worst parameter error at the end %.2e (%s)\n", steps,
              worst_loss, worst, worst_name.c_str());
}

TEST_CASE("cuda mamba_lm: step graphs give the eager steps' bits while layouts change and come back") {
  if (!gpu_or_skip()) {
    return;
  }
  // Two models from the same parameters, one eager and one with step_graphs, on the same batches: layouts A A A B B
  // A A A, then a forward of another layout (which drops the graph), then A A. Every step's loss and gradient norm,
  // and at the end every parameter, gradient and optimizer moment, must have the same bits.
  std::vector<std::int64_t> const layout_a{70, 3, 129}, layout_b{40, 41}, layout_c{9};
  std::vector<std::vector<std::int64_t>> const plan{layout_a, layout_a, layout_a, layout_b, layout_b,
                                                    layout_a, layout_a, layout_a, layout_a, layout_a};
  for (auto const precision : {gemm_precision::fp32, gemm_precision::bf16}) {
    CAPTURE(precision == gemm_precision::bf16 ? "bf16" : "fp32");
    mamba_config const cfg{.vocab = 13, .d_model = 32, .n_layers = 2, .d_state = 8, .expand = 2};
    host_model<float> ref(cfg, 70);
    ssmlen::train::adamw_config const opt{.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.98, .weight_decay = 0.01};
    ssmlen::backends::cuda_stream s1, s2;
    mc::mamba_lm<> eager(ref, {.be = s1.backend(), .precision = precision, .optimizer = opt});
    mc::mamba_lm<> graphed(ref, {.be = s2.backend(), .precision = precision, .optimizer = opt, .step_graphs = true});
    int same_steps = 0;
    for (std::size_t step = 0; step < plan.size(); ++step) {
      CAPTURE(step);
      if (step == 8) {  // an evaluation forward of another layout between training steps
        auto const other = random_batch(cfg.vocab, layout_c, 99);
        eager.forward(other.inputs, other.seqs);
        graphed.forward(other.inputs, other.seqs);
      }
      auto const b = random_batch(cfg.vocab, plan[step], 80 + step);
      double const lr = 1e-3 * static_cast<double>(1 + step % 3);
      auto const want = eager.train_step(b, lr);
      auto const got = graphed.train_step(b, lr);
      bool const same = got.loss == want.loss && got.grad_norm == want.grad_norm;
      CHECK(same);
      same_steps += same;
    }
    // Captured at steps 1, 4, 6 and 9 (the second step of each run of a layout); replayed at 1, 2, 4, 6, 7, 9.
    CHECK(graphed.graph_captures() == 4);
    CHECK(graphed.graph_replays() == 6);
    CHECK(eager.graph_replays() == 0);
    host_model<float> a(cfg, 1), g(cfg, 2);
    eager.download(a);
    graphed.download(g);
    auto const pa = a.named_params(), pg = g.named_params();
    int differing = 0;
    for (std::size_t i = 0; i < pa.size(); ++i) {
      auto const& va = pa[i].p->value;
      auto const& ga = pa[i].p->grad;
      differing += std::memcmp(va.data(), pg[i].p->value.data(), va.size() * sizeof(float)) != 0;
      differing += std::memcmp(ga.data(), pg[i].p->grad.data(), ga.size() * sizeof(float)) != 0;
    }
    CHECK(differing == 0);
    ssmlen::train::adamw<float> ma(opt, a.named_params()), mg(opt, g.named_params());
    eager.download_optimizer(ma);
    graphed.download_optimizer(mg);
    auto same_tensors = [](auto const& x, auto const& y) {
      bool same = x.size() == y.size();
      for (std::size_t i = 0; same && i < x.size(); ++i) {
        same = x[i].size() == y[i].size() && std::memcmp(x[i].data(), y[i].data(), x[i].size() * sizeof(float)) == 0;
      }
      return same;
    };
    CHECK(same_tensors(ma.first_moments(), mg.first_moments()));
    CHECK(same_tensors(ma.second_moments(), mg.second_moments()));
    std::printf("step graphs (%s): %d of %zu steps with the eager losses' and norms' bits, %lld captures, %lld "
                "replays, %d tensors differing\n",
                precision == gemm_precision::bf16 ? "bf16" : "fp32", same_steps, plan.size(),
                static_cast<long long>(graphed.graph_captures()), static_cast<long long>(graphed.graph_replays()),
                differing);
  }
  host_model<float> ref({.vocab = 13, .d_model = 16, .n_layers = 1, .d_state = 4, .expand = 2}, 3);
  CHECK_THROWS_AS(mc::mamba_lm<>(ref, {.step_graphs = true}), ssmlen::error);  // the legacy default stream
}

TEST_CASE("cuda mamba_lm: a training checkpoint written from the device resumes bit-identically") {
  if (!gpu_or_skip()) {
    return;
  }
  // 6 steps straight, against 3 steps, a checkpoint through the host format (train::save_training_checkpoint), a
  // fresh device model loaded from it, and 3 more steps: the same parameters to the bit.
  ssmlen::train::adamw_config const opt{.lr = 3e-3, .beta1 = 0.9, .beta2 = 0.98, .weight_decay = 0.01};
  ssmlen::train::warmup_cosine const schedule{.peak = 3e-3, .warmup = 2, .total = 6};
  ssmlen::tasks::any_task const task(ssmlen::tasks::addition{});
  mamba_config const cfg{.vocab = task.vocab().size(), .d_model = 24, .n_layers = 2, .d_state = 8, .expand = 2};
  auto batch = [&](int step) { return ssmlen::train::task_batch(task, 61, step, 16, 5, 2); };
  host_model<float> const init(cfg, 60);
  auto run = [&](mc::mamba_lm<>& dev, int from, int to) {
    for (int step = from; step < to; ++step) {
      (void)dev.train_step(batch(step), schedule(step));
    }
  };
  auto params_of = [&](mc::mamba_lm<> const& dev) {
    host_model<float> h(cfg, 0);
    dev.download(h);
    std::vector<float> out;
    for (auto const& p : h.named_params()) {
      out.insert(out.end(), p.p->value.begin(), p.p->value.end());
    }
    return out;
  };
  auto straight_host = init;
  mc::mamba_lm<> straight(straight_host, {.optimizer = opt});
  run(straight, 0, 6);

  auto const file = std::filesystem::temp_directory_path() / "ssmlen_cuda_resume_test.safetensors";
  {
    auto first_host = init;
    mc::mamba_lm<> first(first_host, {.optimizer = opt});
    run(first, 0, 3);
    host_model<float> saved(cfg, 0);
    first.download(saved);
    ssmlen::train::adamw<float> saved_opt(opt, saved.named_params());
    first.download_optimizer(saved_opt);
    CHECK(saved_opt.steps() == 3);
    ssmlen::train::save_training_checkpoint(file, saved, saved_opt, {{"seed", 61}});
  }
  host_model<float> loaded(cfg, 99);  // other weights: everything must come from the file
  ssmlen::train::adamw<float> loaded_opt(opt, loaded.named_params());
  (void)ssmlen::train::load_training_checkpoint(file, loaded, loaded_opt);
  std::filesystem::remove(file);
  mc::mamba_lm<> resumed(loaded, {.optimizer = opt});
  resumed.upload_optimizer(loaded_opt);
  CHECK(resumed.optimizer().steps() == 3);
  run(resumed, 3, 6);
  CHECK(params_of(resumed) == params_of(straight));

  // Without the optimizer state the same steps end elsewhere: the comparison above can fail.
  mc::mamba_lm<> fresh_moments(loaded, {.optimizer = opt});
  run(fresh_moments, 3, 6);
  CHECK(params_of(fresh_moments) != params_of(straight));
  // A host optimizer over other tensors is refused.
  host_model<float> other(mamba_config{.vocab = cfg.vocab, .d_model = 24, .n_layers = 1, .d_state = 8}, 1);
  ssmlen::train::adamw<float> other_opt(opt, other.named_params());
  CHECK_THROWS_AS(resumed.download_optimizer(other_opt), ssmlen::error);
}

// ---------------------------------------------------------------------------------------------------------------
// The block alone, with initial states, final states and their gradients.

struct block_case {
  std::int64_t d, ed, ns, k, r;
  float delta_min;
  std::vector<std::int64_t> lengths;
};

//! The device block against the host block in float; with bf16 GEMMs (norm-wise error < bf16_tol), optionally with
//! the weight matrices' bf16 copies handed to the block, and u and dout handed to it as their bf16 roundings alone
//! (values null: the block must read the roundings, and never round them itself). Returns the device's outputs,
//! states and gradients.
std::vector<std::vector<float>> check_block(block_case const& bc, std::uint64_t seed,
                                            gemm_precision precision = gemm_precision::fp32,
                                            bool rounded_weights = false, bool rounded_io = false) {
  CAPTURE(static_cast<int>(precision));
  CAPTURE(rounded_weights);
  CAPTURE(rounded_io);
  double const block_tol = precision == gemm_precision::bf16 ? bf16_tol : tol;
  using host_block = ssmlen::layers::mamba_block<float, ssmlen::scan::recurrent>;
  ssmlen::backends::host const be;
  host_block ref(bc.d, bc.ed, bc.ns, bc.k, bc.r);
  ref.ssm.delta_min = bc.delta_min;
  ssmlen::rng g(seed);
  ref.init_mamba(g, 2);
  auto const seqs = ssmlen::sequences::from_lengths(bc.lengths);
  std::int64_t const rows = seqs.tokens(), s = seqs.count();
  auto const u = normal(static_cast<std::size_t>(rows * bc.d), 1.0, seed + 1);
  auto const dout = normal(u.size(), 1.0, seed + 2);
  auto init = ref.make_state(s), d_final = ref.make_state(s), final_ref = ref.make_state(s),
       d_init_ref = ref.make_state(s);
  auto fill = [](ssmlen::tensor<float>& t, std::uint64_t sd) {
    auto const v = normal(static_cast<std::size_t>(t.size()), 0.5, sd);
    std::copy(v.begin(), v.end(), t.data());
  };
  fill(init.conv, seed + 3);
  fill(init.ssm, seed + 4);
  fill(d_final.conv, seed + 5);
  fill(d_final.ssm, seed + 6);

  // Device parameters from the host ones; gradients start from the same non-zero values on both sides.
  std::vector<ssmlen::layers::param<float>*> const hp{
      &ref.in_proj.weight,   &ref.conv.weight, &ref.conv.bias, &ref.ssm.x_proj.weight, &ref.ssm.dt_proj.weight,
      &ref.ssm.dt_proj.bias, &ref.ssm.a_log,   &ref.ssm.d,     &ref.out_proj.weight};
  std::vector<device_buffer<float>> values, grads;
  for (std::size_t i = 0; i < hp.size(); ++i) {
    auto const g0 = normal(static_cast<std::size_t>(hp[i]->grad.size()), 0.1, seed + 10 + i);
    std::copy(g0.begin(), g0.end(), hp[i]->grad.data());
    values.push_back(device_buffer<float>(
        std::span<float const>(hp[i]->value.data(), static_cast<std::size_t>(hp[i]->value.size()))));
    grads.push_back(on_device(g0));
  }
  auto params_of = [](std::vector<device_buffer<float>>& b) {
    return lc::mamba_block_params<float*>{b[0].data(), b[1].data(), b[2].data(), b[3].data(), b[4].data(),
                                          b[5].data(), b[6].data(), b[7].data(), b[8].data()};
  };

  // Host
  std::vector<float> out_ref(u.size()), du_ref(u.size());
  host_block::cache k_ref;
  ref.forward(be, seqs, u.data(), out_ref.data(), k_ref, &init, &final_ref);
  ref.backward(be, seqs, u.data(), dout.data(), du_ref.data(), false, k_ref, &init, &d_final, &d_init_ref);

  // Device
  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  std::vector<device_buffer<ssmlen::bfloat16>> rounded;  // in_proj, x_proj, dt_proj, out_proj
  lc::mamba_block_params<ssmlen::bfloat16 const*> rounded_params{};
  if (rounded_weights) {
    for (std::size_t const i : {0, 3, 4, 8}) {
      auto const n = static_cast<std::int64_t>(values[i].size());
      rounded.emplace_back(values[i].size());
      ssmlen::backends::round_to_bf16(stream.backend(), 1, n, values[i].data(), n, rounded.back().data());
    }
    rounded_params.in_proj = rounded[0].data();
    rounded_params.x_proj = rounded[1].data();
    rounded_params.dt_proj = rounded[2].data();
    rounded_params.out_proj = rounded[3].data();
  }
  lc::mamba_block<> blk({bc.d, bc.ed, bc.ns, bc.k, bc.r, bc.delta_min}, params_of(values), params_of(grads), precision,
                        rounded_params);
  std::vector<std::int64_t> off{0};
  for (auto const len : bc.lengths) {
    off.push_back(off.back() + len);
  }
  device_buffer<std::int64_t> offsets{std::span<std::int64_t const>(off)};
  ssmlen::device_sequences const dseqs{offsets.data(), s, rows};
  auto du_u = on_device(u), d_dout = on_device(dout);
  auto d_init_conv = on_device(std::vector<float>(init.conv.begin(), init.conv.end()));
  auto d_init_ssm = on_device(std::vector<float>(init.ssm.begin(), init.ssm.end()));
  auto d_dfinal_conv = on_device(std::vector<float>(d_final.conv.begin(), d_final.conv.end()));
  auto d_dfinal_ssm = on_device(std::vector<float>(d_final.ssm.begin(), d_final.ssm.end()));
  device_buffer<float> out(u.size()), du(u.size()), fin_conv(static_cast<std::size_t>(final_ref.conv.size())),
      fin_ssm(static_cast<std::size_t>(final_ref.ssm.size())), gi_conv(fin_conv.size()), gi_ssm(fin_ssm.size());
  lc::mamba_block_cache k;
  lc::mamba_block_scratch ws;
  blk.reserve(seqs, dseqs, k, ws, stream.get());
  k.poison(stream.get());
  ws.poison(stream.get());
  for (auto* b : {&out, &du, &fin_conv, &fin_ssm, &gi_conv, &gi_ssm}) {
    lc::poison_buffer(*b, stream.get());
  }
  // Handed in: roundings made apart from the block (reading its poisoned k.u16 or ws.dout16 instead gives NaN).
  device_buffer<ssmlen::bfloat16> u16(rounded_io ? u.size() : 0), dout16(u16.size());
  lc::mamba_block_rows u_in{du_u.data()}, dout_in{d_dout.data()};
  if (rounded_io) {
    REQUIRE(precision == gemm_precision::bf16);
    ssmlen::backends::round_to_bf16(stream.backend(), rows, bc.d, du_u.data(), bc.d, u16.data());
    ssmlen::backends::round_to_bf16(stream.backend(), rows, bc.d, d_dout.data(), bc.d, dout16.data());
    u_in = {nullptr, u16.data()};
    dout_in = {nullptr, dout16.data()};
  }
  blk.forward(h, seqs, dseqs, u_in, out.data(), k, ws, {d_init_conv.data(), d_init_ssm.data()},
              {fin_conv.data(), fin_ssm.data()});
  blk.backward(h, seqs, dseqs, u_in.values, dout_in, du.data(), false, k, ws, {d_init_conv.data(), d_init_ssm.data()},
               {d_dfinal_conv.data(), d_dfinal_ssm.data()}, {gi_conv.data(), gi_ssm.data()});
  stream.synchronize();

  std::vector<std::vector<float>> results;
  double worst = 0;
  auto check_tensor = [&](char const* what, std::vector<float> got, float const* want) {
    CAPTURE(what);
    double const e = rel_error(got.data(), want, static_cast<std::int64_t>(got.size()));
    CHECK(e < block_tol);
    worst = std::max(worst, e);
    results.push_back(std::move(got));
  };
  check_tensor("out", out.to_host(), out_ref.data());
  check_tensor("final conv", fin_conv.to_host(), final_ref.conv.data());
  check_tensor("final ssm", fin_ssm.to_host(), final_ref.ssm.data());
  check_tensor("du", du.to_host(), du_ref.data());
  check_tensor("d_init conv", gi_conv.to_host(), d_init_ref.conv.data());
  check_tensor("d_init ssm", gi_ssm.to_host(), d_init_ref.ssm.data());
  char const* const names[] = {"in_proj",      "conv.weight", "conv.bias", "x_proj",  "dt_proj.weight",
                               "dt_proj.bias", "A_log",       "D",         "out_proj"};
  for (std::size_t i = 0; i < hp.size(); ++i) {
    check_tensor(names[i], grads[i].to_host(), hp[i]->grad.data());
  }
  std::printf("block D=%lld ED=%lld N=%lld K=%lld %s%s%s: worst error (outputs, states, gradients) %.2e\n",
              static_cast<long long>(bc.d), static_cast<long long>(bc.ed), static_cast<long long>(bc.ns),
              static_cast<long long>(bc.k), precision == gemm_precision::bf16 ? "bf16" : "fp32",
              rounded_weights ? " (rounded weights)" : "", rounded_io ? " (rounded u, dout)" : "", worst);
  return results;
}

TEST_CASE("cuda mamba block: forward and backward with initial and final states match the host block") {
  if (!gpu_or_skip()) {
    return;
  }
  check_block({64, 128, 16, 4, 4, 0.0f, {37, 1, 64, 130, 0, 2, 65}}, 20);
  check_block({37, 74, 5, 3, 3, 0.02f, {70, 2, 129, 1}}, 21);  // ED % 4 != 0: the conv's scalar path; N = 5
}

TEST_CASE("cuda mamba block: bf16 GEMMs are the host block's within bf16 rounding, rounded inputs handed in or not") {
  if (!gpu_or_skip()) {
    return;
  }
  for (block_case const& bc : {block_case{64, 128, 16, 4, 4, 0.0f, {37, 1, 64, 130, 0, 2, 65}},
                               block_case{37, 74, 5, 3, 3, 0.02f, {70, 2, 129, 1}}}) {
    // The block's own rounded activations and gradients, with weights rounded per GEMM or handed in rounded, and u
    // and dout rounded by the block or handed in rounded: the same bf16 values reach the same GEMMs, so the runs
    // agree to float rounding.
    auto const staged = check_block(bc, 22, gemm_precision::bf16, false);
    struct rounded_inputs {
      bool weights, u_and_dout;
    };
    for (auto const given : {rounded_inputs{true, false}, rounded_inputs{false, true}, rounded_inputs{true, true}}) {
      CAPTURE(given.weights);
      CAPTURE(given.u_and_dout);
      auto const handed = check_block(bc, 22, gemm_precision::bf16, given.weights, given.u_and_dout);
      REQUIRE(staged.size() == handed.size());
      for (std::size_t i = 0; i < staged.size(); ++i) {
        CAPTURE(i);
        CHECK(rel_error(handed[i].data(), staged[i].data(), static_cast<std::int64_t>(staged[i].size())) < 1e-5);
      }
    }
  }
}

//! With bf16 GEMMs the model keeps the blocks' inputs only as the roundings its norms write (their fp32 values are
//! never written): the blocks' GEMMs, forward and backward, must read those alone.
void check_bf16_model(mamba_config const& cfg) {
  CAPTURE(cfg.d_model);
  host_model<float> ref(cfg, 40);
  mc::mamba_lm<> dev(ref, {.precision = gemm_precision::bf16});
  auto const b = random_batch(cfg.vocab, {37, 1, 90, 64}, 41);
  dev.reserve(b.seqs);
  dev.poison();
  // A large step, so that gradients from stale bf16 weights (made before the update) would be far off.
  dev.train_step(b, 0.05);
  dev.download(ref);
  // The update wrote every weight's bf16 copy: each is the new value rounded to nearest even, bit for bit.
  auto const hp = ref.named_params();  // the device layout's order
  auto const& entries = dev.params().entries();
  REQUIRE(hp.size() == entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    CAPTURE(entries[i].name);
    REQUIRE(hp[i].name == entries[i].name);
    std::vector<ssmlen::bfloat16> r(static_cast<std::size_t>(entries[i].size));
    ssmlen::backends::cuda_check(
        cudaMemcpy(r.data(), dev.params().rounded(entries[i].name), r.size() * sizeof(r[0]), cudaMemcpyDeviceToHost),
        "copy");
    auto const& w = hp[i].p->value;
    CHECK(mismatched_roundings(r, std::vector<float>(w.begin(), w.end())) == 0);
  }
  for (int pass = 0; pass < 2; ++pass) {  // twice: the forward reads the copies, it does not remake them
    dev.reserve(b.seqs);
    dev.poison();
    dev.compute_gradients(b);
    auto const ce = dev.loss();
    auto const ce_ref = host_gradients(ref, b);
    CHECK(std::abs(ce.mean() - ce_ref.mean()) / ce_ref.mean() < 1e-2);
    host_model<float> got(cfg, 42);
    dev.download(got);
    auto const pg = got.named_params(), pr = ref.named_params();
    double worst = 0;
    for (std::size_t i = 0; i < pr.size(); ++i) {
      CAPTURE(pr[i].name);
      double const e = rel_error(pg[i].p->grad.data(), pr[i].p->grad.data(), pr[i].p->grad.size());
      CHECK(e < bf16_tol);
      worst = std::max(worst, e);
    }
    std::printf("model bf16 GEMMs, D=%lld, after one update: loss %.6f (host %.6f), worst gradient error %.2e\n",
                static_cast<long long>(cfg.d_model), ce.mean(), ce_ref.mean(), worst);
  }
}

TEST_CASE("cuda mamba_lm: bf16 GEMMs give the host model's loss and gradients within bf16 rounding, after updates") {
  if (!gpu_or_skip()) {
    return;
  }
  check_bf16_model({.vocab = 13, .d_model = 32, .n_layers = 2, .d_state = 8, .expand = 2});
  check_bf16_model({.vocab = 13, .d_model = 30, .n_layers = 2, .d_state = 8, .expand = 2});  // RMSNorm's scalar path
}

// ---------------------------------------------------------------------------------------------------------------
// Quick case for the memory, race and initialization checkers; argument checks.

TEST_CASE("cuda mamba_lm: small model on a small ragged batch") {
  if (!gpu_or_skip()) {
    return;
  }
  model_case const small{"small",
                         {.vocab = 11, .d_model = 16, .n_layers = 2, .d_state = 4, .expand = 2, .delta_min = 0.01},
                         {5, 70, 1, 2}};
  check_gradients<ssmlen::scan::cuda::state_split<>>(small, 30);
  check_gradients<ssmlen::scan::chunked<8>>(small, 33);  // the 70-token sequence in 9 chunks
  host_model<float> ref(small.cfg, 31);
  mc::mamba_lm<> dev(ref);
  auto const b = random_batch(small.cfg.vocab, small.lengths, 32);
  dev.reserve(b.seqs);
  dev.poison();
  auto const r = dev.train_step(b, 1e-3);
  CHECK(std::isfinite(r.loss));
  CHECK(std::isfinite(r.grad_norm));
}

TEST_CASE("cuda mamba_lm: a bad batch throws before any launch") {
  if (!gpu_or_skip()) {
    return;
  }
  host_model<float> ref({.vocab = 11, .d_model = 16, .n_layers = 1, .d_state = 4}, 40);
  mc::mamba_lm<> dev(ref);
  auto b = random_batch(11, {4, 6}, 41);
  auto bad = b;
  bad.inputs[3] = 11;  // token id out of range
  CHECK_THROWS_AS(dev.compute_gradients(bad), ssmlen::error);
  bad = b;
  std::fill(bad.mask.begin(), bad.mask.end(), std::uint8_t{0});  // nothing to learn from
  CHECK_THROWS_AS(dev.compute_gradients(bad), ssmlen::error);
  bad = b;
  bad.targets[2] = -1;
  bad.mask[2] = 1;
  CHECK_THROWS_AS(dev.compute_gradients(bad), ssmlen::error);
  CHECK_THROWS_AS(dev.forward(std::span<std::int32_t const>(b.inputs).first(3), b.seqs), ssmlen::error);
  host_model<float> other({.vocab = 11, .d_model = 16, .n_layers = 2, .d_state = 4}, 42);
  CHECK_THROWS_AS(dev.download(other), ssmlen::error);  // another configuration
}

}  // namespace
