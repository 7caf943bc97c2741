// SPDX-License-Identifier: Apache-2.0
//! @file selective_ssm.hpp
//! Mamba-1's selective state space layer: input-dependent Δ, B and C from
//! x_proj, Δ = softplus(dt_proj(Δ_low) + bias), A = -exp(A_log), a D skip, and
//! the scan chosen by the policy. Input and output are [T, ED].
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/math.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/linear.hpp>
#include <ssmlen/scan/selective_scan.hpp>

#include <cmath>
#include <cstdint>

namespace ssmlen::layers {

template <class T, scan::policy Scan>
struct selective_ssm {
  std::int64_t channels = 0, states = 0, dt_rank = 0;  // ED, N, R
  linear<T> x_proj;                                    // ED -> R + 2N, no bias
  linear<T> dt_proj;                                   // R -> ED, with bias
  param<T> a_log;                                      // [ED, N]
  param<T> d;                                          // [ED]
  T delta_min = 0;                                     // Δ = delta_min + softplus(·) (mamba_config::delta_min)

  //! What forward keeps for backward.
  struct cache {
    tensor<T> dbc;             // [T, R + 2N]: Δ_low, B, C
    tensor<T> dt_slope;        // [T, ED]: dΔ/dΔ_pre = sigmoid(Δ_pre), what backward needs of Δ before softplus
    tensor<T> dt;              // [T, ED]
    tensor<T> a;               // [N, ED]: -exp(A_log), transposed
    tensor<T> checkpoints;     // [Σ ceil(len / interval), N, ED]
    tensor<T> d_dbc, ddt, da;  // backward's buffers, kept to avoid reallocating every step
  };

  selective_ssm() = default;
  selective_ssm(std::int64_t ed, std::int64_t n, std::int64_t r)
      : channels(ed), states(n), dt_rank(r), x_proj(ed, r + 2 * n, false), dt_proj(r, ed, true), a_log({ed, n}, false),
        d({ed}, false) {
    check_arg(n > 0, "d_state", n, "must be positive");
    check_arg(r > 0, "dt_rank", r, "must be positive");
  }

  //! Mamba's initialization: Δ bias so that Δ starts log-uniform in [dt_min, dt_max] (at least delta_min + dt_floor),
  //! A_log = log(1..N), D = 1.
  void init_mamba(rng& g, double dt_min = 1e-3, double dt_max = 1e-1, double dt_floor = 1e-4) {
    x_proj.init_default(g);
    double const std_dt = 1.0 / std::sqrt(static_cast<double>(dt_rank));
    for (auto& w : dt_proj.weight.value) {
      w = static_cast<T>(g.uniform(-std_dt, std_dt));
    }
    for (auto& b : dt_proj.bias.value) {
      double dt = std::exp(g.uniform_double() * (std::log(dt_max) - std::log(dt_min)) + std::log(dt_min));
      dt = std::max(dt - static_cast<double>(delta_min), dt_floor);  // what softplus must give
      b = static_cast<T>(dt + std::log(-std::expm1(-dt)));           // inverse of softplus
    }
    for (std::int64_t c = 0; c < channels; ++c) {
      for (std::int64_t n = 0; n < states; ++n) {
        a_log.value[c * states + n] = static_cast<T>(std::log(static_cast<double>(n + 1)));
      }
      d.value[c] = T(1);
    }
  }

  [[nodiscard]] std::int64_t state_size() const { return channels * states; }  // per sequence: [N, ED]

  //! A = -exp(A_log), transposed to [N, ED] for the scan.
  void make_a(T* a) const {
    for (std::int64_t c = 0; c < channels; ++c) {
      for (std::int64_t n = 0; n < states; ++n) {
        a[n * channels + c] = -std::exp(a_log.value[c * states + n]);
      }
    }
  }

  //! Δ, B, C for `rows` rows of xs: fills dbc [rows, R+2N], dt and dt_slope [rows, ED].
  void project(backends::host const& be, T const* xs, std::int64_t rows, T* dbc, T* dt, T* dt_slope) const {
    std::int64_t const w = dt_rank + 2 * states;
    x_proj.forward(be, xs, channels, dbc, w, rows);
    dt_proj.forward_no_bias(be, dbc, w, dt, channels, rows);  // Δ_pre without the bias, overwritten below
    T const* bias = dt_proj.bias.value.data();
    be.parallel_for(rows, [&](std::int64_t r) {  // bias, softplus and its slope in one sweep
      for (std::int64_t c = 0; c < channels; ++c) {
        T const pre = dt[r * channels + c] + bias[c];
        dt[r * channels + c] = delta_min + softplus(pre);
        dt_slope[r * channels + c] = sigmoid(pre);
      }
    });
  }

  scan::selective_scan_args<T> scan_args(sequences const& seqs, T const* xs, cache const& k, T const* init) const {
    std::int64_t const w = dt_rank + 2 * states;
    return {&seqs,
            channels,
            states,
            xs,
            k.dt.data(),
            k.a.data(),
            k.dbc.data() + dt_rank,
            k.dbc.data() + dt_rank + states,
            w,
            d.value.data(),
            init};
  }

  //! xs: [T, ED] -> y: [T, ED]. init_state / final_state: [S, N, ED] or null.
  void forward(backends::host const& be, sequences const& seqs, T const* xs, T* y, cache& k, T const* init_state,
               T* final_state) const {
    std::int64_t const rows = seqs.tokens();
    k.dbc.resize({rows, dt_rank + 2 * states});
    k.dt_slope.resize({rows, channels});
    k.dt.resize({rows, channels});
    k.a.resize({states, channels});
    make_a(k.a.data());
    project(be, xs, rows, k.dbc.data(), k.dt.data(), k.dt_slope.data());
    auto const n_ck = scan::checkpoint_offsets(seqs, Scan::checkpoint_interval).back();
    k.checkpoints.resize({n_ck, states, channels});
    scan::selective_scan_forward(Scan{}, be, scan_args(seqs, xs, k, init_state), y, k.checkpoints.data(), final_state);
  }

  //! Accumulates parameter gradients; writes dxs = ∂L/∂xs and, when non-null, d_init_state.
  void backward(backends::host const& be, sequences const& seqs, T const* xs, T const* dy, T* dxs, cache& k,
                T const* init_state, T const* d_final_state, T* d_init_state) {
    std::int64_t const rows = seqs.tokens(), w = dt_rank + 2 * states;
    auto& d_dbc = k.d_dbc;
    auto& ddt = k.ddt;
    auto& da = k.da;
    d_dbc.resize({rows, w});        // [T, R+2N]: fully written below
    ddt.resize({rows, channels});   // [T, ED]: ∂L/∂Δ_pre, fully written by the scan
    da.resize({states, channels});  // [N, ED]: accumulated
    da.fill(T(0));
    scan::selective_scan_grads<T> g{
        dy, d_final_state, dxs,           ddt.data(),  d_dbc.data() + dt_rank, d_dbc.data() + dt_rank + states,
        w,  da.data(),     d.grad.data(), d_init_state};
    // ddt comes out through softplus already: ∂L/∂Δ_pre = ∂L/∂Δ · sigmoid(Δ_pre)
    scan::selective_scan_backward(Scan::checkpoint_interval, be, scan_args(seqs, xs, k, init_state),
                                  k.checkpoints.data(), g, k.dt_slope.data());
    for (std::int64_t c = 0; c < channels; ++c) {  // A = -exp(A_log): ∂A/∂A_log = A
      for (std::int64_t n = 0; n < states; ++n) {
        a_log.grad[c * states + n] += da[n * channels + c] * k.a[n * channels + c];
      }
    }
    dt_proj.backward(be, k.dbc.data(), w, ddt.data(), channels, d_dbc.data(), w, rows);
    x_proj.backward(be, xs, channels, d_dbc.data(), w, dxs, channels, rows, /*accumulate=*/true);
  }
};

}  // namespace ssmlen::layers
