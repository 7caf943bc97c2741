// SPDX-License-Identifier: Apache-2.0
//! @file attention.hpp
//! Causal multi-head self-attention with rotary position embeddings and a sliding window, the attention of the
//! paper's Transformer baselines (Pythia: RoPE, full attention; Mistral: RoPE, a window of 512 tokens):
//!   [q | k | v] = x W_qkvᵀ,  q, k rotated by their absolute positions,
//!   o_t = Σ_{p - W < p' ≤ p} softmax_p'(q_t · k_p' / √d_head) v_p',  y = o W_oᵀ
//! A query sees the W most recent positions, itself included. The recurrent state is a ring of the last W keys and
//! values (`attention_state`), so the model's memory is fixed and a window at least as long as an episode is full
//! attention. forward can start from a state and return one (prefill in slices); backward recomputes each query's
//! probabilities from its saved log-sum-exp (flash-attention style: no [T, T] matrix is kept), one (sequence, head)
//! per task, so its sums run in a fixed order whatever the thread count.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/core/tensor.hpp>
#include <ssmlen/layers/linear.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::layers {

//! The last W keys and values of each sequence (already rotated), position p in slot p mod W.
template <class T>
struct attention_state {
  tensor<T> k, v;  // [B, W, D] each
};

template <class T>
struct causal_attention {
  std::int64_t d_model = 0, heads = 0, head_dim = 0, window = 0;
  double rope_base = 10000;
  linear<T> qkv;  // D -> 3D, no bias: [q | k | v], each [heads, head_dim]
  linear<T> out;  // D -> D, no bias

  struct cache {
    tensor<T> qkv;                    // [T, 3D]: q and k rotated
    tensor<T> o;                      // [T, D]: attention output, before the output projection
    tensor<T> lse;                    // [T, heads]: log Σ exp of each query's scores
    tensor<T> dqkv, d_o;              // backward: [T, 3D], [T, D]
    std::vector<std::int64_t> first;  // [count]: position of each sequence's first token
  };

  causal_attention() = default;
  causal_attention(std::int64_t d, std::int64_t n_heads, std::int64_t window_tokens, double base = 10000)
      : d_model(d), heads(n_heads), window(window_tokens), rope_base(base) {
    check_arg(d > 0, "attention d_model", d, "must be positive");
    check_arg(n_heads > 0 && d % n_heads == 0, "attention heads", n_heads,
              "must divide d_model = " + std::to_string(d));
    head_dim = d / n_heads;
    check_arg(head_dim % 2 == 0, "attention head size", head_dim, "must be even (rotary pairs)");
    check_arg(window_tokens > 0, "attention window", window_tokens, "must be positive");
    check_arg(base > 1, "rope_base", base, "must exceed 1");
    qkv = linear<T>(d, 3 * d, false);
    out = linear<T>(d, d, false);
  }

  void init_default(rng& g) {
    qkv.init_default(g);
    out.init_default(g);
  }

  [[nodiscard]] attention_state<T> make_state(std::int64_t batch) const {
    return {tensor<T>({batch, window, d_model}), tensor<T>({batch, window, d_model})};
  }

  //! x: [T, D] packed as `seqs` -> y: [T, D]. first: [count] position of each sequence's first token (0 without a
  //! starting state); init (nullable): the state those positions continue; final (nullable): filled.
  void forward(backends::host const& be, sequences const& seqs, T const* x, T* y, cache& k,
               std::span<const std::int64_t> first, attention_state<T> const* init = nullptr,
               attention_state<T>* final = nullptr) const {
    std::int64_t const rows = seqs.tokens(), d = d_model;
    check_arg(static_cast<std::int64_t>(first.size()) == seqs.count(), "attention first positions", first.size(),
              "must give one position per sequence (" + std::to_string(seqs.count()) + ")");
    for (auto f : first) {
      check_arg(f >= 0 && (f == 0 || init != nullptr), "attention first position", f,
                "must be 0, or continue a starting state");
    }
    k.first.assign(first.begin(), first.end());
    k.qkv.resize({rows, 3 * d});
    k.o.resize({rows, d});
    k.lse.resize({rows, heads});
    qkv.forward(be, x, d, k.qkv.data(), 3 * d, rows);
    be.parallel_for_uneven(seqs.count(), [&](std::int64_t s) {
      for (std::int64_t t = seqs.begin(s); t < seqs.end(s); ++t) {
        std::int64_t const p = position(k, seqs, s, t);
        rotate(k.qkv.data() + t * 3 * d, p, false);
        rotate(k.qkv.data() + t * 3 * d + d, p, false);
      }
    });
    be.parallel_for_uneven(seqs.count() * heads, [&](std::int64_t task) {
      std::int64_t const s = task / heads, h = task % heads;
      std::vector<T> scores(static_cast<std::size_t>(window));
      for (std::int64_t t = seqs.begin(s); t < seqs.end(s); ++t) {
        T const* q = k.qkv.data() + t * 3 * d + h * head_dim;
        T* o = k.o.data() + t * d + h * head_dim;
        k.lse[t * heads + h] = attend(
            q, position(k, seqs, s, t), [&](std::int64_t pp) { return key(k, seqs, s, pp, init) + h * head_dim; },
            [&](std::int64_t pp) { return value(k, seqs, s, pp, init) + h * head_dim; }, scores.data(), o);
      }
    });
    out.forward(be, k.o.data(), d, y, d, rows);
    if (final != nullptr) {
      be.parallel_for(seqs.count(), [&](std::int64_t s) {
        std::int64_t const end = k.first[static_cast<std::size_t>(s)] + seqs.length(s);
        for (std::int64_t pp = std::max<std::int64_t>(0, end - window); pp < end; ++pp) {
          std::int64_t const slot = (s * window + pp % window) * d;
          std::copy_n(key(k, seqs, s, pp, init), d, final->k.data() + slot);
          std::copy_n(value(k, seqs, s, pp, init), d, final->v.data() + slot);
        }
      });
    }
  }

  //! dy: [T, D] -> accumulates the weights' gradients; dx: [T, D] written (added to when accumulate). Gradients do
  //! not flow into a starting state: forward must have run without one.
  void backward(backends::host const& be, sequences const& seqs, T const* x, T const* dy, T* dx, bool accumulate,
                cache& k) {
    std::int64_t const rows = seqs.tokens(), d = d_model;
    for (auto f : k.first) {
      check(f == 0,
            "attention backward: gradients through a starting state are not supported (run forward without one)");
    }
    k.d_o.resize({rows, d});
    k.dqkv.resize({rows, 3 * d});
    k.dqkv.fill(T(0));
    out.backward(be, k.o.data(), d, dy, d, k.d_o.data(), d, rows);
    be.parallel_for_uneven(seqs.count() * heads, [&](std::int64_t task) {
      std::int64_t const s = task / heads, h = task % heads, b = seqs.begin(s);
      for (std::int64_t t = b; t < seqs.end(s); ++t) {
        std::int64_t const lo = std::max(b, t - window + 1);
        T const* q = k.qkv.data() + t * 3 * d + h * head_dim;
        T const* d_o = k.d_o.data() + t * d + h * head_dim;
        T* dq = k.dqkv.data() + t * 3 * d + h * head_dim;
        T const delta = dot(d_o, k.o.data() + t * d + h * head_dim);  // Σ_j dO_j O_j = Σ_p' P dP
        T const lse = k.lse[t * heads + h];
        for (std::int64_t tt = lo; tt <= t; ++tt) {
          T const* kk = k.qkv.data() + tt * 3 * d + d + h * head_dim;
          T const* vv = kk + d;
          T const prob = std::exp(dot(q, kk) * scale() - lse);
          T const ds = prob * (dot(d_o, vv) - delta) * scale();
          T* dk = k.dqkv.data() + tt * 3 * d + d + h * head_dim;
          T* dv = dk + d;
          for (std::int64_t j = 0; j < head_dim; ++j) {
            dq[j] += ds * kk[j];
            dk[j] += ds * q[j];
            dv[j] += prob * d_o[j];
          }
        }
      }
    });
    be.parallel_for_uneven(seqs.count(), [&](std::int64_t s) {  // back through the rotations (positions from 0)
      for (std::int64_t t = seqs.begin(s); t < seqs.end(s); ++t) {
        rotate(k.dqkv.data() + t * 3 * d, t - seqs.begin(s), true);
        rotate(k.dqkv.data() + t * 3 * d + d, t - seqs.begin(s), true);
      }
    });
    qkv.backward(be, x, d, k.dqkv.data(), 3 * d, dx, d, rows, accumulate);
  }

  //! One token of one sequence at position p: x: [D] -> y: [D]; the state's row (k, v: [W, D]) takes its key and
  //! value; scratch: step_scratch_size() = 4D + W values.
  void step_row(T const* x, T* y, std::int64_t p, T* k_row, T* v_row, T* scratch) const {
    std::int64_t const d = d_model;
    T* qkv_row = scratch;    // [3D]
    T* o = qkv_row + 3 * d;  // [D]
    T* scores = o + d;       // [W]
    matvec(qkv.weight.value.data(), 3 * d, d, x, qkv_row);
    rotate(qkv_row, p, false);
    rotate(qkv_row + d, p, false);
    std::copy_n(qkv_row + d, d, k_row + (p % window) * d);
    std::copy_n(qkv_row + 2 * d, d, v_row + (p % window) * d);
    for (std::int64_t h = 0; h < heads; ++h) {
      attend(
          qkv_row + h * head_dim, p, [&](std::int64_t pp) { return k_row + (pp % window) * d + h * head_dim; },
          [&](std::int64_t pp) { return v_row + (pp % window) * d + h * head_dim; }, scores, o + h * head_dim);
    }
    matvec(out.weight.value.data(), d, d, o, y);
  }

  [[nodiscard]] std::int64_t step_scratch_size() const { return 4 * d_model + window; }

private:
  [[nodiscard]] T scale() const { return T(1) / std::sqrt(static_cast<T>(head_dim)); }

  //! One head of one query at position p over the window's positions: o = Σ softmax(q · k / √d_head) v, keys and
  //! values of position pp at key_of(pp), value_of(pp); scores: [W] scratch. Returns the log-sum-exp of the scores.
  template <class KeyOf, class ValueOf>
  T attend(T const* q, std::int64_t p, KeyOf&& key_of, ValueOf&& value_of, T* scores, T* o) const {
    std::int64_t const lo = std::max<std::int64_t>(0, p - window + 1);
    T best = -std::numeric_limits<T>::infinity();
    for (std::int64_t pp = lo; pp <= p; ++pp) {
      T const sc = dot(q, key_of(pp)) * scale();
      scores[pp - lo] = sc;
      best = std::max(best, sc);
    }
    T sum = 0;
    for (std::int64_t pp = lo; pp <= p; ++pp) {  // scores become exp(score - best), each computed once
      scores[pp - lo] = std::exp(scores[pp - lo] - best);
      sum += scores[pp - lo];
    }
    std::fill_n(o, head_dim, T(0));
    for (std::int64_t pp = lo; pp <= p; ++pp) {
      T const w = scores[pp - lo] / sum;
      T const* v = value_of(pp);
      for (std::int64_t j = 0; j < head_dim; ++j) {
        o[j] += w * v[j];
      }
    }
    return best + std::log(sum);
  }

  T dot(T const* a, T const* b) const {
    T acc = 0;
    for (std::int64_t j = 0; j < head_dim; ++j) {
      acc += a[j] * b[j];
    }
    return acc;
  }

  static std::int64_t position(cache const& k, sequences const& seqs, std::int64_t s, std::int64_t t) {
    return k.first[static_cast<std::size_t>(s)] + (t - seqs.begin(s));
  }

  //! The rotated key (or value) of sequence s at absolute position pp: a token of this call, or the starting state's.
  T const* key(cache const& k, sequences const& seqs, std::int64_t s, std::int64_t pp,
               attention_state<T> const* init) const {
    return kv(k, seqs, s, pp, init, 1);
  }
  T const* value(cache const& k, sequences const& seqs, std::int64_t s, std::int64_t pp,
                 attention_state<T> const* init) const {
    return kv(k, seqs, s, pp, init, 2);
  }
  T const* kv(cache const& k, sequences const& seqs, std::int64_t s, std::int64_t pp, attention_state<T> const* init,
              int part) const {
    std::int64_t const f = k.first[static_cast<std::size_t>(s)];
    if (pp >= f) {
      return k.qkv.data() + (seqs.begin(s) + pp - f) * 3 * d_model + part * d_model;
    }
    tensor<T> const& ring = part == 1 ? init->k : init->v;
    return ring.data() + (s * window + pp % window) * d_model;
  }

  //! Rotates each head's pairs (2i, 2i + 1) of one row of D values by p θ_i, θ_i = base^(-2i / head_dim); the
  //! inverse rotation when `inverse` (the backward of a rotation is its transpose).
  void rotate(T* row, std::int64_t p, bool inverse) const {
    for (std::int64_t i = 0; i < head_dim / 2; ++i) {
      double const theta = std::pow(rope_base, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
      double const angle = static_cast<double>(p) * theta;
      T const c = static_cast<T>(std::cos(angle)), sn = static_cast<T>(inverse ? -std::sin(angle) : std::sin(angle));
      for (std::int64_t h = 0; h < heads; ++h) {
        T* pair = row + h * head_dim + 2 * i;
        T const a = pair[0], b = pair[1];
        pair[0] = a * c - b * sn;
        pair[1] = a * sn + b * c;
      }
    }
  }
};

}  // namespace ssmlen::layers
