// SPDX-License-Identifier: Apache-2.0
//! @file test_selective_scan.cu
//! Parity of the CUDA selective scan (recurrent, block_parallel, state_split) with the host oracle run in double
//! precision: forward (y, checkpoints, final states) and backward (dx, ddt, dB, dC, dA, dD, d_init_state, dt's bias
//! gradient) on random inputs, odd shapes, ragged packed sequences, with and without initial states, with Δ given or
//! made by the fused softplus (then ddt is ∂L/∂dt through it), the gated output y · silu(z) and its backward (dy
//! taken back through the gate, dz written), and the bf16 copies of the gated output, ddt and dz; every output is
//! poisoned with NaN first.
//! Also: bit-identical gradients across runs, channel counts past 65,535, and argument checks.
//! Built alone (nvcc this file) it is its own doctest program; in the CMake build the shared test main links in.
//! Without a GPU every case prints a skip message and passes.
#ifndef SSMLEN_TEST_DATA_DIR
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#endif
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/scan/cuda/chunked.cuh>
#include <ssmlen/scan/cuda/selective_scan.cuh>
#include <ssmlen/scan/cuda/state_split.cuh>
#include <ssmlen/scan/selective_scan.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../support/cuda_testing.hpp"

namespace {

using ssmlen::testing::gpu_or_skip;
using ssmlen::testing::mismatched_roundings;
using ssmlen::testing::rel_error;

namespace sc = ssmlen::scan::cuda;
using ssmlen::backends::device_buffer;

struct shape {
  std::vector<std::int64_t> lengths;
  std::int64_t ed = 0, ns = 0;
  bool init = false, d_final = false;
  bool softplus = false;   // dt holds pre-activations: Δ = delta_min + softplus(dt + bias)
  bool gate_back = false;  // dy is the gated output's gradient: the backward takes it back through the gate
  bool aligned = false;    // B/C rows of N + 4 floats: with N and ED multiples of 4, state_split's 16-byte path
};

constexpr float test_delta_min = 0.01f;

//! Inputs and gradient seeds in float (what the device sees); B/C rows carry padding (ld = N + 3, or N + 4 for an
//! aligned shape) filled with NaN, so a read past N shows up in the outputs.
struct inputs {
  ssmlen::sequences seqs;
  std::int64_t ed = 0, ns = 0, ld = 0, tokens = 0;
  std::vector<float> x, dt, dt_bias, a, b, c, d, init, dy, d_final, da0, dd0, dbias0;
  std::vector<float> z;  // [T, ld_z]: the gate's input
  std::int64_t ld_z = 0;
  bool softplus = false, gate_back = false;

  inputs(shape const& sh, std::uint64_t seed)
      : seqs(ssmlen::sequences::from_lengths(sh.lengths)), ed(sh.ed), ns(sh.ns), ld(sh.ns + (sh.aligned ? 4 : 3)),
        tokens(seqs.tokens()), ld_z(sh.ed + 3), softplus(sh.softplus), gate_back(sh.gate_back) {
    ssmlen::rng g(seed);
    auto normal = [&](std::size_t n, double scale) {
      std::vector<float> v(n);
      for (auto& e : v) {
        e = static_cast<float>(scale * g.normal());
      }
      return v;
    };
    auto uniform = [&](std::size_t n, double lo, double hi) {
      std::vector<float> v(n);
      for (auto& e : v) {
        e = static_cast<float>(g.uniform(lo, hi));
      }
      return v;
    };
    auto const te = static_cast<std::size_t>(tokens * ed), state = static_cast<std::size_t>(seqs.count() * ns * ed);
    x = normal(te, 1.0);
    if (softplus) {
      dt = uniform(te, -5.5, 1.0);  // with the biases below: Δ from about 0.01 to 3
      dt_bias = normal(static_cast<std::size_t>(ed), 0.5);
    } else {
      dt = uniform(te, 0.005, 0.2);  // softplus outputs
    }
    a = uniform(static_cast<std::size_t>(ns * ed), -8.0, -0.5);
    b = normal(static_cast<std::size_t>(tokens * ld), 1.0);
    c = normal(static_cast<std::size_t>(tokens * ld), 1.0);
    for (std::int64_t t = 0; t < tokens; ++t) {
      for (std::int64_t n = ns; n < ld; ++n) {
        b[static_cast<std::size_t>(t * ld + n)] = std::numeric_limits<float>::quiet_NaN();
        c[static_cast<std::size_t>(t * ld + n)] = std::numeric_limits<float>::quiet_NaN();
      }
    }
    d = normal(static_cast<std::size_t>(ed), 1.0);
    if (sh.init) {
      init = normal(state, 0.5);
    }
    dy = normal(te, 1.0);
    z = normal(static_cast<std::size_t>(tokens * ld_z), 2.0);
    if (sh.d_final) {
      d_final = normal(state, 1.0);
    }
    da0 = normal(static_cast<std::size_t>(ns * ed), 1.0);  // dA, dD accumulate: start from non-zero values
    dd0 = normal(static_cast<std::size_t>(ed), 1.0);
    dbias0 = normal(static_cast<std::size_t>(ed), 1.0);  // dt's bias gradient accumulates too
  }
};

std::vector<double> widen(std::vector<float> const& v) { return {v.begin(), v.end()}; }

//! The host oracle in double: outputs of forward (interval-64 checkpoints) and backward.
struct oracle {
  std::vector<double> y, ck, final_state, dx, ddt, db, dc, da, dd, d_init, dbias;
  std::vector<double> gated;  // y · silu(z)
  std::vector<double> dz;     // with gate_back: ∂L/∂z = dy · y · silu'(z), [T, ED]

  explicit oracle(inputs const& in) {
    auto const te = static_cast<std::size_t>(in.tokens * in.ed);
    auto const state = static_cast<std::size_t>(in.seqs.count() * in.ns * in.ed);
    auto x = widen(in.x), dt = widen(in.dt), a = widen(in.a), b = widen(in.b), c = widen(in.c), d = widen(in.d);
    auto dt_bias = widen(in.dt_bias);
    auto init = widen(in.init), dy = widen(in.dy), d_final = widen(in.d_final);
    ssmlen::scan::selective_scan_args<double> args{&in.seqs,
                                                   in.ed,
                                                   in.ns,
                                                   x.data(),
                                                   dt.data(),
                                                   a.data(),
                                                   b.data(),
                                                   c.data(),
                                                   in.ld,
                                                   d.data(),
                                                   in.init.empty() ? nullptr : init.data()};
    if (in.softplus) {
      args.dt_softplus = true;
      args.dt_bias = dt_bias.data();
      args.delta_min = test_delta_min;
    }
    constexpr std::int64_t interval = ssmlen::scan::recurrent::checkpoint_interval;
    auto const ck_rows = ssmlen::scan::checkpoint_offsets(in.seqs, interval).back();
    y.resize(te);
    ck.resize(static_cast<std::size_t>(ck_rows * in.ns * in.ed));
    final_state.resize(state);
    ssmlen::backends::host const be;
    ssmlen::scan::selective_scan_forward(ssmlen::scan::recurrent{}, be, args, y.data(), ck.data(), final_state.data());
    gated.resize(te);
    for (std::int64_t t = 0; t < in.tokens; ++t) {
      for (std::int64_t e = 0; e < in.ed; ++e) {
        double const zv = in.z[static_cast<std::size_t>(t * in.ld_z + e)];
        gated[static_cast<std::size_t>(t * in.ed + e)] = y[static_cast<std::size_t>(t * in.ed + e)] * ssmlen::silu(zv);
      }
    }
    if (in.gate_back) {  // dy is ∂L/∂gated: the scan's own output gets dy · silu(z)
      dz.resize(te);
      for (std::int64_t t = 0; t < in.tokens; ++t) {
        for (std::int64_t e = 0; e < in.ed; ++e) {
          auto const i = static_cast<std::size_t>(t * in.ed + e);
          double const zv = in.z[static_cast<std::size_t>(t * in.ld_z + e)];
          dz[i] = dy[i] * y[i] * ssmlen::silu_grad(zv);
          dy[i] *= ssmlen::silu(zv);
        }
      }
    }
    dx.resize(te);
    ddt.resize(te);
    db.resize(static_cast<std::size_t>(in.tokens * in.ns));
    dc.resize(db.size());
    da = widen(in.da0);
    dd = widen(in.dd0);
    d_init.resize(state);
    dbias = widen(in.dbias0);
    ssmlen::scan::selective_scan_grads<double> grads{dy.data(),   in.d_final.empty() ? nullptr : d_final.data(),
                                                     dx.data(),   ddt.data(),
                                                     db.data(),   dc.data(),
                                                     in.ns,       da.data(),
                                                     dd.data(),   d_init.data(),
                                                     dbias.data()};
    ssmlen::scan::selective_scan_backward(interval, be, args, ck.data(), grads);
  }
};

//! Device copies of the inputs plus poisoned outputs.
struct device_run {
  device_buffer<std::int64_t> offsets;
  device_buffer<float> x, dt, dt_bias, a, b, c, d, init, dy, d_final;
  device_buffer<float> y, ck, final_state, dx, ddt, db, dc, da, dd, d_init, dbias;
  device_buffer<ssmlen::bfloat16> ddt_rounded;
  device_buffer<float> z, gated, dz;  // dz: [T, ld_z], the padding columns left poisoned
  device_buffer<ssmlen::bfloat16> dz_rounded;
  sc::gate_gradient gate_back;
  device_buffer<ssmlen::bfloat16> gated_rounded;
  sc::gate_output gate;
  sc::device_sequences seqs;
  ssmlen::scan::selective_scan_args<float> args;
  ssmlen::scan::selective_scan_grads<float> grads;
  std::int64_t ld_dbc = 0;

  template <class Policy>
  device_run(Policy, inputs const& in)
      : offsets(static_cast<std::size_t>(in.seqs.count()) + 1), x(std::span(in.x)), dt(std::span(in.dt)),
        dt_bias(std::span(in.dt_bias)), a(std::span(in.a)), b(std::span(in.b)), c(std::span(in.c)), d(std::span(in.d)),
        init(std::span(in.init)), dy(std::span(in.dy)), d_final(std::span(in.d_final)), y(in.x.size()),
        ck(static_cast<std::size_t>(ssmlen::scan::checkpoint_offsets(in.seqs, Policy::checkpoint_interval).back() *
                                    in.ns * in.ed)),
        final_state(static_cast<std::size_t>(in.seqs.count() * in.ns * in.ed)), dx(in.x.size()), ddt(in.x.size()),
        db(static_cast<std::size_t>(in.tokens * (in.ns + 2))), dc(db.size()), da(std::span(in.da0)),
        dd(std::span(in.dd0)), d_init(final_state.size()), dbias(std::span(in.dbias0)), ddt_rounded(in.x.size()),
        z(std::span(in.z)), gated(in.x.size()), dz(in.z.size()), dz_rounded(in.z.size()), gated_rounded(in.x.size()),
        ld_dbc(in.ns + 2) {
    std::vector<std::int64_t> off(static_cast<std::size_t>(in.seqs.count()) + 1);
    for (std::int64_t s = 0; s <= in.seqs.count(); ++s) {
      off[static_cast<std::size_t>(s)] = s < in.seqs.count() ? in.seqs.begin(s) : in.seqs.tokens();
    }
    offsets.upload(off);
    for (auto* out : {&y, &ck, &final_state, &dx, &ddt, &db, &dc, &d_init}) {
      out->fill_bytes(0xFF);  // NaN
    }
    ddt_rounded.fill_bytes(0xFF);
    gated.fill_bytes(0xFF);
    gated_rounded.fill_bytes(0xFF);
    dz.fill_bytes(0xFF);
    dz_rounded.fill_bytes(0xFF);
    gate = {z.data(), in.ld_z, gated.data(), gated_rounded.data()};
    if (in.gate_back) {
      gate_back = {z.data(), in.ld_z, y.data(), dz.data(), dz_rounded.data(), in.ld_z};
    }
    seqs = {offsets.data(), in.seqs.count(), in.tokens};
    args = {nullptr,
            in.ed,
            in.ns,
            x.data(),
            dt.data(),
            a.data(),
            b.data(),
            c.data(),
            in.ld,
            d.data(),
            in.init.empty() ? nullptr : init.data()};
    if (in.softplus) {
      args.dt_softplus = true;
      args.dt_bias = dt_bias.data();
      args.delta_min = test_delta_min;
    }
    grads = {dy.data(),   in.d_final.empty() ? nullptr : d_final.data(),
             dx.data(),   ddt.data(),
             db.data(),   dc.data(),
             ld_dbc,      da.data(),
             dd.data(),   d_init.data(),
             dbias.data()};
  }
};

//! The N valid columns of a [T, ld] matrix; the padding columns must still hold the NaN poison.
std::vector<float> valid_columns(std::vector<float> const& m, std::int64_t tokens, std::int64_t ns, std::int64_t ld) {
  std::vector<float> out;
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (std::int64_t n = 0; n < ld; ++n) {
      float const v = m[static_cast<std::size_t>(t * ld + n)];
      if (n < ns) {
        out.push_back(v);
      } else {
        CHECK_MESSAGE(std::isnan(v), "padding column written at token ", t);
      }
    }
  }
  return out;
}

template <class Policy>
void check_parity(Policy policy, shape const& sh, std::uint64_t seed, double tol) {
  inputs const in(sh, seed);
  oracle const ref(in);
  device_run run(policy, in);
  ssmlen::backends::cuda_stream stream;
  sc::selective_scan_forward(policy, stream.backend(), run.seqs, run.args, run.y.data(), run.ck.data(),
                             run.final_state.data(), nullptr, run.gate);
  sc::selective_scan_backward(policy, stream.backend(), run.seqs, run.args, run.ck.data(), run.grads, nullptr,
                              run.ddt_rounded.data(), run.gate_back);
  stream.synchronize();
  std::string const policy_name = Policy::name();
  CAPTURE(policy_name);
  CAPTURE(sh.ed);
  CAPTURE(sh.ns);
  CAPTURE(sh.init);
  CAPTURE(sh.d_final);
  CAPTURE(sh.softplus);
  CAPTURE(sh.gate_back);
  CHECK(rel_error(run.y.to_host(), ref.y) < tol);
  CHECK(rel_error(run.final_state.to_host(), ref.final_state) < tol);
  auto const gated = run.gated.to_host();
  CHECK(rel_error(gated, ref.gated) < tol);
  CHECK(mismatched_roundings(run.gated_rounded.to_host(), gated) == 0);  // the bf16 copy: the fp32 output's rounding
  if (Policy::checkpoint_interval == ssmlen::scan::recurrent::checkpoint_interval) {
    CHECK(rel_error(run.ck.to_host(), ref.ck) < tol);
  }
  CHECK(rel_error(run.dx.to_host(), ref.dx) < tol);
  auto const ddt = run.ddt.to_host();
  CHECK(rel_error(ddt, ref.ddt) < tol);
  CHECK(mismatched_roundings(run.ddt_rounded.to_host(), ddt) == 0);  // ddt's bf16 copy: its rounding
  CHECK(rel_error(valid_columns(run.db.to_host(), in.tokens, in.ns, run.ld_dbc), ref.db) < tol);
  CHECK(rel_error(valid_columns(run.dc.to_host(), in.tokens, in.ns, run.ld_dbc), ref.dc) < tol);
  CHECK(rel_error(run.da.to_host(), ref.da) < tol);
  CHECK(rel_error(run.dd.to_host(), ref.dd) < tol);
  CHECK(rel_error(run.d_init.to_host(), ref.d_init) < tol);
  CHECK(rel_error(run.dbias.to_host(), ref.dbias) < tol);
  if (sh.gate_back) {
    auto const dz = valid_columns(run.dz.to_host(), in.tokens, in.ed, in.ld_z);
    CHECK(rel_error(dz, ref.dz) < tol);
    auto const dz16 = run.dz_rounded.to_host();
    std::vector<ssmlen::bfloat16> dz16_valid;
    for (std::int64_t t = 0; t < in.tokens; ++t) {
      for (std::int64_t e = 0; e < in.ed; ++e) {
        dz16_valid.push_back(dz16[static_cast<std::size_t>(t * in.ld_z + e)]);
      }
    }
    CHECK(mismatched_roundings(dz16_valid, dz) == 0);  // dz's bf16 copy: its rounding
  }
}

template <class Policy>
void check_shapes(Policy policy) {
  // Lengths straddle the chunk (64) and include an empty sequence; ED = 37 leaves a partial channel group.
  std::vector<std::int64_t> const lengths{65, 1, 0, 200, 64, 130, 63};
  std::uint64_t seed = 1;
  for (std::int64_t ns : {5, 16, 64}) {
    for (bool init : {false, true}) {
      check_parity(policy, {lengths, 37, ns, init, init}, seed++, 1e-5);
    }
  }
  check_parity(policy, {{70, 3, 129}, 37, 100, true, true}, seed++, 1e-5);             // N past one register tile
  check_parity(policy, {{70, 3}, 37, 256, true, true}, seed++, 1e-5);                  // the largest N
  check_parity(policy, {lengths, 37, 16, true, true, true}, seed++, 1e-5);             // Δ by the fused softplus
  check_parity(policy, {{70, 3, 129}, 37, 40, true, true, true}, seed++, 1e-5);        // ... over several launches
  check_parity(policy, {lengths, 37, 16, true, true, true, true}, seed++, 1e-5);       // dy back through the gate
  check_parity(policy, {{70, 3, 129}, 37, 40, true, true, true, true}, seed++, 1e-5);  // ... over several launches
  // N, ED and ld_bc multiples of 4 (state_split's 16-byte copies and checkpoint stores); ED = 40 leaves 8 channels
  // of a second group, N = 40 a launch whose last 8 states are past N.
  check_parity(policy, {lengths, 40, 16, true, true, false, false, true}, seed++, 1e-5);
  check_parity(policy, {lengths, 40, 40, true, true, true, true, true}, seed++, 1e-5);
  check_parity(policy, {{70, 3, 129}, 36, 64, false, false, true, false, true}, seed++, 1e-5);
}

}  // namespace

TEST_CASE("cuda selective scan: small ragged batch, every policy") {  // quick; the sanitizer runs use it
  if (gpu_or_skip()) {
    for (bool softplus : {false, true}) {
      shape const sh{{65, 1, 0, 20, 0}, 37, 5, true, true, softplus, softplus};  // with the gate's backward too
      check_parity(ssmlen::scan::recurrent{}, sh, 3, 1e-5);
      check_parity(sc::block_parallel<8, 8>{}, sh, 3, 1e-5);
      check_parity(sc::state_split<4>{}, sh, 3, 1e-5);
      check_parity(ssmlen::scan::chunked<64>{}, sh, 3, 1e-5);
      shape const aligned{{65, 1, 0, 20, 0}, 36, 8, true, true, softplus, softplus, true};  // 16-byte staging
      check_parity(sc::state_split<4>{}, aligned, 4, 1e-5);
      check_parity(ssmlen::scan::chunked<64>{}, aligned, 4, 1e-5);
    }
  }
}

TEST_CASE("cuda selective scan: recurrent matches the host oracle") {
  if (gpu_or_skip()) {
    check_shapes(ssmlen::scan::recurrent{});
  }
}

TEST_CASE("cuda selective scan: block_parallel matches the host oracle") {
  if (gpu_or_skip()) {
    check_shapes(sc::block_parallel<8, 8>{});
    check_parity(sc::block_parallel<4, 16>{}, {{65, 1, 0, 200, 64, 130, 63}, 37, 16, true, true}, 98, 1e-5);
    check_parity(sc::block_parallel<3, 2>{}, {{65, 1, 0, 200, 13}, 37, 16, true, true}, 99, 1e-5);  // chunk of 6
  }
}

TEST_CASE("cuda selective scan: state_split matches the host oracle") {
  if (gpu_or_skip()) {
    check_shapes(sc::state_split<4>{});  // N = 5: two warps; 64, 100, 256: several launches adding to y
    check_parity(sc::state_split<1>{}, {{65, 1, 0, 200, 64, 130, 63}, 37, 3, true, true}, 97, 1e-5);
    check_parity(sc::state_split<2>{}, {{65, 1, 0, 200, 64, 130, 63}, 37, 16, true, true}, 96, 1e-5);
    check_parity(sc::state_split<8>{}, {{65, 1, 0, 200, 64, 130, 63}, 37, 16, false, true}, 95, 1e-5);
  }
}

TEST_CASE("cuda selective scan: chunked matches the host oracle") {
  if (gpu_or_skip()) {
    check_shapes(ssmlen::scan::chunked<64>{});  // its checkpoints every 64 tokens: compared with the oracle's too
    check_parity(ssmlen::scan::chunked<8>{}, {{65, 1, 0, 200, 64, 130, 63}, 37, 16, true, true}, 94, 1e-5);
    check_parity(ssmlen::scan::chunked<128>{}, {{65, 1, 0, 200, 64, 130, 63}, 37, 16, true, true, true}, 93, 1e-5);
    check_parity(ssmlen::scan::chunked<64>{}, {{4096}, 37, 16, true, true}, 92, 1e-4);  // 64 chunks in a row
    // Chunks of any length: 100 (not a multiple of the view's 8-token batches) and 1 (the carry does all the work).
    check_parity(ssmlen::scan::chunked<100>{}, {{65, 1, 0, 200, 64, 130, 63}, 37, 16, true, true, true, true}, 95,
                 1e-5);
    check_parity(ssmlen::scan::chunked<1>{}, {{65, 1, 0, 20, 3}, 37, 5, true, true, true, true}, 96, 1e-5);
  }
}

TEST_CASE("cuda selective scan: long sequences (L = 4096)") {
  if (gpu_or_skip()) {
    shape const sh{{4096, 1000}, 37, 16, true, true};
    check_parity(ssmlen::scan::recurrent{}, sh, 7, 1e-4);
    check_parity(sc::block_parallel<8, 8>{}, sh, 7, 1e-4);
    check_parity(sc::state_split<4>{}, sh, 7, 1e-4);
  }
}

TEST_CASE("cuda selective scan: channels beyond 65,535") {
  if (gpu_or_skip()) {
    shape const sh{{3, 2, 0}, 70001, 4, true, true};  // the empty last sequence: nothing read around it
    check_parity(ssmlen::scan::recurrent{}, sh, 11, 1e-5);
    check_parity(sc::block_parallel<8, 8>{}, sh, 11, 1e-5);
    check_parity(sc::state_split<4>{}, sh, 11, 1e-5);
    check_parity(ssmlen::scan::chunked<64>{}, sh, 11, 1e-5);
  }
}

template <class Policy>
void check_deterministic(Policy policy) {
  inputs const in({{700, 513, 64, 9}, 300, 16, true, true, true, true}, 5);  // as the model runs it: Δ by the
                                                                             // softplus, dy through the gate
  device_run r1(policy, in), r2(policy, in);
  ssmlen::backends::cuda_stream stream;
  sc::selective_scan_forward(policy, stream.backend(), r1.seqs, r1.args, r1.y.data(), r1.ck.data(),
                             r1.final_state.data());
  for (auto* r : {&r1, &r2}) {
    auto gate = r1.gate_back;  // the forward's y is r1's
    gate.dz = r->dz.data();
    gate.dz_rounded = r->dz_rounded.data();
    sc::selective_scan_backward(policy, stream.backend(), r->seqs, r->args, r1.ck.data(), r->grads, nullptr, nullptr,
                                gate);
  }
  stream.synchronize();
  auto same_bits = [](device_buffer<float> const& p, device_buffer<float> const& q) {
    auto const hp = p.to_host(), hq = q.to_host();
    return std::memcmp(hp.data(), hq.data(), hp.size() * sizeof(float)) == 0;
  };
  std::string const policy_name = Policy::name();
  CAPTURE(policy_name);
  CHECK(same_bits(r1.dx, r2.dx));
  CHECK(same_bits(r1.ddt, r2.ddt));
  CHECK(same_bits(r1.db, r2.db));
  CHECK(same_bits(r1.dc, r2.dc));
  CHECK(same_bits(r1.da, r2.da));
  CHECK(same_bits(r1.dd, r2.dd));
  CHECK(same_bits(r1.d_init, r2.d_init));
  CHECK(same_bits(r1.dbias, r2.dbias));
  CHECK(same_bits(r1.dz, r2.dz));
}

//! Sequences that carry their checkpoint offsets (device_sequences::checkpoint_offsets, as a model's batch does) give
//! the same bits as offsets the scan computes itself; offsets carried for another interval are not read.
template <class Policy>
void check_carried_offsets(Policy policy, std::int64_t carried_interval) {
  inputs const in({{700, 513, 0, 64, 9}, 40, 16, true, true, true, true}, 6);
  device_run r1(policy, in), r2(policy, in);
  auto const host = ssmlen::scan::checkpoint_offsets(in.seqs, carried_interval);
  device_buffer<std::int64_t> const carried{std::span(host)};
  r2.seqs.checkpoint_offsets = carried.data();
  r2.seqs.checkpoint_interval = carried_interval;
  ssmlen::backends::cuda_stream stream;
  for (auto* r : {&r1, &r2}) {
    sc::selective_scan_forward(policy, stream.backend(), r->seqs, r->args, r->y.data(), r->ck.data(),
                               r->final_state.data(), nullptr, r->gate);
    sc::selective_scan_backward(policy, stream.backend(), r->seqs, r->args, r->ck.data(), r->grads, nullptr,
                                r->ddt_rounded.data(), r->gate_back);
  }
  stream.synchronize();
  std::string const policy_name = Policy::name();
  CAPTURE(policy_name);
  CAPTURE(carried_interval);
  for (auto member :
       {&device_run::y, &device_run::ck, &device_run::final_state, &device_run::dx, &device_run::ddt, &device_run::db,
        &device_run::dc, &device_run::da, &device_run::dd, &device_run::d_init, &device_run::dbias}) {
    auto const a = (r1.*member).to_host(), b = (r2.*member).to_host();
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("cuda selective scan: checkpoint offsets carried by the sequences") {
  if (gpu_or_skip()) {
    check_carried_offsets(sc::state_split<>{}, sc::state_split<>::checkpoint_interval);
    check_carried_offsets(sc::block_parallel<8, 8>{}, sc::block_parallel<8, 8>::checkpoint_interval);
    check_carried_offsets(sc::block_parallel<8, 8>{}, sc::state_split<>::checkpoint_interval);  // not its interval
    check_carried_offsets(ssmlen::scan::chunked<64>{}, 64);
  }
}

TEST_CASE("cuda selective scan: the backward is bit-identical across runs") {
  if (gpu_or_skip()) {
    check_deterministic(ssmlen::scan::recurrent{});
    check_deterministic(sc::block_parallel<8, 8>{});
    check_deterministic(sc::state_split<>{});
    check_deterministic(ssmlen::scan::chunked<64>{});
  }
}

TEST_CASE("cuda selective scan: bad arguments throw before any launch") {
  std::int64_t const offsets_placeholder = 0;
  float const v = 1.0f;
  sc::device_sequences const seqs{&offsets_placeholder, 0, 0};
  ssmlen::scan::selective_scan_args<float> args{nullptr, 4, 16, &v, &v, &v, &v, &v, 16, &v, nullptr};
  float y = 0;
  ssmlen::backends::cuda const be{};
  auto forward = [&](auto const& a) {
    sc::selective_scan_forward(sc::block_parallel<>{}, be, seqs, a, &y, nullptr, nullptr);
  };
  auto with = [&](auto edit) {
    auto a = args;
    edit(a);
    return a;
  };
  CHECK_THROWS_AS(forward(with([](auto& a) { a.states = 0; })), ssmlen::error);
  CHECK_THROWS_AS(forward(with([](auto& a) { a.states = 257; })), ssmlen::error);
  CHECK_THROWS_AS(forward(with([](auto& a) { a.ld_bc = 8; })), ssmlen::error);
  CHECK_THROWS_AS(forward(with([](auto& a) { a.channels = 0; })), ssmlen::error);
  CHECK_THROWS_AS(forward(with([](auto& a) { a.b = nullptr; })), ssmlen::error);
  CHECK_THROWS_AS(forward(with([](auto& a) { a.delta_min = 0.5f; })), ssmlen::error);  // without dt_softplus
  CHECK_THROWS_AS(forward(with([&](auto& a) { a.dt_bias = &v; })), ssmlen::error);
  float gated = 0;
  auto gated_forward = [&](sc::gate_output const& gate) {
    sc::selective_scan_forward(sc::block_parallel<>{}, be, seqs, args, &y, nullptr, nullptr, nullptr, gate);
  };
  CHECK_THROWS_AS(gated_forward({&v, 4, nullptr, nullptr}), ssmlen::error);  // a gate with nothing to write
  CHECK_THROWS_AS(gated_forward({&v, 3, &gated, nullptr}), ssmlen::error);   // z rows shorter than the channels
  CHECK_THROWS_AS(forward(with([](auto& a) {
                    a.dt_softplus = true;
                    a.delta_min = -1.0f;
                  })),
                  ssmlen::error);
  ssmlen::scan::selective_scan_grads<float> g{};
  CHECK_THROWS_AS(sc::selective_scan_backward(ssmlen::scan::recurrent{}, be, seqs, args, nullptr, g), ssmlen::error);
  float ck = 0, out = 0;  // host addresses: the checks come before any launch
  ssmlen::scan::selective_scan_grads<float> const full{&v, nullptr, &out, &out, &out, &out, 16, &out, &out};  // valid
  auto gated_backward = [&](sc::gate_gradient const& gate) {
    sc::selective_scan_backward(sc::state_split<>{}, be, seqs, args, &ck, full, nullptr, nullptr, gate);
  };
  CHECK_THROWS_AS(gated_backward({&v, 4, &y, nullptr, nullptr, 4}), ssmlen::error);    // a gate with nothing to write
  CHECK_THROWS_AS(gated_backward({&v, 4, nullptr, &out, nullptr, 4}), ssmlen::error);  // no y to take back
  CHECK_THROWS_AS(gated_backward({&v, 3, &y, &out, nullptr, 4}), ssmlen::error);       // z rows too short
  CHECK_THROWS_AS(gated_backward({&v, 4, &y, &out, nullptr, 3}), ssmlen::error);       // dz rows too short
  sc::device_sequences const too_long{&offsets_placeholder, 0, (std::int64_t{1} << 30) + 1};  // 32-bit token rows
  CHECK_THROWS_WITH_AS(sc::selective_scan_backward(sc::state_split<>{}, be, too_long, args, &ck, full),
                       doctest::Contains("tokens = 1073741825"), ssmlen::error);
  auto split_gated_forward = [&](sc::gate_output const& gate) {  // state_split's 32-bit steps between z rows
    sc::selective_scan_forward(sc::state_split<>{}, be, seqs, args, &y, nullptr, nullptr, nullptr, gate);
  };
  CHECK_THROWS_WITH_AS(split_gated_forward({&v, (std::int64_t{1} << 26) + 1, &gated, nullptr}),
                       doctest::Contains("gate ld_z = 67108865"), ssmlen::error);
}
