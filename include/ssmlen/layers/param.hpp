// SPDX-License-Identifier: Apache-2.0
//! @file param.hpp
//! A trainable parameter: its value, its gradient (accumulated with +=), and
//! whether the optimizer applies weight decay to it (matrices and embeddings
//! only; never norms, biases, A_log or D).
#pragma once

#include <ssmlen/core/tensor.hpp>

#include <string>

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

}  // namespace ssmlen::layers
