// SPDX-License-Identifier: Apache-2.0
//! @file gru.hpp
//! The GRU cell's pointwise math, as PyTorch's nn.GRU computes it (gates in the order r, z, n):
//!   r = σ(x_r + h_r),  z = σ(x_z + h_z),  n = tanh(x_n + r h_n),  h' = (1 - z) n + z h
//! where x_k = (W_ih x + b_ih)_k and h_k = (W_hh h + b_hh)_k: the reset gate scales h_n with its bias.
//! `layers::recurrent<T, gru_cell>` does the projections and the walk over time; this header is only the cell.
#pragma once

#include <cmath>
#include <cstdint>

namespace ssmlen::layers {

struct gru_cell {
  static constexpr int gates = 3;        // r, z, n: the projections are [3H, ·]
  static constexpr int state_parts = 1;  // the state is h
  static constexpr int saved_parts = 4;  // kept per token for backward: r, z, n, h_n
  static constexpr char const* name = "gru";

  //! gx, gh: [3H] input- and hidden-side pre-activations (biases included); prev, next: [H]; saved: [4H].
  template <class T>
  static void forward(std::int64_t h, T const* gx, T const* gh, T const* prev, T* next, T* saved) {
    for (std::int64_t j = 0; j < h; ++j) {
      T const r = sigmoid(gx[j] + gh[j]);
      T const z = sigmoid(gx[h + j] + gh[h + j]);
      T const hn = gh[2 * h + j];
      T const n = std::tanh(gx[2 * h + j] + r * hn);
      next[j] = (T(1) - z) * n + z * prev[j];
      saved[j] = r;
      saved[h + j] = z;
      saved[2 * h + j] = n;
      saved[3 * h + j] = hn;
    }
  }

  //! From d_next = ∂L/∂h': the input- and hidden-side pre-activation gradients (they differ in n's part, which
  //! the reset gate scales on the hidden side) and the part of ∂L/∂h that does not pass through W_hh (z dh').
  template <class T>
  static void backward(std::int64_t h, T const* saved, T const* prev, T const* d_next, T* dgx, T* dgh, T* d_prev) {
    for (std::int64_t j = 0; j < h; ++j) {
      T const r = saved[j], z = saved[h + j], n = saved[2 * h + j], hn = saved[3 * h + j];
      T const dh = d_next[j];
      T const dn = dh * (T(1) - z) * (T(1) - n * n);
      T const dz = dh * (prev[j] - n) * z * (T(1) - z);
      T const dr = dn * hn * r * (T(1) - r);
      dgx[j] = dgh[j] = dr;
      dgx[h + j] = dgh[h + j] = dz;
      dgx[2 * h + j] = dn;
      dgh[2 * h + j] = dn * r;
      d_prev[j] = dh * z;
    }
  }

private:
  template <class T>
  static T sigmoid(T x) {
    return T(1) / (T(1) + std::exp(-x));
  }
};

}  // namespace ssmlen::layers
