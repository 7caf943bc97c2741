// SPDX-License-Identifier: Apache-2.0
//! @file embedding.hpp
//! Token embedding: row lookup forward, scatter-add backward (in token order,
//! so the gradient is deterministic).
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/layers/param.hpp>

#include <cstdint>
#include <cstring>

namespace ssmlen::layers {

template <class T>
struct embedding {
  std::int64_t vocab = 0, dim = 0;
  param<T> weight;  // [V, D]

  embedding() = default;
  embedding(std::int64_t vocab_size, std::int64_t d) : vocab(vocab_size), dim(d), weight({vocab_size, d}, true) {
    check_arg(vocab_size > 0, "vocab", vocab_size, "must be positive");
    check_arg(d > 0, "d_model", d, "must be positive");
  }

  void init_normal(rng& g, double stddev) {
    for (auto& w : weight.value) {
      w = static_cast<T>(stddev * g.normal());
    }
  }

  void check_tokens(std::int32_t const* tokens, std::int64_t n) const {
    for (std::int64_t t = 0; t < n; ++t) {
      check_arg(tokens[t] >= 0 && tokens[t] < vocab, "token id", tokens[t],
                "must be in [0, vocab = " + std::to_string(vocab) + ")");
    }
  }

  //! y[t] = E[tokens[t]];  tokens: [T] -> y: [T, D]
  void forward(backends::host const& be, std::int32_t const* tokens, std::int64_t n, T* y) const {
    check_tokens(tokens, n);
    be.parallel_for(n, [&](std::int64_t t) {
      std::memcpy(y + t * dim, weight.value.data() + std::int64_t{tokens[t]} * dim, sizeof(T) * dim);
    });
  }

  //! dE[tokens[t]] += dy[t]
  void backward(std::int32_t const* tokens, std::int64_t n, T const* dy) {
    for (std::int64_t t = 0; t < n; ++t) {
      T* g = weight.grad.data() + std::int64_t{tokens[t]} * dim;
      for (std::int64_t d = 0; d < dim; ++d) {
        g[d] += dy[t * dim + d];
      }
    }
  }
};

}  // namespace ssmlen::layers
