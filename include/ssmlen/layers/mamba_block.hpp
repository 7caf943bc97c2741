// SPDX-License-Identifier: Apache-2.0
//! @file mamba_block.hpp
//! The Mamba-1 mixer (mamba_ssm's `Mamba`): in_proj to (x, z), causal depthwise
//! conv + SiLU on x, the selective SSM, gating by SiLU(z), out_proj.
//!   [T, D] -> in_proj -> [T, 2ED] -> conv1d, silu -> ssm -> · silu(z) -> out_proj -> [T, D]
//! Each sequence may start from a given state (conv window + SSM state) and
//! report its final state; gradients flow through both.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/math.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/conv1d.hpp>
#include <ssmlen/layers/linear.hpp>
#include <ssmlen/layers/selective_ssm.hpp>

#include <cmath>
#include <cstdint>

namespace ssmlen::layers {

//! The recurrent state of one block for S sequences.
template <class T>
struct mamba_block_state {
  tensor<T> conv;  // [S, K-1, ED]: the last K-1 conv inputs
  tensor<T> ssm;   // [S, N, ED]
};

template <class T, scan::policy Scan>
struct mamba_block {
  std::int64_t d_model = 0, d_inner = 0;
  linear<T> in_proj;           // D -> 2ED, no bias
  conv1d<T> conv;              // ED channels, width K
  selective_ssm<T, Scan> ssm;  // ED channels, N states
  linear<T> out_proj;          // ED -> D, no bias

  struct cache {
    tensor<T> xz;  // [T, 2ED]: conv input x, then gate z
    tensor<T> xc;  // [T, ED]: conv output, before SiLU
    tensor<T> xs;  // [T, ED]: SSM input
    tensor<T> y;   // [T, ED]: SSM output, before gating
    tensor<T> yg;  // [T, ED]: gated
    typename selective_ssm<T, Scan>::cache ssm;
    tensor<T> dyg, dxz, dy, dxs;  // backward's buffers, kept to avoid reallocating every step
  };

  mamba_block() = default;
  mamba_block(std::int64_t d, std::int64_t ed, std::int64_t n, std::int64_t k, std::int64_t r)
      : d_model(d), d_inner(ed), in_proj(d, 2 * ed, false), conv(ed, k), ssm(ed, n, r), out_proj(ed, d, false) {}

  //! Mamba's initialization; out_proj is rescaled by 1/sqrt(n_layers) (one residual per layer).
  void init_mamba(rng& g, std::int64_t n_layers) {
    in_proj.init_default(g);
    conv.init_default(g);
    ssm.init_mamba(g);
    out_proj.init_default(g);
    T const scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(n_layers)));
    for (auto& w : out_proj.weight.value) {
      w *= scale;
    }
  }

  [[nodiscard]] mamba_block_state<T> make_state(std::int64_t s) const {
    return {tensor<T>({s, conv.width - 1, d_inner}), tensor<T>({s, ssm.states, d_inner})};
  }

  //! u: [T, D] -> out: [T, D]. init (nullable): the states the sequences start from; final (nullable): filled.
  void forward(backends::host const& be, sequences const& seqs, T const* u, T* out, cache& k,
               mamba_block_state<T> const* init, mamba_block_state<T>* final) const {
    std::int64_t const rows = seqs.tokens(), ed = d_inner;
    k.xz.resize({rows, 2 * ed});
    k.xc.resize({rows, ed});
    k.xs.resize({rows, ed});
    k.y.resize({rows, ed});
    k.yg.resize({rows, ed});
    in_proj.forward(be, u, d_model, k.xz.data(), 2 * ed, rows);
    conv.forward(be, seqs, k.xz.data(), 2 * ed, k.xc.data(), init ? init->conv.data() : nullptr,
                 final ? final->conv.data() : nullptr, k.xs.data());  // and xs = silu(xc)
    ssm.forward(be, seqs, k.xs.data(), k.y.data(), k.ssm, init ? init->ssm.data() : nullptr,
                final ? final->ssm.data() : nullptr);
    be.parallel_for(rows, [&](std::int64_t r) {
      for (std::int64_t c = 0; c < ed; ++c) {
        k.yg[r * ed + c] = k.y[r * ed + c] * silu(k.xz[r * 2 * ed + ed + c]);
      }
    });
    out_proj.forward(be, k.yg.data(), ed, out, d_model, rows);
  }

  //! Accumulates parameter gradients and writes du = ∂L/∂u (or adds to it when accumulate).
  //! d_final (nullable): gradient arriving at the final states; d_init (nullable): filled with ∂L/∂init.
  void backward(backends::host const& be, sequences const& seqs, T const* u, T const* dout, T* du, bool accumulate,
                cache& k, mamba_block_state<T> const* init, mamba_block_state<T> const* d_final,
                mamba_block_state<T>* d_init) {
    std::int64_t const rows = seqs.tokens(), ed = d_inner;
    auto& dyg = k.dyg;
    auto& dxz = k.dxz;
    auto& dy = k.dy;
    auto& dxs = k.dxs;
    dyg.resize({rows, ed});      // [T, ED]
    dxz.resize({rows, 2 * ed});  // [T, 2ED]
    dy.resize({rows, ed});       // [T, ED]
    dxs.resize({rows, ed});      // [T, ED]
    out_proj.backward(be, k.yg.data(), ed, dout, d_model, dyg.data(), ed, rows);
    be.parallel_for(rows, [&](std::int64_t r) {
      for (std::int64_t c = 0; c < ed; ++c) {
        T const z = k.xz[r * 2 * ed + ed + c];
        T const g = dyg[r * ed + c];
        dy[r * ed + c] = g * silu(z);
        dxz[r * 2 * ed + ed + c] = g * k.y[r * ed + c] * silu_grad(z);
      }
    });
    ssm.backward(be, seqs, k.xs.data(), dy.data(), dxs.data(), k.ssm, init ? init->ssm.data() : nullptr,
                 d_final ? d_final->ssm.data() : nullptr, d_init ? d_init->ssm.data() : nullptr);
    conv.backward(be, seqs, k.xz.data(), 2 * ed, dxs.data(), dxz.data(), 2 * ed, init ? init->conv.data() : nullptr,
                  d_final ? d_final->conv.data() : nullptr, d_init ? d_init->conv.data() : nullptr,
                  k.xc.data());  // dxs is ∂L/∂silu(xc)
    in_proj.backward(be, u, d_model, dxz.data(), 2 * ed, du, d_model, rows, accumulate);
  }

  //! Scratch elements step_row needs.
  [[nodiscard]] std::int64_t step_scratch_size() const { return 4 * d_inner + ssm.dt_rank + 2 * ssm.states; }

  //! One token of one sequence, fused in a single pass so a batch of rows is one parallel loop.
  //! u: [D] -> out: [D]; conv_state: [K-1, ED] and ssm_state: [N, ED] advance in place;
  //! a: [N, ED] = -exp(A_log) from ssm.make_a; scratch: step_scratch_size() elements.
  void step_row(T const* u, T* out, T* conv_state, T* ssm_state, T const* a, T* scratch) const {
    std::int64_t const ed = d_inner, ns = ssm.states, r = ssm.dt_rank;
    T* xz = scratch;      // [2ED]: x then the gate z; x is overwritten by y once the conv has used it
    T* xc = xz + 2 * ed;  // [ED]
    T* dt = xc + ed;      // [ED]
    T* dbc = dt + ed;     // [R + 2N]
    matvec(in_proj.weight.value.data(), 2 * ed, d_model, u, xz);
    conv.step_row(xz, xc, conv_state);
    for (std::int64_t c = 0; c < ed; ++c) {
      xc[c] = silu(xc[c]);
    }
    matvec(ssm.x_proj.weight.value.data(), r + 2 * ns, ed, xc, dbc);
    matvec(ssm.dt_proj.weight.value.data(), ed, r, dbc, dt);
    for (std::int64_t c = 0; c < ed; ++c) {
      dt[c] = ssm.delta_min + softplus(dt[c] + ssm.dt_proj.bias.value[c]);
    }
    T* y = xz;  // x is no longer needed
    scan::selective_scan_step_row(ed, ns, xc, dt, a, dbc + r, dbc + r + ns, ssm.d.value.data(), ssm_state, y);
    for (std::int64_t c = 0; c < ed; ++c) {
      y[c] *= silu(xz[ed + c]);
    }
    matvec(out_proj.weight.value.data(), d_model, ed, y, out);
  }
};

}  // namespace ssmlen::layers
