// SPDX-License-Identifier: Apache-2.0
//! @file transformer_lm.hpp
//! The paper's Transformer baselines as a language model: a pre-norm decoder (GPT-NeoX's order, RMSNorm as in
//! Mistral) with rotary attention over a sliding window:
//!   embedding -> N x (u += attention(rmsnorm(u)); u += mlp(rmsnorm(u))) -> rmsnorm -> linear head
//! A window of 512 is the paper's Mistral-style local attention; a window longer than any episode is full attention
//! (Pythia). Its state is the window's keys and values per layer plus each row's position, so `step` costs O(W) per
//! token, and the trainer, rollouts and sweeps take it like the recurrent models. Gradients stop at the starting
//! state (training starts every sequence at position 0).
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/core/tensor.hpp>
#include <ssmlen/layers/attention.hpp>
#include <ssmlen/layers/embedding.hpp>
#include <ssmlen/layers/linear.hpp>
#include <ssmlen/layers/mlp.hpp>
#include <ssmlen/layers/rmsnorm.hpp>
#include <ssmlen/models/config_json.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::models {

struct transformer_config {
  std::int64_t vocab = 0;
  std::int64_t d_model = 64, n_layers = 4, heads = 4;
  std::int64_t d_ff = 256;    // the MLP's hidden width
  std::int64_t window = 512;  // positions a query sees, itself included
  double rope_base = 10000;

  void validate() const {
    check_arg(vocab > 0, "vocab", vocab, "must be positive");
    check_arg(d_model > 0 && d_model <= (1 << 16), "d_model", d_model, "must be in [1, 65536]");
    check_arg(n_layers > 0 && n_layers <= 256, "n_layers", n_layers, "must be in [1, 256]");
    check_arg(heads > 0 && d_model % heads == 0, "heads", heads, "must divide d_model = " + std::to_string(d_model));
    check_arg((d_model / heads) % 2 == 0, "head size d_model / heads", d_model / heads, "must be even (rotary pairs)");
    check_arg(d_ff > 0, "d_ff", d_ff, "must be positive");
    check_arg(window > 0 && window <= (1 << 24), "window", window, "must be in [1, 2^24]");
    check_arg(rope_base > 1, "rope_base", rope_base, "must exceed 1");
  }
};

template <class T>
class transformer_lm {
public:
  using value_type = T;

  struct layer {
    layers::rmsnorm<T> norm1;
    layers::causal_attention<T> attn;
    layers::rmsnorm<T> norm2;
    layers::mlp<T> ff;
  };

  //! The window of every layer for a batch of sequences, and where each row stands.
  struct state {
    std::vector<layers::attention_state<T>> layers;
    tensor<T> pos;  // [B, 1]: position of each row's next token (an integer: exact in float below 2^24)

    [[nodiscard]] std::vector<tensor<T> const*> tensors() const {
      std::vector<tensor<T> const*> out;
      for (auto const& l : layers) {
        out.insert(out.end(), {&l.k, &l.v});
      }
      out.push_back(&pos);
      return out;
    }
    [[nodiscard]] std::vector<tensor<T>*> tensors() {
      std::vector<tensor<T>*> out;
      for (auto& l : layers) {
        out.insert(out.end(), {&l.k, &l.v});
      }
      out.push_back(&pos);
      return out;
    }
  };

  //! Everything forward keeps for backward.
  struct cache {
    sequences seqs;
    std::vector<std::int32_t> tokens;     // [T]
    std::vector<tensor<T>> u;             // 2 n_layers + 1 x [T, D]: the residual stream before
                                          // each sub-block (attention, then MLP), then the last
    std::vector<tensor<T>> normed, rstd;  // 2 n_layers x [T, D], [T]
    std::vector<typename layers::causal_attention<T>::cache> attn;  // n_layers
    std::vector<typename layers::mlp<T>::cache> ff;                 // n_layers
    tensor<T> final_normed, final_rstd;                             // [T, D], [T]
    tensor<T> d_normed, du;                                         // backward's buffers, [T, D] each
  };

  //! Reusable buffers for step().
  struct step_workspace {
    tensor<T> rows;  // [B, 3D + scratch]
  };

  explicit transformer_lm(transformer_config const& cfg, std::uint64_t seed = 0) : cfg_(cfg) {
    cfg_.validate();
    std::int64_t const d = cfg_.d_model;
    embedding_ = layers::embedding<T>(cfg_.vocab, d);
    for (std::int64_t i = 0; i < cfg_.n_layers; ++i) {
      layers_.push_back({layers::rmsnorm<T>(d), layers::causal_attention<T>(d, cfg_.heads, cfg_.window, cfg_.rope_base),
                         layers::rmsnorm<T>(d), layers::mlp<T>(d, cfg_.d_ff)});
    }
    norm_f_ = layers::rmsnorm<T>(d);
    head_ = layers::linear<T>(d, cfg_.vocab, false);
    init(seed);
  }

  //! Embedding N(0, 0.02); projections PyTorch's default U(±1/sqrt(fan_in)); norms 1.
  void init(std::uint64_t seed) {
    rng const root(seed);
    rng g = root.fork(0);
    embedding_.init_normal(g, 0.02);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      rng gl = root.fork(1 + i);
      layers_[i].attn.init_default(gl);
      layers_[i].ff.init_default(gl);
    }
    rng gh = root.fork(1 + layers_.size());
    head_.init_default(gh);
  }

  [[nodiscard]] transformer_config const& config() const { return cfg_; }

  //! The configuration as a checkpoint stores it, with the architecture ("transformer") named.
  [[nodiscard]] nlohmann::json config_json() const {
    return {{"architecture", "transformer"}, {"vocab", cfg_.vocab},        {"d_model", cfg_.d_model},
            {"n_layers", cfg_.n_layers},     {"heads", cfg_.heads},        {"d_ff", cfg_.d_ff},
            {"window", cfg_.window},         {"rope_base", cfg_.rope_base}};
  }

  static transformer_config config_from_json(nlohmann::json const& j) {
    transformer_config c;
    detail::read_config(j, "transformer",
                        {{"vocab", &c.vocab},
                         {"d_model", &c.d_model},
                         {"n_layers", &c.n_layers},
                         {"heads", &c.heads},
                         {"d_ff", &c.d_ff},
                         {"window", &c.window},
                         {"rope_base", nullptr, &c.rope_base}});
    c.validate();
    return c;
  }

  //! Every parameter, GPT-NeoX's names for the same roles.
  std::vector<layers::named_param<T>> named_params() {
    std::vector<layers::named_param<T>> out;
    auto add = [&](std::string name, layers::param<T>& p) { out.push_back({std::move(name), &p, p.value.shape()}); };
    add("gpt_neox.embed_in.weight", embedding_.weight);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      std::string const pre = "gpt_neox.layers." + std::to_string(i) + ".";
      auto& l = layers_[i];
      add(pre + "input_layernorm.weight", l.norm1.weight);
      add(pre + "attention.query_key_value.weight", l.attn.qkv.weight);
      add(pre + "attention.dense.weight", l.attn.out.weight);
      add(pre + "post_attention_layernorm.weight", l.norm2.weight);
      add(pre + "mlp.dense_h_to_4h.weight", l.ff.fc1.weight);
      add(pre + "mlp.dense_h_to_4h.bias", l.ff.fc1.bias);
      add(pre + "mlp.dense_4h_to_h.weight", l.ff.fc2.weight);
      add(pre + "mlp.dense_4h_to_h.bias", l.ff.fc2.bias);
    }
    add("gpt_neox.final_layer_norm.weight", norm_f_.weight);
    add("embed_out.weight", head_.weight);
    return out;
  }

  [[nodiscard]] std::int64_t n_params() { return layers::total_size(named_params()); }
  void zero_grad() { layers::zero_grads(named_params()); }

  [[nodiscard]] state make_state(std::int64_t batch) const {
    check_arg(batch >= 0, "batch", batch, "must not be negative");
    state s;
    for (auto const& l : layers_) {
      s.layers.push_back(l.attn.make_state(batch));
    }
    s.pos = tensor<T>({batch, 1});
    return s;
  }

  //! tokens: [T] packed as `seqs` -> logits: [T, V]. init (nullable): the states the sequences continue (one row
  //! per sequence); final (nullable): filled.
  void forward(backends::host const& be, std::span<const std::int32_t> tokens, sequences const& seqs, T* logits,
               cache& k, state const* init = nullptr, state* final = nullptr) const {
    std::int64_t const rows = seqs.tokens(), d = cfg_.d_model, count = seqs.count();
    check_arg(static_cast<std::int64_t>(tokens.size()) == rows, "tokens.size()", tokens.size(),
              "must equal the packed length " + std::to_string(rows));
    check_state(init, count, "initial state");
    check_state(final, count, "final state");
    std::vector<std::int64_t> first(static_cast<std::size_t>(count), 0);
    if (init != nullptr) {
      for (std::int64_t s = 0; s < count; ++s) {
        first[static_cast<std::size_t>(s)] = static_cast<std::int64_t>(init->pos[s]);
      }
    }
    std::size_t const n = layers_.size();
    k.seqs = seqs;
    k.tokens.assign(tokens.begin(), tokens.end());
    k.u.resize(2 * n + 1);
    k.normed.resize(2 * n);
    k.rstd.resize(2 * n);
    k.attn.resize(n);
    k.ff.resize(n);
    for (auto& u : k.u) {
      u.resize({rows, d});
    }
    embedding_.forward(be, tokens.data(), rows, k.u[0].data());
    for (std::size_t i = 0; i < n; ++i) {
      auto const& l = layers_[i];
      std::size_t const a = 2 * i, m = 2 * i + 1;
      norm(be, l.norm1, k, a);
      l.attn.forward(be, seqs, k.normed[a].data(), k.u[a + 1].data(), k.attn[i], first,
                     init != nullptr ? &init->layers[i] : nullptr, final != nullptr ? &final->layers[i] : nullptr);
      add_residual(be, k.u[a], k.u[a + 1]);
      norm(be, l.norm2, k, m);
      l.ff.forward(be, k.normed[m].data(), k.u[m + 1].data(), k.ff[i], rows);
      add_residual(be, k.u[m], k.u[m + 1]);
    }
    k.final_normed.resize({rows, d});
    k.final_rstd.resize({rows});
    norm_f_.forward(be, k.u[2 * n].data(), k.final_normed.data(), k.final_rstd.data(), rows);
    head_.forward(be, k.final_normed.data(), d, logits, cfg_.vocab, rows);
    if (final != nullptr) {
      for (std::int64_t s = 0; s < count; ++s) {
        final->pos[s] = static_cast<T>(first[static_cast<std::size_t>(s)] + seqs.length(s));
      }
    }
  }

  //! Accumulates every parameter gradient from dlogits: [T, V]. Forward must have started every sequence at
  //! position 0; no gradient flows to or from states (init, d_final and d_init must be null).
  void backward(backends::host const& be, T const* dlogits, cache& k, state const* init = nullptr,
                state const* d_final = nullptr, state* d_init = nullptr) {
    check(init == nullptr && d_final == nullptr && d_init == nullptr,
          "transformer_lm backward: gradients through attention states are not supported");
    std::int64_t const rows = k.seqs.tokens(), d = cfg_.d_model;
    std::size_t const n = layers_.size();
    k.d_normed.resize({rows, d});  // [T, D]
    k.du.resize({rows, d});        // [T, D]: gradient of the residual stream
    head_.backward(be, k.final_normed.data(), d, dlogits, cfg_.vocab, k.d_normed.data(), d, rows);
    norm_f_.backward(be, k.u[2 * n].data(), k.final_rstd.data(), k.d_normed.data(), k.du.data(), rows, false);
    for (std::size_t i = n; i-- > 0;) {
      auto& l = layers_[i];
      std::size_t const a = 2 * i, m = 2 * i + 1;
      l.ff.backward(be, k.normed[m].data(), k.du.data(), k.d_normed.data(), false, k.ff[i], rows);
      l.norm2.backward(be, k.u[m].data(), k.rstd[m].data(), k.d_normed.data(), k.du.data(), rows, true);
      l.attn.backward(be, k.seqs, k.normed[a].data(), k.du.data(), k.d_normed.data(), false, k.attn[i]);
      l.norm1.backward(be, k.u[a].data(), k.rstd[a].data(), k.d_normed.data(), k.du.data(), rows, true);
    }
    embedding_.backward(k.tokens.data(), rows, k.du.data());
  }

  //! One token for each of B sequences: tokens: [B] -> logits: [B, V]; s advances in place (rows [0, B) of it).
  void step(backends::host const& be, std::span<const std::int32_t> tokens, T* logits, state& s,
            step_workspace& w) const {
    auto const batch = static_cast<std::int64_t>(tokens.size());
    std::int64_t const d = cfg_.d_model, v = cfg_.vocab, win = cfg_.window;
    embedding_.check_tokens(tokens.data(), batch);
    check_arg(s.pos.dim(0) >= batch, "state rows", s.pos.dim(0),
              "must hold the " + std::to_string(batch) + " rows stepped");
    std::int64_t const scratch = std::max(layers_.front().attn.step_scratch_size(), cfg_.d_ff);
    std::int64_t const width = 3 * d + scratch;
    w.rows.resize({batch, width});
    be.parallel_for(batch, [&](std::int64_t r) {
      T* u = w.rows.data() + r * width;  // [D]: the residual stream
      T* normed = u + d;                 // [D]
      T* out = normed + d;               // [D]
      T* sc = out + d;
      auto const p = static_cast<std::int64_t>(s.pos[r]);
      std::int32_t const tok = tokens[static_cast<std::size_t>(r)];
      std::copy_n(embedding_.weight.value.data() + std::int64_t{tok} * d, d, u);
      for (std::size_t i = 0; i < layers_.size(); ++i) {
        auto const& l = layers_[i];
        l.norm1.apply_row(u, normed);
        l.attn.step_row(normed, out, p, s.layers[i].k.data() + r * win * d, s.layers[i].v.data() + r * win * d, sc);
        for (std::int64_t c = 0; c < d; ++c) {
          u[c] += out[c];
        }
        l.norm2.apply_row(u, normed);
        l.ff.step_row(normed, out, sc);
        for (std::int64_t c = 0; c < d; ++c) {
          u[c] += out[c];
        }
      }
      norm_f_.apply_row(u, normed);
      layers::matvec(head_.weight.value.data(), v, d, normed, logits + r * v);
      s.pos[r] = static_cast<T>(p + 1);
    });
  }

private:
  void norm(backends::host const& be, layers::rmsnorm<T> const& nm, cache& k, std::size_t i) const {
    std::int64_t const rows = k.seqs.tokens();
    k.normed[i].resize({rows, cfg_.d_model});
    k.rstd[i].resize({rows});
    nm.forward(be, k.u[i].data(), k.normed[i].data(), k.rstd[i].data(), rows);
  }

  static void add_residual(backends::host const& be, tensor<T> const& from, tensor<T>& to) {
    T const* f = from.data();
    T* t = to.data();
    be.parallel_for(to.size(), [&](std::int64_t i) { t[i] += f[i]; });
  }

  void check_state(state const* s, std::int64_t count, char const* what) const {
    if (s == nullptr) {
      return;
    }
    check_arg(s->layers.size() == layers_.size() && s->pos.size() == count, what, s->pos.size(),
              "must hold one row per sequence in every layer: make it with make_state(" + std::to_string(count) + ")");
    for (auto const& l : s->layers) {
      check_arg(l.k.size() == count * cfg_.window * cfg_.d_model, what, l.k.size(),
                "must hold one row per sequence: make it with make_state(" + std::to_string(count) + ")");
    }
  }

  transformer_config cfg_;
  layers::embedding<T> embedding_;
  std::vector<layer> layers_;
  layers::rmsnorm<T> norm_f_;
  layers::linear<T> head_;
};

}  // namespace ssmlen::models
