// SPDX-License-Identifier: Apache-2.0
//! @file param.hpp
//! A trainable parameter: its value, its gradient (accumulated with +=), and
//! whether the optimizer applies weight decay to it (matrices and embeddings
//! only; never norms, biases, A_log or D).
#pragma once

#include <ssmlen/core/tensor.hpp>

#include <string>
#include <vector>

namespace ssmlen::layers {

template <class T>
struct param {
  tensor<T> value;
  tensor<T> grad;
  bool decay = false;

  param() = default;
  param(extents shape, bool weight_decay) : value(shape), grad(shape), decay(weight_decay) {}
  void zero_grad() { grad.fill(T(0)); }
  [[nodiscard]] bool empty() const { return value.size() == 0; }
};

//! A parameter with its checkpoint name (mamba_ssm / Hugging Face spelling) and
//! the shape it has in a checkpoint (conv1d.weight is [C, 1, K] there, [C, K] here).
template <class T>
struct named_param {
  std::string name;
  param<T>* p;
  extents file_shape;
};

//! The number of values in a model's parameters.
template <class T>
std::int64_t total_size(std::vector<named_param<T>> const& params) {
  std::int64_t n = 0;
  for (auto const& p : params) {
    n += p.p->value.size();
  }
  return n;
}

//! Zeroes every parameter's gradient (a model's zero_grad).
template <class T>
void zero_grads(std::vector<named_param<T>> const& params) {
  for (auto const& p : params) {
    p.p->zero_grad();
  }
}

}  // namespace ssmlen::layers
