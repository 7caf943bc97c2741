// SPDX-License-Identifier: Apache-2.0
//! @file recurrent.hpp
//! A gated recurrent layer (the paper's LSTM and GRU baselines) over packed sequences, generic over its cell:
//!   gx_t = W_ih x_t + b_ih          one GEMM over every token of the batch
//!   gh_t = W_hh h_{t-1} + b_hh      per token, in order: the recurrence
//!   state_t = Cell(gx_t, gh_t, state_{t-1}),  y_t = h_t
//! Backward walks each sequence in reverse for the pre-activation gradients (its only sequential part: one
//! W_hhᵀ product per token), then forms every weight gradient and dx as GEMMs over all tokens, so the result does
//! not depend on the thread count. `step_row` is the O(1)-per-token recurrent step for rollouts.
//! The cell (`lstm_cell`, `gru_cell`) is pointwise math only; its gates are laid out as PyTorch's, so weights
//! travel to and from nn.LSTM / nn.GRU (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0).
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/core/tensor.hpp>
#include <ssmlen/layers/linear.hpp>
#include <ssmlen/layers/param.hpp>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>
#include <vector>

namespace ssmlen::layers {

//! A cell: its sizes in units of the hidden width H, and pointwise forward and backward over one token
//! (see lstm_cell for the meaning of each argument).
template <class C>
concept recurrent_cell = requires(std::int64_t h, double const* in, double* out) {
  { C::gates } -> std::convertible_to<int>;        // the projections are [gates · H, ·]
  { C::state_parts } -> std::convertible_to<int>;  // the state is state_parts · H values, h first
  { C::saved_parts } -> std::convertible_to<int>;  // values kept per token for backward, in units of H
  { C::name } -> std::convertible_to<char const*>;
  C::forward(h, in, in, in, out, out);
  C::backward(h, in, in, in, out, out, out);
};

template <class T, recurrent_cell Cell>
struct recurrent {
  static constexpr int gates = Cell::gates, state_parts = Cell::state_parts, saved_parts = Cell::saved_parts;

  std::int64_t in = 0, hidden = 0;
  linear<T> ih;  // In -> G·H, bias b_ih: weight [G·H, In]
  linear<T> hh;  // H -> G·H, bias b_hh: weight [G·H, H]

  //! What forward keeps for backward, and backward's buffers (reused across calls).
  struct cache {
    tensor<T> gx;                // [T, G·H]: input-side pre-activations
    tensor<T> states;            // [T, S·H]: the state after each token
    tensor<T> saved;             // [T, K·H]: the cell's values for backward
    tensor<T> dgx, dgh, h_prev;  // backward: [T, G·H] twice, [T, H] (the h each token's recurrence read)
  };

  recurrent() = default;
  recurrent(std::int64_t in_features, std::int64_t hidden_size)
      : in(positive(in_features, " input size")),  // checked before any tensor takes the size
        hidden(positive(hidden_size, " hidden size")), ih(in, gates * hidden, true), hh(hidden, gates * hidden, true) {}

  //! PyTorch's default: every weight and bias U(-1/sqrt(H), 1/sqrt(H)).
  void init_default(rng& g) {
    double const bound = 1.0 / std::sqrt(static_cast<double>(hidden));
    for (auto* p : {&ih.weight, &hh.weight, &ih.bias, &hh.bias}) {
      for (auto& v : p->value) {
        v = static_cast<T>(g.uniform(-bound, bound));
      }
    }
  }

  [[nodiscard]] std::int64_t state_size() const { return state_parts * hidden; }
  [[nodiscard]] std::int64_t step_scratch_size() const {
    return 2 * gates * hidden + (saved_parts + state_parts) * hidden;
  }

  //! x: [T, In] packed as `seqs` -> y: [T, H]. init (nullable): [count, S·H] starting states (zero otherwise);
  //! final (nullable): [count, S·H], filled with the state after each sequence's last token.
  void forward(backends::host const& be, sequences const& seqs, T const* x, T* y, cache& k, T const* init = nullptr,
               T* final = nullptr) const {
    std::int64_t const rows = seqs.tokens(), g = gates * hidden, st = state_size(), sv = saved_parts * hidden;
    k.gx.resize({rows, g});
    k.states.resize({rows, st});
    k.saved.resize({rows, sv});
    if (rows > 0) {
      ih.forward(be, x, in, k.gx.data(), g, rows);
    }
    be.parallel_for_uneven(seqs.count(), [&](std::int64_t s) {
      std::vector<T> const zero(static_cast<std::size_t>(st), T(0));
      std::vector<T> gh(static_cast<std::size_t>(g));  // [G·H]
      T const* prev = init != nullptr ? init + s * st : zero.data();
      for (std::int64_t t = seqs.begin(s); t < seqs.end(s); ++t) {
        hidden_side(prev, gh.data());
        T* next = k.states.data() + t * st;
        Cell::forward(hidden, k.gx.data() + t * g, gh.data(), prev, next, k.saved.data() + t * sv);
        std::copy_n(next, hidden, y + t * hidden);
        prev = next;
      }
      if (final != nullptr) {
        std::copy_n(prev, st, final + s * st);
      }
    });
  }

  //! dy: [T, H] -> accumulates every parameter gradient; dx (nullable): [T, In], written (added to when
  //! accumulate). d_final (nullable): [count, S·H] gradient at the final states; d_init (nullable): [count, S·H],
  //! filled with the gradient of the initial states. x and init must be forward's.
  void backward(backends::host const& be, sequences const& seqs, T const* x, T const* dy, T* dx, bool accumulate,
                cache& k, T const* init = nullptr, T const* d_final = nullptr, T* d_init = nullptr) {
    std::int64_t const rows = seqs.tokens(), g = gates * hidden, st = state_size(), sv = saved_parts * hidden;
    check_arg(k.states.size() == rows * st, "recurrent cache", k.states.size(),
              "must come from forward over the same sequences");
    k.dgx.resize({rows, g});
    k.dgh.resize({rows, g});
    k.h_prev.resize({rows, hidden});
    T const* whh = hh.weight.value.data();
    be.parallel_for_uneven(seqs.count(), [&](std::int64_t s) {
      std::vector<T> const zero(static_cast<std::size_t>(st), T(0));
      std::vector<T> d(static_cast<std::size_t>(st), T(0)), d_prev(static_cast<std::size_t>(st));  // ∂L/∂state
      if (d_final != nullptr) {
        std::copy_n(d_final + s * st, st, d.data());
      }
      T const* first = init != nullptr ? init + s * st : zero.data();
      for (std::int64_t t = seqs.end(s); t-- > seqs.begin(s);) {
        for (std::int64_t j = 0; j < hidden; ++j) {
          d[static_cast<std::size_t>(j)] += dy[t * hidden + j];
        }
        T const* prev = t > seqs.begin(s) ? k.states.data() + (t - 1) * st : first;
        T* dgh = k.dgh.data() + t * g;
        Cell::backward(hidden, k.saved.data() + t * sv, prev, d.data(), k.dgx.data() + t * g, dgh, d_prev.data());
        for (std::int64_t o = 0; o < g; ++o) {  // ∂L/∂h_{t-1} += W_hhᵀ dgh
          T const v = dgh[o];
          T const* wo = whh + o * hidden;
#pragma omp simd
          for (std::int64_t j = 0; j < hidden; ++j) {
            d_prev[static_cast<std::size_t>(j)] += wo[j] * v;
          }
        }
        std::copy_n(prev, hidden, k.h_prev.data() + t * hidden);
        std::swap(d, d_prev);
      }
      if (d_init != nullptr) {
        std::copy_n(d.data(), st, d_init + s * st);
      }
    });
    if (rows == 0) {
      return;
    }
    hh.backward(be, k.h_prev.data(), hidden, k.dgh.data(), g, nullptr, hidden, rows);
    ih.backward(be, x, in, k.dgx.data(), g, dx, in, rows, accumulate);
  }

  //! One token of one sequence: x: [In] -> y: [H]; state: [S·H] advances in place; scratch: step_scratch_size().
  void step_row(T const* x, T* y, T* state, T* scratch) const {
    std::int64_t const g = gates * hidden;
    T* gx = scratch;                         // [G·H]
    T* gh = gx + g;                          // [G·H]
    T* saved = gh + g;                       // [K·H]
    T* next = saved + saved_parts * hidden;  // [S·H]
    matvec(ih.weight.value.data(), g, in, x, gx);
    for (std::int64_t o = 0; o < g; ++o) {
      gx[o] += ih.bias.value[o];
    }
    hidden_side(state, gh);
    Cell::forward(hidden, gx, gh, state, next, saved);
    std::copy_n(next, state_size(), state);
    std::copy_n(next, hidden, y);
  }

private:
  static std::int64_t positive(std::int64_t v, char const* what) {
    check_arg(v > 0, std::string(Cell::name) + what, v, "must be positive");
    return v;
  }

  //! gh = W_hh h + b_hh, h the first H values of the state.
  void hidden_side(T const* state, T* gh) const {
    std::int64_t const g = gates * hidden;
    matvec(hh.weight.value.data(), g, hidden, state, gh);
    for (std::int64_t o = 0; o < g; ++o) {
      gh[o] += hh.bias.value[o];
    }
  }
};

}  // namespace ssmlen::layers
