// SPDX-License-Identifier: Apache-2.0
//! @file mamba_lm.hpp
//! A Mamba language model, laid out as mamba_ssm's MambaLMHeadModel:
//!   embedding -> N x (u + mixer(rmsnorm(u))) -> rmsnorm -> LM head (tied to the embedding by default)
//! Training runs `forward`/`backward` over a packed batch of sequences with the
//! scan policy `Scan`; inference runs `step`, O(1) per token, on a `state`.
//! Both can start from and return recurrent states.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/embedding.hpp>
#include <ssmlen/layers/linear.hpp>
#include <ssmlen/layers/mamba_block.hpp>
#include <ssmlen/layers/rmsnorm.hpp>
#include <ssmlen/models/mamba_config.hpp>
#include <ssmlen/ops/gemm.hpp>
#include <ssmlen/scan/policy.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::models {

template <class T, scan::policy Scan = scan::recurrent>
class mamba_lm {
public:
  using value_type = T;
  using scan_policy = Scan;
  using block_type = layers::mamba_block<T, Scan>;
  using block_state = layers::mamba_block_state<T>;

  struct layer {
    layers::rmsnorm<T> norm;
    block_type mixer;
  };

  //! Recurrent state of every layer for a batch of sequences.
  struct state {
    std::vector<block_state> layers;

    //! Every tensor of the state, each [B, ...]: what a rollout copies when it moves a sequence's row.
    [[nodiscard]] std::vector<tensor<T> const*> tensors() const {
      std::vector<tensor<T> const*> out;
      for (auto const& l : layers) {
        out.insert(out.end(), {&l.conv, &l.ssm});
      }
      return out;
    }
    [[nodiscard]] std::vector<tensor<T>*> tensors() {
      std::vector<tensor<T>*> out;
      for (auto& l : layers) {
        out.insert(out.end(), {&l.conv, &l.ssm});
      }
      return out;
    }
  };

  //! Everything forward keeps for backward.
  struct cache {
    sequences seqs;
    std::vector<std::int32_t> tokens;                // [T]
    std::vector<tensor<T>> u;                        // n_layers + 1 x [T, D]: residual stream; u[0] = embeddings
    std::vector<tensor<T>> normed, rstd;             // n_layers x [T, D], [T]
    std::vector<typename block_type::cache> blocks;  // n_layers
    tensor<T> final_normed, final_rstd;              // [T, D], [T]
    tensor<T> dnormed, du;                           // backward's buffers, [T, D] each
  };

  //! Reusable buffers for step().
  struct step_workspace {
    std::vector<tensor<T>> a;  // n_layers x [N, ED]: -exp(A_log), made once per step call
    tensor<T> rows;            // [B, 3D + block scratch]: each row's residual, normed input, block output, scratch
  };

  explicit mamba_lm(mamba_config const& cfg, std::uint64_t seed = 0) : cfg_(cfg) {
    cfg_.validate();
    cfg_.dt_rank = cfg_.resolved_dt_rank();
    std::int64_t const d = cfg_.d_model, ed = cfg_.d_inner();
    embedding_ = layers::embedding<T>(cfg_.vocab, d);
    for (std::int64_t i = 0; i < cfg_.n_layers; ++i) {
      layers_.push_back({layers::rmsnorm<T>(d, cfg_.norm_eps),
                         block_type(d, ed, cfg_.d_state, cfg_.d_conv, cfg_.resolved_dt_rank())});
      layers_.back().mixer.ssm.delta_min = static_cast<T>(cfg_.delta_min);
    }
    norm_f_ = layers::rmsnorm<T>(d, cfg_.norm_eps);
    if (!cfg_.tie_embeddings) {
      lm_head_ = layers::linear<T>(d, cfg_.vocab, false);
    }
    init(seed);
  }

  //! Mamba's initialization (embedding N(0, 0.02), dt bias log-uniform, A_log = log(1..N), out_proj / sqrt(n_layers)).
  void init(std::uint64_t seed) {
    rng const root(seed);
    rng g = root.fork(0);
    embedding_.init_normal(g, 0.02);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      rng gl = root.fork(1 + i);
      layers_[i].mixer.init_mamba(gl, cfg_.n_layers);
    }
    if (!cfg_.tie_embeddings) {
      rng gh = root.fork(1 + layers_.size());
      lm_head_.init_default(gh);
    }
  }

  [[nodiscard]] mamba_config const& config() const { return cfg_; }

  //! The configuration as a checkpoint stores it (models/checkpoint.hpp).
  [[nodiscard]] nlohmann::json config_json() const { return to_json(cfg_); }
  static mamba_config config_from_json(nlohmann::json const& j) { return mamba_config_from_json(j); }

  //! Every parameter with its mamba_ssm name, in a fixed order.
  std::vector<layers::named_param<T>> named_params() {
    std::vector<layers::named_param<T>> out;
    auto add = [&](std::string name, layers::param<T>& p) { out.push_back({std::move(name), &p, p.value.shape()}); };
    add("backbone.embedding.weight", embedding_.weight);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      std::string const pre = "backbone.layers." + std::to_string(i) + ".";
      auto& m = layers_[i].mixer;
      add(pre + "norm.weight", layers_[i].norm.weight);
      add(pre + "mixer.in_proj.weight", m.in_proj.weight);
      out.push_back({pre + "mixer.conv1d.weight", &m.conv.weight, extents{m.d_inner, 1, m.conv.width}});
      add(pre + "mixer.conv1d.bias", m.conv.bias);
      add(pre + "mixer.x_proj.weight", m.ssm.x_proj.weight);
      add(pre + "mixer.dt_proj.weight", m.ssm.dt_proj.weight);
      add(pre + "mixer.dt_proj.bias", m.ssm.dt_proj.bias);
      add(pre + "mixer.A_log", m.ssm.a_log);
      add(pre + "mixer.D", m.ssm.d);
      add(pre + "mixer.out_proj.weight", m.out_proj.weight);
    }
    add("backbone.norm_f.weight", norm_f_.weight);
    if (!cfg_.tie_embeddings) {
      add("lm_head.weight", lm_head_.weight);
    }
    return out;
  }

  [[nodiscard]] std::int64_t n_params() { return layers::total_size(named_params()); }
  void zero_grad() { layers::zero_grads(named_params()); }

  [[nodiscard]] state make_state(std::int64_t batch) const {
    state s;
    for (auto const& l : layers_) {
      s.layers.push_back(l.mixer.make_state(batch));
    }
    return s;
  }

  //! tokens: [T] packed as `seqs` -> logits: [T, V]. init (nullable): starting states; final (nullable): filled.
  void forward(backends::host const& be, std::span<const std::int32_t> tokens, sequences const& seqs, T* logits,
               cache& k, state const* init = nullptr, state* final = nullptr) const {
    std::int64_t const rows = seqs.tokens(), d = cfg_.d_model;
    check_arg(static_cast<std::int64_t>(tokens.size()) == rows, "tokens.size()", tokens.size(),
              "must equal the packed length " + std::to_string(rows));
    std::size_t const n = layers_.size();
    k.seqs = seqs;
    k.tokens.assign(tokens.begin(), tokens.end());
    k.u.resize(n + 1);
    k.normed.resize(n);
    k.rstd.resize(n);
    k.blocks.resize(n);
    k.u[0].resize({rows, d});
    embedding_.forward(be, tokens.data(), rows, k.u[0].data());
    for (std::size_t i = 0; i < n; ++i) {
      k.normed[i].resize({rows, d});
      k.rstd[i].resize({rows});
      k.u[i + 1].resize({rows, d});
      layers_[i].norm.forward(be, k.u[i].data(), k.normed[i].data(), k.rstd[i].data(), rows);
      layers_[i].mixer.forward(be, seqs, k.normed[i].data(), k.u[i + 1].data(), k.blocks[i],
                               init ? &init->layers[i] : nullptr, final ? &final->layers[i] : nullptr);
      T* next = k.u[i + 1].data();
      T const* prev = k.u[i].data();
      be.parallel_for(rows, [&](std::int64_t r) {  // residual
        for (std::int64_t c = 0; c < d; ++c) {
          next[r * d + c] += prev[r * d + c];
        }
      });
    }
    k.final_normed.resize({rows, d});
    k.final_rstd.resize({rows});
    norm_f_.forward(be, k.u[n].data(), k.final_normed.data(), k.final_rstd.data(), rows);
    head_forward(be, k.final_normed.data(), logits, rows);
  }

  //! Accumulates every parameter gradient from dlogits: [T, V]. d_final (nullable): gradient at the final
  //! states; d_init (nullable, made with make_state): filled with the gradient of the initial states.
  void backward(backends::host const& be, T const* dlogits, cache& k, state const* init = nullptr,
                state const* d_final = nullptr, state* d_init = nullptr) {
    std::int64_t const rows = k.seqs.tokens(), d = cfg_.d_model;
    std::size_t const n = layers_.size();
    auto& dnormed = k.dnormed;
    auto& du = k.du;            // gradient of the residual stream
    dnormed.resize({rows, d});  // [T, D]
    du.resize({rows, d});       // [T, D]
    head_backward(be, k.final_normed.data(), dlogits, dnormed.data(), rows);
    norm_f_.backward(be, k.u[n].data(), k.final_rstd.data(), dnormed.data(), du.data(), rows, false);
    for (std::size_t i = n; i-- > 0;) {
      layers_[i].mixer.backward(be, k.seqs, k.normed[i].data(), du.data(), dnormed.data(), false, k.blocks[i],
                                init ? &init->layers[i] : nullptr, d_final ? &d_final->layers[i] : nullptr,
                                d_init ? &d_init->layers[i] : nullptr);
      layers_[i].norm.backward(be, k.u[i].data(), k.rstd[i].data(), dnormed.data(), du.data(), rows, true);
    }
    embedding_.backward(k.tokens.data(), rows, du.data());
  }

  //! One token for each of B sequences: tokens: [B] -> logits: [B, V]; s advances in place (rows [0, B) of it).
  //! Rows are independent, so the whole model runs for each row inside one parallel loop.
  void step(backends::host const& be, std::span<const std::int32_t> tokens, T* logits, state& s,
            step_workspace& w) const {
    auto const batch = static_cast<std::int64_t>(tokens.size());
    std::int64_t const d = cfg_.d_model, v = cfg_.vocab;
    embedding_.check_tokens(tokens.data(), batch);
    w.a.resize(layers_.size());
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      w.a[i].resize({cfg_.d_state, cfg_.d_inner()});
      layers_[i].mixer.ssm.make_a(w.a[i].data());
    }
    std::int64_t const width = 3 * d + layers_.front().mixer.step_scratch_size();
    w.rows.resize({batch, width});
    T const* head = cfg_.tie_embeddings ? embedding_.weight.value.data() : lm_head_.weight.value.data();
    be.parallel_for(batch, [&](std::int64_t r) {
      T* u = w.rows.data() + r * width;  // [D]
      T* normed = u + d;                 // [D]
      T* out = normed + d;               // [D]
      T* scratch = out + d;
      std::copy(embedding_.weight.value.data() + std::int64_t{tokens[static_cast<std::size_t>(r)]} * d,
                embedding_.weight.value.data() + (std::int64_t{tokens[static_cast<std::size_t>(r)]} + 1) * d, u);
      for (std::size_t i = 0; i < layers_.size(); ++i) {
        auto& ls = s.layers[i];
        layers_[i].norm.apply_row(u, normed);
        layers_[i].mixer.step_row(normed, out, ls.conv.data() + r * (ls.conv.size() / ls.conv.dim(0)),
                                  ls.ssm.data() + r * (ls.ssm.size() / ls.ssm.dim(0)), w.a[i].data(), scratch);
        for (std::int64_t c = 0; c < d; ++c) {
          u[c] += out[c];
        }
      }
      norm_f_.apply_row(u, normed);
      layers::matvec(head, v, d, normed, logits + r * v);
    });
  }

  [[nodiscard]] std::vector<layer> const& layers() const { return layers_; }

private:
  void head_forward(backends::host const& be, T const* h, T* logits, std::int64_t rows) const {
    if (cfg_.tie_embeddings) {
      ops::gemm(be, ops::trans::n, ops::trans::t, rows, cfg_.vocab, cfg_.d_model, T(1), h, cfg_.d_model,
                embedding_.weight.value.data(), cfg_.d_model, T(0), logits, cfg_.vocab);
    } else {
      lm_head_.forward(be, h, cfg_.d_model, logits, cfg_.vocab, rows);
    }
  }

  void head_backward(backends::host const& be, T const* h, T const* dlogits, T* dh, std::int64_t rows) {
    std::int64_t const v = cfg_.vocab, d = cfg_.d_model;
    if (cfg_.tie_embeddings) {
      ops::gemm(be, ops::trans::t, ops::trans::n, v, d, rows, T(1), dlogits, v, h, d, T(1),
                embedding_.weight.grad.data(), d);
      ops::gemm(be, ops::trans::n, ops::trans::n, rows, d, v, T(1), dlogits, v, embedding_.weight.value.data(), d, T(0),
                dh, d);
    } else {
      lm_head_.backward(be, h, d, dlogits, v, dh, d, rows);
    }
  }

  mamba_config cfg_;
  layers::embedding<T> embedding_;
  std::vector<layer> layers_;
  layers::rmsnorm<T> norm_f_;
  layers::linear<T> lm_head_;
};

}  // namespace ssmlen::models
