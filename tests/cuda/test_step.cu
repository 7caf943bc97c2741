// SPDX-License-Identifier: Apache-2.0
//! @file test_step.cu
//! Parity of the CUDA recurrent step with the host one in float: the fused SSM step against
//! scan::selective_scan_step_row, the row argmax against agent::detail::argmax (ties included), the Mamba block's
//! step against the host block's step_row token by token from random states, and the language model's step
//! against the host model's step and forward, on random models (tied and untied heads, delta_min > 0, odd sizes,
//! batches that are not a multiple of 32), including rows restarted with fresh_token mid-sequence; then the
//! captured step graph against eager steps; with bf16 GEMMs, the step against the bf16 forward (training's view of
//! the model) and the host over 300-token rows. Errors are norm-wise, ‖gpu − host‖ / ‖host‖ < 1e-4 (bf16: 3e-2);
//! device states and scratch are poisoned with NaN first wherever the step must overwrite or reset them.
//! Built alone (nvcc this file) it is its own doctest program; in the CMake build the shared test main links in.
//! Without a GPU every case that needs one prints a skip message and passes.
#ifndef SSMLEN_TEST_DATA_DIR
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#endif
#include <ssmlen/agent/cuda/step_graph.cuh>
#include <ssmlen/agent/rollout.hpp>
#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/layers/cuda/mamba_block.cuh>
#include <ssmlen/layers/cuda/row_argmax.cuh>
#include <ssmlen/layers/mamba_block.hpp>
#include <ssmlen/models/cuda/mamba_lm.cuh>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/scan/cuda/selective_scan_step.cuh>
#include <ssmlen/scan/selective_scan.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <span>
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
using ssmlen::models::mamba_config;
using host_model = ssmlen::models::mamba_lm<float, ssmlen::scan::recurrent>;

constexpr double tol = 1e-4;       // norm-wise relative
constexpr double bf16_tol = 3e-2;  // the same with bf16 GEMMs (operands rounded to 8-bit mantissas)

//! A device copy, complete when this returns: work on other streams may read it at once.
device_buffer<float> on_device(std::vector<float> const& v) {
  device_buffer<float> b{std::span<float const>(v)};
  ssmlen::backends::cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  return b;
}

//! n floats of device memory (logits) on the host; the copy waits for the device's earlier work.
std::vector<float> to_host(float const* device, std::size_t n) {
  std::vector<float> host(n);
  ssmlen::backends::cuda_check(cudaMemcpy(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost),
                               "copy logits");
  return host;
}

//! Copies ids to the device in the order of `stream`'s work.
void upload(ssmlen::backends::cuda_stream const& stream, device_buffer<std::int32_t>& dst,
            std::vector<std::int32_t> const& src) {
  ssmlen::backends::cuda_check(
      cudaMemcpyAsync(dst.data(), src.data(), src.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice, stream.get()),
      "cudaMemcpyAsync (ids)");
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels

//! dt_rank > 0: the kernel applies dt_proj itself, from Δ_low [B, R] (inside wider rows) and the weight [ED, R].
void check_scan_step(std::int64_t batch, std::int64_t ed, std::int64_t ns, float delta_min, std::uint64_t seed,
                     std::int64_t dt_rank = 0, bool fp32_y = true) {
  std::int64_t const ld_bc = 2 * ns + 3, ld_z = ed + 5;  // B, C and z live inside wider rows, as in the block
  std::int64_t const ld_low = dt_rank + 2;
  auto const x = normal(static_cast<std::size_t>(batch * ed), 1.0, seed);
  auto dt_pre = normal(x.size(), 1.0, seed + 1);
  auto const dt_low = normal(static_cast<std::size_t>(batch * ld_low), 1.0, seed + 8);
  auto const dt_weight = normal(static_cast<std::size_t>(ed * dt_rank), 0.5, seed + 9);
  if (dt_rank > 0) {  // dt_pre = Δ_low dt_projᵀ, in double
    for (std::int64_t r = 0; r < batch; ++r) {
      for (std::int64_t c = 0; c < ed; ++c) {
        double v = 0;
        for (std::int64_t k = 0; k < dt_rank; ++k) {
          v += double(dt_low[static_cast<std::size_t>(r * ld_low + k)]) *
               dt_weight[static_cast<std::size_t>(c * dt_rank + k)];
        }
        dt_pre[static_cast<std::size_t>(r * ed + c)] = static_cast<float>(v);
      }
    }
  }
  auto const bias = normal(static_cast<std::size_t>(ed), 0.5, seed + 2);
  auto a_log = normal(static_cast<std::size_t>(ed * ns), 0.5, seed + 3);
  auto const bc = normal(static_cast<std::size_t>(batch * ld_bc), 1.0, seed + 4);
  auto const d = normal(static_cast<std::size_t>(ed), 1.0, seed + 5);
  auto const z = normal(static_cast<std::size_t>(batch * ld_z), 1.0, seed + 6);
  auto const h0 = normal(static_cast<std::size_t>(batch * ns * ed), 1.0, seed + 7);

  // Host: the block's own sequence of operations around selective_scan_step_row.
  std::vector<float> a(static_cast<std::size_t>(ns * ed)), h = h0, y_ref(x.size()), dt(static_cast<std::size_t>(ed));
  for (std::int64_t c = 0; c < ed; ++c) {
    for (std::int64_t n = 0; n < ns; ++n) {
      a[static_cast<std::size_t>(n * ed + c)] = -std::exp(a_log[static_cast<std::size_t>(c * ns + n)]);
    }
  }
  for (std::int64_t r = 0; r < batch; ++r) {
    for (std::int64_t c = 0; c < ed; ++c) {
      dt[static_cast<std::size_t>(c)] = delta_min + ssmlen::softplus(dt_pre[static_cast<std::size_t>(r * ed + c)] +
                                                                     bias[static_cast<std::size_t>(c)]);
    }
    float* yr = y_ref.data() + r * ed;
    ssmlen::scan::selective_scan_step_row(ed, ns, x.data() + r * ed, dt.data(), a.data(), bc.data() + r * ld_bc,
                                          bc.data() + r * ld_bc + ns, d.data(), h.data() + r * ns * ed, yr);
    for (std::int64_t c = 0; c < ed; ++c) {
      yr[c] *= ssmlen::silu(z[static_cast<std::size_t>(r * ld_z + c)]);
    }
  }

  auto dx = on_device(x), ddt = on_device(dt_pre), dbias = on_device(bias), dalog = on_device(a_log),
       dbc = on_device(bc), dd = on_device(d), dz = on_device(z), dh = on_device(h0), dlow = on_device(dt_low),
       dw = on_device(dt_weight);
  device_buffer<float> dy(x.size());
  dy.fill_bytes(0xFF);
  device_buffer<ssmlen::bfloat16> dy16(x.size());  // the gated output rounded, as a bf16 out_proj reads it
  dy16.fill_bytes(0xFF);
  ssmlen::scan::cuda::selective_scan_step_args p;
  p.batch = batch;
  p.channels = ed;
  p.states = ns;
  p.x = dx.data();
  if (dt_rank > 0) {
    p.dt_low = dlow.data();
    p.ld_dt_low = ld_low;
    p.dt_rank = dt_rank;
    p.dt_weight = dw.data();
  } else {
    p.dt_pre = ddt.data();
  }
  p.dt_bias = dbias.data();
  p.delta_min = delta_min;
  p.a_log = dalog.data();
  p.b = dbc.data();
  p.c = dbc.data() + ns;
  p.ld_bc = ld_bc;
  p.d = dd.data();
  p.z = dz.data();
  p.ld_z = ld_z;
  p.state = dh.data();
  p.y = fp32_y ? dy.data() : nullptr;
  p.y_rounded = dy16.data();
  ssmlen::scan::cuda::selective_scan_step({}, p);
  double const eh = rel_error(dh.to_host(), h);
  auto const y16 = dy16.to_host();
  double ey = 0;
  if (fp32_y) {  // y, and y16 its rounding to nearest even bit for bit
    auto const y = dy.to_host();
    ey = rel_error(y, y_ref);
    CHECK(mismatched_roundings(y16, y) == 0);
  } else {  // y16 alone: within bf16's rounding of the host's y
    std::vector<float> y(y16.size());
    std::transform(y16.begin(), y16.end(), y.begin(), [](ssmlen::bfloat16 b) { return static_cast<float>(b); });
    ey = rel_error(y, y_ref);
  }
  CHECK(ey < (fp32_y ? tol : 4e-3));
  CHECK(eh < tol);
  std::printf("scan step B=%lld ED=%lld N=%lld delta_min=%.2f dt_rank=%lld: y error %.2e, state error %.2e\n",
              static_cast<long long>(batch), static_cast<long long>(ed), static_cast<long long>(ns), delta_min,
              static_cast<long long>(dt_rank), ey, eh);
}

TEST_CASE("cuda selective scan step: one fused token matches the host row step") {
  if (!gpu_or_skip()) {
    return;
  }
  check_scan_step(45, 74, 5, 0.0f, 1);
  check_scan_step(3, 300, 16, 0.02f, 2);          // channels over several blocks
  check_scan_step(45, 74, 5, 0.0f, 3, 3);         // dt_proj inside the kernel
  check_scan_step(3, 300, 16, 0.02f, 4, 48);      // the 130M model's rank
  check_scan_step(19, 130, 7, 0.01f, 5, 70);      // rows over several blocks, a rank of two staged tiles
  check_scan_step(10, 40, 20, 0.01f, 8, 150);     // a rank of three staged tiles, states in two groups
  check_scan_step(6, 70, 40, 0.01f, 6, 3);        // states in two whole groups of 16 and a partial one
  check_scan_step(9, 96, 16, 0.0f, 7, 8, false);  // only the bf16 output
}

TEST_CASE("cuda row argmax: the first largest index of every row, as the host's") {
  if (!gpu_or_skip()) {
    return;
  }
  ssmlen::rng g(5);
  for (std::int64_t cols : {1, 7, 23, 33, 1000}) {
    std::int64_t const rows = 70;
    std::vector<float> x(static_cast<std::size_t>(rows * cols));
    for (auto& e : x) {
      e = static_cast<float>(g.uniform_int(-3, 3));  // few values: many ties, the host keeps the first
    }
    auto dx = on_device(x);
    device_buffer<std::int32_t> idx(static_cast<std::size_t>(rows));
    idx.fill_bytes(0xFF);
    lc::row_argmax({}, rows, cols, dx.data(), idx.data());
    auto const got = idx.to_host();
    for (std::int64_t r = 0; r < rows; ++r) {
      CAPTURE(cols);
      CAPTURE(r);
      CHECK(got[static_cast<std::size_t>(r)] == ssmlen::agent::detail::argmax(x.data() + r * cols, cols));
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The block

TEST_CASE("cuda mamba block step: token by token from random states, as the host block's step_row") {
  if (!gpu_or_skip()) {
    return;
  }
  struct block_case {
    std::int64_t d, ed, ns, k, r, batch;
    float delta_min;
  };
  std::uint64_t seed = 40;
  for (auto const& bc : {block_case{37, 74, 5, 3, 3, 45, 0.02f}, block_case{64, 128, 16, 4, 4, 33, 0.0f},
                         block_case{16, 32, 4, 1, 2, 5, 0.01f}}) {  // K = 1: no conv state
    CAPTURE(bc.d);
    using host_block = ssmlen::layers::mamba_block<float, ssmlen::scan::recurrent>;
    host_block ref(bc.d, bc.ed, bc.ns, bc.k, bc.r);
    ref.ssm.delta_min = bc.delta_min;
    ssmlen::rng g(seed);
    ref.init_mamba(g, 2);
    auto st = ref.make_state(bc.batch);
    auto const c0 = normal(static_cast<std::size_t>(st.conv.size()), 0.5, seed + 1);
    auto const s0 = normal(static_cast<std::size_t>(st.ssm.size()), 0.5, seed + 2);
    std::copy(c0.begin(), c0.end(), st.conv.data());
    std::copy(s0.begin(), s0.end(), st.ssm.data());

    std::vector<ssmlen::layers::param<float>*> const hp{
        &ref.in_proj.weight,   &ref.conv.weight, &ref.conv.bias, &ref.ssm.x_proj.weight, &ref.ssm.dt_proj.weight,
        &ref.ssm.dt_proj.bias, &ref.ssm.a_log,   &ref.ssm.d,     &ref.out_proj.weight};
    std::vector<device_buffer<float>> values;
    for (auto* p : hp) {
      values.push_back(on_device(std::vector<float>(p->value.begin(), p->value.end())));
    }
    lc::mamba_block_params<float*> const pv{values[0].data(), values[1].data(), values[2].data(),
                                            values[3].data(), values[4].data(), values[5].data(),
                                            values[6].data(), values[7].data(), values[8].data()};
    ssmlen::backends::cuda_stream stream;
    ssmlen::backends::blas_handle h(stream.backend());
    lc::mamba_block<> blk({bc.d, bc.ed, bc.ns, bc.k, bc.r, bc.delta_min}, pv, pv);
    auto dconv = on_device(c0), dssm = on_device(s0);
    lc::mamba_block_step_scratch ws;
    ws.reserve(blk.shape(), bc.batch, false, stream.get());
    ws.poison(stream.get());

    std::vector<float> a(static_cast<std::size_t>(bc.ns * bc.ed)),
        scratch(static_cast<std::size_t>(ref.step_scratch_size()));
    ref.ssm.make_a(a.data());
    double worst = 0;
    for (int t = 0; t < 12; ++t) {
      auto const u = normal(static_cast<std::size_t>(bc.batch * bc.d), 1.0, seed + 10 + static_cast<std::uint64_t>(t));
      std::vector<float> out_ref(u.size());
      for (std::int64_t r = 0; r < bc.batch; ++r) {
        ref.step_row(u.data() + r * bc.d, out_ref.data() + r * bc.d, st.conv.data() + r * (bc.k - 1) * bc.ed,
                     st.ssm.data() + r * bc.ns * bc.ed, a.data(), scratch.data());
      }
      auto du = on_device(u);
      device_buffer<float> out(u.size());
      out.fill_bytes(0xFF, stream.get());
      blk.step(h, bc.batch, {du.data()}, out.data(), {bc.k > 1 ? dconv.data() : nullptr, dssm.data()}, ws);
      stream.synchronize();
      double const e = rel_error(out.to_host(), out_ref);
      CHECK(e < tol);
      worst = std::max(worst, e);
    }
    if (bc.k > 1) {
      double const ec = rel_error(dconv.to_host().data(), st.conv.data(), st.conv.size());
      CHECK(ec < tol);
      worst = std::max(worst, ec);
    }
    double const es = rel_error(dssm.to_host().data(), st.ssm.data(), st.ssm.size());
    CHECK(es < tol);
    worst = std::max(worst, es);
    std::printf("block step D=%lld ED=%lld N=%lld K=%lld B=%lld: worst error over 12 tokens (outputs, states) %.2e\n",
                static_cast<long long>(bc.d), static_cast<long long>(bc.ed), static_cast<long long>(bc.ns),
                static_cast<long long>(bc.k), static_cast<long long>(bc.batch), worst);
    seed += 100;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The language model

//! The device state's layer i, rows [0, B), as the host state's tensors.
void upload_state(host_model::state const& host, mc::mamba_lm_state& dev) {
  for (std::size_t i = 0; i < host.layers.size(); ++i) {
    auto const l = dev.layer(static_cast<std::int64_t>(i));
    auto const& hl = host.layers[i];
    ssmlen::backends::cuda_check(cudaMemcpy(l.conv, hl.conv.data(),
                                            static_cast<std::size_t>(hl.conv.size()) * sizeof(float),
                                            cudaMemcpyHostToDevice),
                                 "copy conv state");
    ssmlen::backends::cuda_check(cudaMemcpy(l.ssm, hl.ssm.data(),
                                            static_cast<std::size_t>(hl.ssm.size()) * sizeof(float),
                                            cudaMemcpyHostToDevice),
                                 "copy ssm state");
  }
  ssmlen::backends::cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

//! Worst norm-wise error of the device state against the host's, over every layer's conv and SSM state.
double state_error(host_model::state const& host, mc::mamba_lm_state& dev) {
  auto const conv = dev.conv.to_host(), ssm = dev.ssm.to_host();
  double worst = 0;
  for (std::size_t i = 0; i < host.layers.size(); ++i) {
    auto const& hl = host.layers[i];
    worst = std::max(worst, rel_error(conv.data() + static_cast<std::int64_t>(i) * dev.batch * dev.conv_row,
                                      hl.conv.data(), hl.conv.size()));
    worst = std::max(worst, rel_error(ssm.data() + static_cast<std::int64_t>(i) * dev.batch * dev.ssm_row,
                                      hl.ssm.data(), hl.ssm.size()));
  }
  return worst;
}

void check_model_step(mamba_config const& cfg, std::int64_t batch, std::uint64_t seed, bool fused = true) {
  ssmlen::backends::host const be;
  host_model ref(cfg, seed);
  mc::mamba_lm<> dev(ref, mc::mamba_lm_options{.fused_step = fused});
  std::int64_t const v = cfg.vocab, steps = 16;
  ssmlen::rng g(seed + 1);
  std::vector<std::vector<std::int32_t>> seqs(static_cast<std::size_t>(batch));  // every row's tokens
  for (auto& s : seqs) {
    for (std::int64_t t = 0; t < steps; ++t) {
      s.push_back(static_cast<std::int32_t>(g.uniform_int(0, v - 1)));
    }
  }

  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  auto st = dev.make_state(batch);
  st.conv.fill_bytes(0xFF);  // poisoned: the first token of every row is fresh and must reset it
  st.ssm.fill_bytes(0xFF);
  mc::mamba_lm<>::step_workspace w;
  device_buffer<std::int32_t> tokens(static_cast<std::size_t>(batch)), next(static_cast<std::size_t>(batch));
  auto host_state = ref.make_state(batch);
  host_model::step_workspace hw;
  std::vector<float> logits_ref(static_cast<std::size_t>(batch * v));
  std::vector<std::int32_t> feed(static_cast<std::size_t>(batch)), coded(feed.size());
  double worst = 0;

  // Phase 1: every row from a fresh start, 16 tokens; the last logits also against the host forward.
  for (std::int64_t t = 0; t < steps; ++t) {
    for (std::int64_t r = 0; r < batch; ++r) {
      feed[static_cast<std::size_t>(r)] = seqs[static_cast<std::size_t>(r)][static_cast<std::size_t>(t)];
      coded[static_cast<std::size_t>(r)] =
          t == 0 ? mc::fresh_token(feed[static_cast<std::size_t>(r)]) : feed[static_cast<std::size_t>(r)];
    }
    ref.step(be, feed, logits_ref.data(), host_state, hw);
    upload(stream, tokens, coded);
    if (t > 0) {  // sized by the first step: poisoned before every later one
      w.poison(stream.get());
    }
    float const* logits = dev.step(h, tokens.data(), batch, st, w);
    stream.synchronize();
    auto const got = to_host(logits, logits_ref.size());
    double const e = rel_error(got, logits_ref);
    CAPTURE(t);
    CHECK(e < tol);
    worst = std::max(worst, e);
  }
  {
    std::vector<std::int32_t> packed;
    for (auto const& s : seqs) {
      packed.insert(packed.end(), s.begin(), s.end());
    }
    auto const packed_seqs = ssmlen::sequences::from_lengths(std::vector<std::int64_t>(seqs.size(), steps));
    std::vector<float> all(packed.size() * static_cast<std::size_t>(v));
    host_model::cache k;
    ref.forward(be, packed, packed_seqs, all.data(), k);
    std::vector<float> last(logits_ref.size());
    for (std::int64_t r = 0; r < batch; ++r) {
      std::copy_n(all.data() + ((r + 1) * steps - 1) * v, v, last.data() + r * v);
    }
    double const e = rel_error(to_host(w.logits.data(), last.size()), last);
    CHECK(e < tol);
    worst = std::max(worst, e);
  }
  double const es1 = state_error(host_state, st);
  CHECK(es1 < tol);

  // Phase 2: random states on both sides, every third row restarted mid-way, greedy ids against the host argmax.
  for (std::size_t i = 0; i < host_state.layers.size(); ++i) {
    for (auto* t : {&host_state.layers[i].conv, &host_state.layers[i].ssm}) {
      auto const vals = normal(static_cast<std::size_t>(t->size()), 0.5, seed + 50 + i);
      std::copy(vals.begin(), vals.end(), t->data());
    }
  }
  upload_state(host_state, st);
  int agree = 0, total = 0;
  for (std::int64_t t = 0; t < 10; ++t) {
    for (std::int64_t r = 0; r < batch; ++r) {
      auto const tok = static_cast<std::int32_t>(g.uniform_int(0, v - 1));
      bool const restart = t == 4 && r % 3 == 0;
      feed[static_cast<std::size_t>(r)] = tok;
      coded[static_cast<std::size_t>(r)] = restart ? mc::fresh_token(tok) : tok;
      if (restart) {
        for (auto& l : host_state.layers) {
          std::fill_n(l.conv.data() + r * (l.conv.size() / batch), l.conv.size() / batch, 0.0f);
          std::fill_n(l.ssm.data() + r * (l.ssm.size() / batch), l.ssm.size() / batch, 0.0f);
        }
      }
    }
    ref.step(be, feed, logits_ref.data(), host_state, hw);
    upload(stream, tokens, coded);
    w.poison(stream.get());
    next.fill_bytes(0xFF, stream.get());
    dev.greedy_step(h, tokens.data(), next.data(), batch, st, w);
    stream.synchronize();
    auto const got = to_host(w.logits.data(), logits_ref.size());
    double const e = rel_error(got, logits_ref);
    CAPTURE(t);
    CHECK(e < tol);
    worst = std::max(worst, e);
    auto const ids = next.to_host();
    for (std::int64_t r = 0; r < batch; ++r) {
      // the device's argmax of its own logits is exact; against the host's logits only near-ties may differ
      CHECK(ids[static_cast<std::size_t>(r)] == ssmlen::agent::detail::argmax(got.data() + r * v, v));
      agree += ids[static_cast<std::size_t>(r)] == ssmlen::agent::detail::argmax(logits_ref.data() + r * v, v);
      ++total;
    }
  }
  double const es2 = state_error(host_state, st);
  CHECK(es2 < tol);
  CHECK(agree >= total - 1);
  std::printf("model step V=%lld D=%lld L=%lld B=%lld tied=%d delta_min=%.2f %s: worst logits error %.2e, state "
              "errors %.2e / %.2e, greedy ids equal to the host's %d of %d\n",
              static_cast<long long>(cfg.vocab), static_cast<long long>(cfg.d_model),
              static_cast<long long>(cfg.n_layers), static_cast<long long>(batch), cfg.tie_embeddings ? 1 : 0,
              cfg.delta_min, fused ? "fused" : "by layers", worst, es1, es2, agree, total);
}

TEST_CASE("cuda mamba_lm step: token by token as the host step and forward, fresh rows reset") {
  if (!gpu_or_skip()) {
    return;
  }
  for (bool fused : {true, false}) {  // the one-kernel step (these shapes fit it) and the step layer by layer
    check_model_step({.vocab = 29, .d_model = 64, .n_layers = 4, .d_state = 16, .expand = 2}, 37, 60, fused);
    check_model_step({.vocab = 23,
                      .d_model = 40,
                      .n_layers = 3,
                      .d_state = 5,
                      .d_conv = 3,
                      .expand = 2,
                      .tie_embeddings = false,
                      .delta_min = 0.02},
                     70, 61, fused);
  }
}

TEST_CASE(
    "cuda mamba_lm step: the one-kernel step at its bounds (d_model 128, ED 256, a head of two passes, rows of 18)") {
  if (!gpu_or_skip()) {
    return;
  }
  mamba_config const widest{.vocab = 300, .d_model = 128, .n_layers = 2, .d_state = 16, .d_conv = 2, .expand = 2};
  mamba_config const long_head{.vocab = 600, .d_model = 16, .n_layers = 1, .d_state = 16, .expand = 2};
  CHECK(mc::fused_step_fits(widest));
  CHECK(mc::fused_step_fits(long_head));
  CHECK_FALSE(mc::fused_step_fits(
      {.vocab = 28, .d_model = 768, .n_layers = 24, .d_state = 16, .expand = 2}));  // the paper's: layer by layer
  check_model_step(widest, 9, 63);
  check_model_step(long_head, 6, 64);
  // in_proj and the head over rows of 18 floats: the products' 4-byte loads (x_proj and out_proj over 36: 16-byte)
  check_model_step({.vocab = 13, .d_model = 18, .n_layers = 2, .d_state = 6, .expand = 2}, 11, 65);
}

TEST_CASE("cuda mamba_lm step: small model (checkers' case)") {
  if (!gpu_or_skip()) {
    return;
  }
  check_model_step({.vocab = 11, .d_model = 16, .n_layers = 2, .d_state = 4, .expand = 2, .delta_min = 0.01}, 5, 62);
}

//! With bf16 GEMMs, training (forward) and rollouts (step) must see the same model: the step's logits token by token,
//! over sequences long enough for the states to carry far, against the bf16 forward's on the same tokens and the
//! host's fp32 step. Both sides round the GEMMs' operands to bf16, but at different places (the forward's dt_proj is
//! a GEMM, the step's an fp32 dot product), so they agree within bf16 rounding, not bit for bit.
void check_bf16_step_against_forward(mamba_config const& cfg, std::int64_t batch, std::int64_t steps,
                                     std::uint64_t seed) {
  ssmlen::backends::host const be;
  host_model ref(cfg, seed);
  mc::mamba_lm<> dev(ref, {.precision = ssmlen::backends::gemm_precision::bf16});
  std::int64_t const v = cfg.vocab;
  ssmlen::rng g(seed + 1);
  std::vector<std::int32_t> packed;  // row r: tokens [r * steps, (r + 1) * steps)
  for (std::int64_t i = 0; i < batch * steps; ++i) {
    packed.push_back(static_cast<std::int32_t>(g.uniform_int(0, v - 1)));
  }
  auto const seqs = ssmlen::sequences::from_lengths(std::vector<std::int64_t>(static_cast<std::size_t>(batch), steps));
  dev.reserve(seqs);
  dev.poison();  // every activation NaN until the forward writes it
  float const* forward_logits = dev.forward(packed, seqs);
  ssmlen::backends::cuda_check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");             // the model's stream
  auto const forward = to_host(forward_logits, packed.size() * static_cast<std::size_t>(v));  // [B * L, V]

  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  auto st = dev.make_state(batch);
  mc::mamba_lm<>::step_workspace w;
  device_buffer<std::int32_t> tokens(static_cast<std::size_t>(batch));
  auto host_state = ref.make_state(batch);
  host_model::step_workspace hw;
  std::vector<float> host_logits(static_cast<std::size_t>(batch * v)), want(host_logits.size());
  std::vector<std::int32_t> feed(static_cast<std::size_t>(batch)), coded(feed.size());
  double worst_forward = 0, worst_host = 0;
  for (std::int64_t t = 0; t < steps; ++t) {
    for (std::int64_t r = 0; r < batch; ++r) {
      auto const tok = packed[static_cast<std::size_t>(r * steps + t)];
      feed[static_cast<std::size_t>(r)] = tok;
      coded[static_cast<std::size_t>(r)] = t == 0 ? mc::fresh_token(tok) : tok;
      std::copy_n(forward.data() + (r * steps + t) * v, v, want.data() + r * v);
    }
    ref.step(be, feed, host_logits.data(), host_state, hw);
    upload(stream, tokens, coded);
    float const* logits = dev.step(h, tokens.data(), batch, st, w);
    stream.synchronize();
    auto const got = to_host(logits, want.size());
    double const ef = rel_error(got, want), eh = rel_error(got, host_logits);
    CAPTURE(t);
    CHECK(ef < bf16_tol);
    CHECK(eh < bf16_tol);
    worst_forward = std::max(worst_forward, ef);
    worst_host = std::max(worst_host, eh);
  }
  std::printf("model step with bf16 GEMMs, D=%lld L=%lld, %lld tokens per row: worst logits error %.2e against the "
              "bf16 forward, %.2e against the host's fp32 step\n",
              static_cast<long long>(cfg.d_model), static_cast<long long>(cfg.n_layers), static_cast<long long>(steps),
              worst_forward, worst_host);
}

TEST_CASE("cuda mamba_lm step with bf16 GEMMs: token by token as the bf16 forward, over 300 tokens") {
  if (!gpu_or_skip()) {
    return;
  }
  check_bf16_step_against_forward({.vocab = 29, .d_model = 64, .n_layers = 4, .d_state = 16, .expand = 2}, 9, 300, 80);
  check_bf16_step_against_forward(
      {.vocab = 23, .d_model = 40, .n_layers = 3, .d_state = 5, .d_conv = 3, .expand = 2, .delta_min = 0.02}, 5, 300,
      81);
}

//! A step graph of `dev` against its eager greedy steps and its logits: the same ids (and, for the argmax, the host's
//! rule: the largest logit, ties to the lowest index), the same state bits.
void check_step_graph(mc::mamba_lm<>& dev, mamba_config const& cfg) {
  std::int64_t const batch = 41;
  ssmlen::agent::cuda::step_graph<mc::mamba_lm<>> graph(dev, batch);
  ssmlen::backends::cuda_stream stream;
  ssmlen::backends::blas_handle h(stream.backend());
  auto st = dev.make_state(batch), st_logits = dev.make_state(batch);
  mc::mamba_lm<>::step_workspace w, w_logits;
  device_buffer<std::int32_t> tokens(static_cast<std::size_t>(batch)), next(static_cast<std::size_t>(batch));
  std::vector<std::int32_t> feed(static_cast<std::size_t>(batch));
  ssmlen::rng g(71);
  for (int t = 0; t < 20; ++t) {
    for (std::int64_t r = 0; r < batch; ++r) {
      auto const tok = static_cast<std::int32_t>(g.uniform_int(0, cfg.vocab - 1));
      feed[static_cast<std::size_t>(r)] = (t == 0 || (t == 9 && r % 4 == 1)) ? mc::fresh_token(tok) : tok;
    }
    std::copy(feed.begin(), feed.end(), graph.tokens().begin());
    auto const got = graph.run();
    upload(stream, tokens, feed);
    dev.greedy_step(h, tokens.data(), next.data(), batch, st, w);
    float const* logits_dev = dev.step(h, tokens.data(), batch, st_logits, w_logits);
    stream.synchronize();
    auto const want = next.to_host();
    auto const logits = to_host(logits_dev, static_cast<std::size_t>(batch * cfg.vocab));
    CAPTURE(t);
    CHECK(std::equal(got.begin(), got.end(), want.begin()));
    for (std::int64_t r = 0; r < batch; ++r) {
      auto const row = std::span<float const>(logits).subspan(static_cast<std::size_t>(r * cfg.vocab),
                                                              static_cast<std::size_t>(cfg.vocab));
      auto const best = std::max_element(row.begin(), row.end());  // the first largest
      CHECK(want[static_cast<std::size_t>(r)] == static_cast<std::int32_t>(best - row.begin()));
    }
  }
  CHECK(graph.state().ssm.to_host() == st.ssm.to_host());  // the same kernels in the same order: the same bits
  CHECK(graph.state().conv.to_host() == st.conv.to_host());
  std::fill(graph.tokens().begin(), graph.tokens().end(),
            static_cast<std::int32_t>(cfg.vocab));  // out of range: checked on the host
  CHECK_THROWS_AS(graph.run(), ssmlen::error);
}

TEST_CASE("cuda step graph: replays give the eager greedy steps' ids and states") {
  if (!gpu_or_skip()) {
    return;
  }
  // The second model's head takes the one-kernel step two passes of 512 logits: its argmax spans both.
  for (mamba_config const& cfg :
       {mamba_config{.vocab = 19, .d_model = 32, .n_layers = 2, .d_state = 8, .expand = 2, .delta_min = 0.01},
        mamba_config{.vocab = 600, .d_model = 16, .n_layers = 1, .d_state = 16, .expand = 2}}) {
    CAPTURE(cfg.vocab);
    host_model ref(cfg, 70);
    for (auto& p : ref.named_params()) {  // sharper logits: greedy ids that vary from step to step
      for (auto& x : p.p->value) {
        x *= 3.0f;
      }
    }
    for (bool const fused : {true, false}) {  // the one-kernel step (ids read from host memory) and layer by layer
      CAPTURE(fused);
      mc::mamba_lm<> dev(ref, mc::mamba_lm_options{.fused_step = fused});
      CHECK(dev.step_reads_ids_once() == fused);
      check_step_graph(dev, cfg);
    }
  }
}

}  // namespace
