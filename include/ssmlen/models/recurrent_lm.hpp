// SPDX-License-Identifier: Apache-2.0
//! @file recurrent_lm.hpp
//! The paper's recurrent baselines as language models: embedding -> N stacked recurrent layers (LSTM or GRU
//! cells) -> linear head, the layout of a PyTorch nn.Embedding + nn.LSTM/nn.GRU + nn.Linear model. Like
//! mamba_lm it trains with `forward`/`backward` over packed sequences (starting from and returning recurrent
//! states) and rolls out with `step`, O(1) per token, so the trainer, the rollouts and the length sweeps take
//! either model unchanged.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/core/tensor.hpp>
#include <ssmlen/layers/embedding.hpp>
#include <ssmlen/layers/gru.hpp>
#include <ssmlen/layers/linear.hpp>
#include <ssmlen/layers/lstm.hpp>
#include <ssmlen/layers/recurrent.hpp>
#include <ssmlen/models/config_json.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::models {

struct recurrent_config {
  std::int64_t vocab = 0;
  std::int64_t hidden = 128;  // the embedding width too
  std::int64_t n_layers = 2;

  void validate() const {
    check_arg(vocab > 0, "vocab", vocab, "must be positive");
    check_arg(hidden > 0 && hidden <= (1 << 16), "hidden", hidden, "must be in [1, 65536]");
    check_arg(n_layers > 0 && n_layers <= 256, "n_layers", n_layers, "must be in [1, 256]");
  }
};

template <class T, layers::recurrent_cell Cell>
class recurrent_lm {
public:
  using value_type = T;
  using cell_type = Cell;
  using layer_type = layers::recurrent<T, Cell>;

  //! Recurrent state of every layer for a batch of sequences.
  struct state {
    std::vector<tensor<T>> layers;  // n_layers x [B, S·H]

    [[nodiscard]] std::vector<tensor<T> const*> tensors() const {
      std::vector<tensor<T> const*> out;
      for (auto const& l : layers) {
        out.push_back(&l);
      }
      return out;
    }
    [[nodiscard]] std::vector<tensor<T>*> tensors() {
      std::vector<tensor<T>*> out;
      for (auto& l : layers) {
        out.push_back(&l);
      }
      return out;
    }
  };

  //! Everything forward keeps for backward.
  struct cache {
    sequences seqs;
    std::vector<std::int32_t> tokens;                // [T]
    std::vector<tensor<T>> acts;                     // n_layers + 1 x [T, H]: acts[0] the embeddings, acts[i + 1]
                                                     // layer i's output
    std::vector<typename layer_type::cache> layers;  // n_layers
    tensor<T> d_act, d_below;                        // backward's buffers, [T, H] each
  };

  //! Reusable buffers for step().
  struct step_workspace {
    tensor<T> rows;  // [B, H + layer scratch]
  };

  explicit recurrent_lm(recurrent_config const& cfg, std::uint64_t seed = 0) : cfg_(cfg) {
    cfg_.validate();
    embedding_ = layers::embedding<T>(cfg_.vocab, cfg_.hidden);
    for (std::int64_t i = 0; i < cfg_.n_layers; ++i) {
      layers_.emplace_back(cfg_.hidden, cfg_.hidden);
    }
    head_ = layers::linear<T>(cfg_.hidden, cfg_.vocab, true);
    init(seed);
  }

  //! PyTorch's defaults: embedding N(0, 1), recurrent weights and biases U(±1/sqrt(H)), head U(±1/sqrt(H)).
  void init(std::uint64_t seed) {
    rng const root(seed);
    rng g = root.fork(0);
    embedding_.init_normal(g, 1.0);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      rng gl = root.fork(1 + i);
      layers_[i].init_default(gl);
    }
    rng gh = root.fork(1 + layers_.size());
    head_.init_default(gh);
  }

  [[nodiscard]] recurrent_config const& config() const { return cfg_; }

  //! The configuration as a checkpoint stores it, with the architecture ("lstm", "gru") named.
  [[nodiscard]] nlohmann::json config_json() const {
    return {{"architecture", Cell::name}, {"vocab", cfg_.vocab}, {"hidden", cfg_.hidden}, {"n_layers", cfg_.n_layers}};
  }

  static recurrent_config config_from_json(nlohmann::json const& j) {
    recurrent_config c;
    detail::read_config(j, Cell::name, {{"vocab", &c.vocab}, {"hidden", &c.hidden}, {"n_layers", &c.n_layers}});
    c.validate();
    return c;
  }

  //! Every parameter with its PyTorch name (nn.Embedding, nn.LSTM / nn.GRU as `rnn`, nn.Linear as `lm_head`).
  std::vector<layers::named_param<T>> named_params() {
    std::vector<layers::named_param<T>> out;
    auto add = [&](std::string name, layers::param<T>& p) { out.push_back({std::move(name), &p, p.value.shape()}); };
    add("embedding.weight", embedding_.weight);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      std::string const l = "_l" + std::to_string(i);
      add("rnn.weight_ih" + l, layers_[i].ih.weight);
      add("rnn.weight_hh" + l, layers_[i].hh.weight);
      add("rnn.bias_ih" + l, layers_[i].ih.bias);
      add("rnn.bias_hh" + l, layers_[i].hh.bias);
    }
    add("lm_head.weight", head_.weight);
    add("lm_head.bias", head_.bias);
    return out;
  }

  [[nodiscard]] std::int64_t n_params() { return layers::total_size(named_params()); }
  void zero_grad() { layers::zero_grads(named_params()); }

  [[nodiscard]] state make_state(std::int64_t batch) const {
    check_arg(batch >= 0, "batch", batch, "must not be negative");
    state s;
    for (auto const& l : layers_) {
      s.layers.emplace_back(extents{batch, l.state_size()});
    }
    return s;
  }

  //! tokens: [T] packed as `seqs` -> logits: [T, V]. init (nullable): starting states; final (nullable): filled.
  //! Both hold one row per sequence (make_state(seqs.count())).
  void forward(backends::host const& be, std::span<const std::int32_t> tokens, sequences const& seqs, T* logits,
               cache& k, state const* init = nullptr, state* final = nullptr) const {
    std::int64_t const rows = seqs.tokens(), h = cfg_.hidden;
    check_arg(static_cast<std::int64_t>(tokens.size()) == rows, "tokens.size()", tokens.size(),
              "must equal the packed length " + std::to_string(rows));
    check_state(init, seqs.count(), "initial state");
    check_state(final, seqs.count(), "final state");
    std::size_t const n = layers_.size();
    k.seqs = seqs;
    k.tokens.assign(tokens.begin(), tokens.end());
    k.acts.resize(n + 1);
    k.layers.resize(n);
    for (auto& a : k.acts) {
      a.resize({rows, h});
    }
    embedding_.forward(be, tokens.data(), rows, k.acts[0].data());
    for (std::size_t i = 0; i < n; ++i) {
      layers_[i].forward(be, seqs, k.acts[i].data(), k.acts[i + 1].data(), k.layers[i],
                         init != nullptr ? init->layers[i].data() : nullptr,
                         final != nullptr ? final->layers[i].data() : nullptr);
    }
    head_.forward(be, k.acts[n].data(), h, logits, cfg_.vocab, rows);
  }

  //! Accumulates every parameter gradient from dlogits: [T, V]. d_final (nullable): gradient at the final
  //! states; d_init (nullable, made with make_state): filled with the gradient of the initial states.
  void backward(backends::host const& be, T const* dlogits, cache& k, state const* init = nullptr,
                state const* d_final = nullptr, state* d_init = nullptr) {
    std::int64_t const rows = k.seqs.tokens(), h = cfg_.hidden;
    check_state(init, k.seqs.count(), "initial state");
    check_state(d_final, k.seqs.count(), "final state's gradient");
    check_state(d_init, k.seqs.count(), "initial state's gradient");
    std::size_t const n = layers_.size();
    k.d_act.resize({rows, h});    // [T, H]: ∂L/∂(output of the layer being walked)
    k.d_below.resize({rows, h});  // [T, H]: ∂L/∂(its input)
    head_.backward(be, k.acts[n].data(), h, dlogits, cfg_.vocab, k.d_act.data(), h, rows);
    for (std::size_t i = n; i-- > 0;) {
      layers_[i].backward(be, k.seqs, k.acts[i].data(), k.d_act.data(), k.d_below.data(), false, k.layers[i],
                          init != nullptr ? init->layers[i].data() : nullptr,
                          d_final != nullptr ? d_final->layers[i].data() : nullptr,
                          d_init != nullptr ? d_init->layers[i].data() : nullptr);
      std::swap(k.d_act, k.d_below);
    }
    embedding_.backward(k.tokens.data(), rows, k.d_act.data());
  }

  //! One token for each of B sequences: tokens: [B] -> logits: [B, V]; s advances in place (rows [0, B) of it).
  void step(backends::host const& be, std::span<const std::int32_t> tokens, T* logits, state& s,
            step_workspace& w) const {
    auto const batch = static_cast<std::int64_t>(tokens.size());
    std::int64_t const h = cfg_.hidden, v = cfg_.vocab;
    embedding_.check_tokens(tokens.data(), batch);
    for (auto const& l : s.layers) {
      check_arg(l.dim(0) >= batch, "state rows", l.dim(0), "must hold the " + std::to_string(batch) + " rows stepped");
    }
    std::int64_t const width = 2 * h + layers_.front().step_scratch_size();
    w.rows.resize({batch, width});
    be.parallel_for(batch, [&](std::int64_t r) {
      T* x = w.rows.data() + r * width;  // [H]: the layer's input
      T* y = x + h;                      // [H]: its output
      T* scratch = y + h;
      std::int32_t const tok = tokens[static_cast<std::size_t>(r)];
      std::copy_n(embedding_.weight.value.data() + std::int64_t{tok} * h, h, x);
      for (std::size_t i = 0; i < layers_.size(); ++i) {
        std::int64_t const st = layers_[i].state_size();
        layers_[i].step_row(x, y, s.layers[i].data() + r * st, scratch);
        std::swap(x, y);
      }
      T* out = logits + r * v;
      layers::matvec(head_.weight.value.data(), v, h, x, out);
      for (std::int64_t o = 0; o < v; ++o) {
        out[o] += head_.bias.value[o];
      }
    });
  }

  [[nodiscard]] std::vector<layer_type> const& layers() const { return layers_; }

private:
  void check_state(state const* s, std::int64_t count, char const* what) const {
    if (s == nullptr) {
      return;
    }
    check_arg(s->layers.size() == layers_.size(), what, s->layers.size(),
              "must have one tensor per layer (" + std::to_string(layers_.size()) + "): make it with make_state");
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      check_arg(s->layers[i].size() == count * layers_[i].state_size(), what, s->layers[i].size(),
                "must hold one row per sequence: make it with make_state(" + std::to_string(count) + ")");
    }
  }

  recurrent_config cfg_;
  layers::embedding<T> embedding_;
  std::vector<layer_type> layers_;
  layers::linear<T> head_;
};

template <class T>
using lstm_lm = recurrent_lm<T, layers::lstm_cell>;
template <class T>
using gru_lm = recurrent_lm<T, layers::gru_cell>;

}  // namespace ssmlen::models
