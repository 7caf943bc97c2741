// SPDX-License-Identifier: Apache-2.0
//! @file device_params.cuh
//! A model's parameters on a CUDA device: values and gradients in two flat float32 buffers, one tensor after the
//! other in the order of the host model's named_params(), each starting on a 256-byte boundary (vector loads stay
//! aligned). Tensors are found by their mamba_ssm names; values upload from the host parameters, values and
//! gradients download back into them; the list of AdamW tensors points into moment buffers of the same layout, and
//! those moments move to and from a host optimizer's tensors (training checkpoints). For bf16 GEMMs a third flat
//! buffer holds the values rounded to bfloat16 at the same offsets, always current: upload() rounds the values it
//! copies, and AdamW writes each value's rounding as it updates it (adamw_tensor::rounded), so neither a forward nor
//! a recurrent step (nor a captured graph of one) has to remake it.
#pragma once

#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/tensor.hpp>
#include <ssmlen/layers/param.hpp>
#include <ssmlen/train/cuda/adamw.cuh>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ssmlen::models::cuda {

class device_params {
public:
  //! One tensor: where it starts in the flat buffers (in floats) and how many elements it has.
  struct entry {
    std::string name;
    std::int64_t offset = 0, size = 0;
    bool decay = false;
  };

  device_params() = default;

  //! Lays out (and allocates, unset) one device tensor per host parameter; `rounded`: keep the bf16 copy too.
  explicit device_params(std::vector<layers::named_param<float>> const& host, bool rounded = false) {
    constexpr std::int64_t align = 64;  // floats: 256 bytes
    std::int64_t offset = 0;
    for (auto const& p : host) {
      std::int64_t const size = p.p->value.size();
      entries_.push_back({p.name, offset, size, p.p->decay});
      offset += (size + align - 1) / align * align;
    }
    values_ = backends::device_buffer<float>(static_cast<std::size_t>(offset));
    grads_ = backends::device_buffer<float>(static_cast<std::size_t>(offset));
    if (rounded) {
      rounded_ = backends::device_buffer<bfloat16>(static_cast<std::size_t>(offset));
    }
  }

  [[nodiscard]] std::vector<entry> const& entries() const { return entries_; }
  //! Floats in each flat buffer, padding included (the size of matching moment buffers).
  [[nodiscard]] std::size_t capacity() const { return values_.size(); }
  //! Parameters, padding excluded.
  [[nodiscard]] std::int64_t elements() const {
    std::int64_t n = 0;
    for (auto const& e : entries_) {
      n += e.size;
    }
    return n;
  }

  [[nodiscard]] entry const& find(std::string_view name) const {
    for (auto const& e : entries_) {
      if (e.name == name) {
        return e;
      }
    }
    throw error("device parameters: no tensor named '" + std::string(name) + "'");
  }
  [[nodiscard]] float* value(std::string_view name) { return values_.data() + find(name).offset; }
  [[nodiscard]] float* grad(std::string_view name) { return grads_.data() + find(name).offset; }
  [[nodiscard]] float* values() { return values_.data(); }
  [[nodiscard]] float* grads() { return grads_.data(); }

  //! Whether the bf16 copy is kept (constructed with `rounded`).
  [[nodiscard]] bool has_rounded() const { return rounded_.size() != 0; }
  //! The values rounded to bfloat16, at the same offsets; null without the copy. Writing through value() or
  //! values() leaves it stale: change values by upload() or an AdamW step.
  [[nodiscard]] bfloat16 const* rounded(std::string_view name) const {
    return has_rounded() ? rounded_.data() + find(name).offset : nullptr;
  }

  //! Copies the host values to the device on `stream` (the host memory may be reused on return).
  void upload(std::vector<layers::named_param<float>> const& host, cudaStream_t stream) {
    check_layout(host);
    // Zeros in the padding between tensors too, so that whole-buffer passes (bf16 rounding) read defined values.
    backends::cuda_check(cudaMemsetAsync(values_.data(), 0, values_.bytes(), stream), "cudaMemsetAsync (parameters)");
    for (std::size_t i = 0; i < host.size(); ++i) {
      copy(values_.data() + entries_[i].offset, host[i].p->value.data(), entries_[i].size, cudaMemcpyHostToDevice,
           stream);
    }
    if (has_rounded()) {
      auto const n = static_cast<std::int64_t>(values_.size());
      backends::round_to_bf16(backends::cuda{stream}, 1, n, values_.data(), n, rounded_.data());
    }
    backends::cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (parameter upload)");
  }

  //! Copies the device values and, when `grads`, the gradients into the host parameters; waits for `stream`.
  void download(std::vector<layers::named_param<float>> const& host, bool grads, cudaStream_t stream) const {
    check_layout(host);
    for (std::size_t i = 0; i < host.size(); ++i) {
      copy(host[i].p->value.data(), values_.data() + entries_[i].offset, entries_[i].size, cudaMemcpyDeviceToHost,
           stream);
      if (grads) {
        copy(host[i].p->grad.data(), grads_.data() + entries_[i].offset, entries_[i].size, cudaMemcpyDeviceToHost,
             stream);
      }
    }
    backends::cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (parameter download)");
  }

  //! Copies `flat` (a device buffer laid out as the values, e.g. an AdamW moment) into host tensors parallel to the
  //! entries (the host optimizer's moments, in named_params() order); waits for `stream`.
  void download_flat(float const* flat, std::vector<tensor<float>>& host, cudaStream_t stream) const {
    check_sizes(host);
    for (std::size_t i = 0; i < host.size(); ++i) {
      copy(host[i].data(), flat + entries_[i].offset, entries_[i].size, cudaMemcpyDeviceToHost, stream);
    }
    backends::cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (download)");
  }

  //! Copies host tensors parallel to the entries into `flat` (a device buffer laid out as the values); waits.
  void upload_flat(std::vector<tensor<float>> const& host, float* flat, cudaStream_t stream) const {
    check_sizes(host);
    for (std::size_t i = 0; i < host.size(); ++i) {
      copy(flat + entries_[i].offset, host[i].data(), entries_[i].size, cudaMemcpyHostToDevice, stream);
    }
    backends::cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (upload)");
  }

  //! Refuses host parameters (or an optimizer's list of them) that are not this layout's tensors, in order.
  void check_layout(std::vector<layers::named_param<float>> const& host) const {
    check_arg(host.size() == entries_.size(), "host parameter count", host.size(),
              "must equal the device's " + std::to_string(entries_.size()));
    for (std::size_t i = 0; i < host.size(); ++i) {
      check_arg(host[i].name == entries_[i].name && host[i].p->value.size() == entries_[i].size, "host parameter",
                host[i].name + " (" + std::to_string(host[i].p->value.size()) + " elements)",
                "must match device tensor " + std::to_string(i) + ", " + entries_[i].name + " (" +
                    std::to_string(entries_[i].size) + " elements)");
    }
  }

  void zero_grad(cudaStream_t stream) {
    backends::cuda_check(cudaMemsetAsync(grads_.data(), 0, grads_.bytes(), stream), "cudaMemsetAsync (zero_grad)");
  }

  //! Every tensor for train::cuda::adamw, with moments at the same offsets of m and v (capacity() floats each); the
  //! update rewrites the bf16 copy too when there is one.
  [[nodiscard]] std::vector<train::cuda::adamw_tensor> adamw_tensors(float* m, float* v) {
    std::vector<train::cuda::adamw_tensor> out;
    for (auto const& e : entries_) {
      out.push_back({values_.data() + e.offset, grads_.data() + e.offset, m + e.offset, v + e.offset, e.size, e.decay,
                     has_rounded() ? rounded_.data() + e.offset : nullptr});
    }
    return out;
  }

private:
  void check_sizes(std::vector<tensor<float>> const& host) const {
    check_arg(host.size() == entries_.size(), "host tensor count", host.size(),
              "must equal the device's " + std::to_string(entries_.size()));
    for (std::size_t i = 0; i < host.size(); ++i) {
      check_arg(host[i].size() == entries_[i].size, "host tensor " + std::to_string(i) + " size", host[i].size(),
                "must equal the elements of device tensor " + entries_[i].name + " (" +
                    std::to_string(entries_[i].size) + ")");
    }
  }

  static void copy(float* dst, float const* src, std::int64_t n, cudaMemcpyKind kind, cudaStream_t stream) {
    if (n > 0) {
      backends::cuda_check(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * sizeof(float), kind, stream),
                           "cudaMemcpyAsync (parameters)");
    }
  }

  std::vector<entry> entries_;
  backends::device_buffer<float> values_, grads_;
  backends::device_buffer<bfloat16> rounded_;
};

}  // namespace ssmlen::models::cuda
