// SPDX-License-Identifier: Apache-2.0
//! @file lstm.hpp
//! The LSTM cell's pointwise math, as PyTorch's nn.LSTM computes it (gates in the order i, f, g, o):
//!   i = σ(·), f = σ(·), g = tanh(·), o = σ(·) of (W_ih x + b_ih) + (W_hh h + b_hh)
//!   c' = f c + i g,  h' = o tanh(c')
//! `layers::recurrent<T, lstm_cell>` does the projections and the walk over time; this header is only the cell.
#pragma once

#include <cmath>
#include <cstdint>

namespace ssmlen::layers {

struct lstm_cell {
  static constexpr int gates = 4;        // i, f, g, o: the projections are [4H, ·]
  static constexpr int state_parts = 2;  // the state is [h, c], 2H values; h first
  static constexpr int saved_parts = 5;  // kept per token for backward: i, f, g, o, tanh(c')
  static constexpr char const* name = "lstm";

  //! gx, gh: [4H] input- and hidden-side pre-activations (biases included); prev, next: [2H] states;
  //! saved: [5H]. next may not alias prev.
  template <class T>
  static void forward(std::int64_t h, T const* gx, T const* gh, T const* prev, T* next, T* saved) {
    for (std::int64_t j = 0; j < h; ++j) {
      T const i = sigmoid(gx[j] + gh[j]);
      T const f = sigmoid(gx[h + j] + gh[h + j]);
      T const g = std::tanh(gx[2 * h + j] + gh[2 * h + j]);
      T const o = sigmoid(gx[3 * h + j] + gh[3 * h + j]);
      T const c = f * prev[h + j] + i * g;
      T const tc = std::tanh(c);
      next[j] = o * tc;
      next[h + j] = c;
      saved[j] = i;
      saved[h + j] = f;
      saved[2 * h + j] = g;
      saved[3 * h + j] = o;
      saved[4 * h + j] = tc;
    }
  }

  //! From d_next = ∂L/∂[h', c'] (h' part complete): the pre-activation gradients (the same on both sides, so
  //! dgx = dgh) and the part of ∂L/∂[h, c] that does not pass through W_hh (only c's: f dc'; h's is 0).
  template <class T>
  static void backward(std::int64_t h, T const* saved, T const* prev, T const* d_next, T* dgx, T* dgh, T* d_prev) {
    for (std::int64_t j = 0; j < h; ++j) {
      T const i = saved[j], f = saved[h + j], g = saved[2 * h + j], o = saved[3 * h + j], tc = saved[4 * h + j];
      T const dh = d_next[j];
      T const dc = d_next[h + j] + dh * o * (T(1) - tc * tc);
      T const di = dc * g * i * (T(1) - i);
      T const df = dc * prev[h + j] * f * (T(1) - f);
      T const dg = dc * i * (T(1) - g * g);
      T const dout = dh * tc * o * (T(1) - o);
      for (T* d : {dgx, dgh}) {
        d[j] = di;
        d[h + j] = df;
        d[2 * h + j] = dg;
        d[3 * h + j] = dout;
      }
      d_prev[j] = T(0);
      d_prev[h + j] = dc * f;
    }
  }

private:
  template <class T>
  static T sigmoid(T x) {
    return T(1) / (T(1) + std::exp(-x));
  }
};

}  // namespace ssmlen::layers
