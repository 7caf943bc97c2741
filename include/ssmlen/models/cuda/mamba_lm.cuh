// SPDX-License-Identifier: Apache-2.0
//! @file mamba_lm.cuh
//! The Mamba language model on a CUDA device, float32, with the semantics of models/mamba_lm.hpp:
//!   embedding -> N x (u + block(rmsnorm(u))) -> rmsnorm -> LM head (tied to the embedding, or not)
//! built from a host model (its parameters uploaded; parameters and gradients download back into one), with the
//! training step of train/trainer.hpp: forward -> masked softmax cross-entropy -> backward -> AdamW. Each residual
//! add is fused into the RMSNorm that follows it (h = block output + u is written out and normalized in one pass).
//! All work is enqueued on one stream; a training step waits for the host once, to report its loss and norm.
//! Buffers grow to the largest batch seen and are reused.
#pragma once

#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/cuda/device_sequences.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/cuda/embedding.cuh>
#include <ssmlen/layers/cuda/mamba_block.cuh>
#include <ssmlen/layers/cuda/rmsnorm.cuh>
#include <ssmlen/models/cuda/device_params.cuh>
#include <ssmlen/models/mamba_config.hpp>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/ops/cross_entropy.hpp>
#include <ssmlen/ops/cuda/cross_entropy.cuh>
#include <ssmlen/scan/cuda/selective_scan.cuh>
#include <ssmlen/train/adamw.hpp>
#include <ssmlen/train/batch.hpp>
#include <ssmlen/train/cuda/adamw.cuh>
#include <ssmlen/train/trainer.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace ssmlen::models::cuda {

struct mamba_lm_options {
  backends::cuda be{};  // the stream all work goes to
  backends::gemm_precision precision = backends::gemm_precision::fp32;
  train::adamw_config optimizer{};
};

//! Scan: a CUDA scan policy (scan::cuda::block_parallel<W, I> or scan::recurrent).
template <class Scan = scan::cuda::block_parallel<>>
class mamba_lm {
public:
  using block_type = layers::cuda::mamba_block<Scan>;

  //! Uploads the host model's parameters; the optimizer starts fresh (zero moments, step 0).
  template <class HostScan>
  explicit mamba_lm(models::mamba_lm<float, HostScan>& host, mamba_lm_options const& options = {})
      : cfg_(host.config()), opt_(options), blas_(options.be), params_(host.named_params()), m_(params_.capacity()),
        v_(params_.capacity()), adamw_(options.optimizer, params_.adamw_tensors(m_.data(), v_.data()), options.be) {
    params_.upload(host.named_params(), stream());
    params_.zero_grad(stream());
    for (auto* b : {&m_, &v_}) {
      backends::cuda_check(cudaMemsetAsync(b->data(), 0, b->bytes(), stream()), "cudaMemsetAsync (moments)");
    }
    layers::cuda::mamba_block_shape const shape{
        cfg_.d_model, cfg_.d_inner(),          cfg_.d_state,
        cfg_.d_conv,  cfg_.resolved_dt_rank(), static_cast<float>(cfg_.delta_min)};
    for (std::int64_t i = 0; i < cfg_.n_layers; ++i) {
      std::string const pre = "backbone.layers." + std::to_string(i) + ".";
      auto pick = [&](auto get) {
        std::string const m = pre + "mixer.";
        return layers::cuda::mamba_block_params<float*>{
            get(m + "in_proj.weight"), get(m + "conv1d.weight"), get(m + "conv1d.bias"), get(m + "x_proj.weight"),
            get(m + "dt_proj.weight"), get(m + "dt_proj.bias"),  get(m + "A_log"),       get(m + "D"),
            get(m + "out_proj.weight")};
      };
      blocks_.emplace_back(shape, pick([&](std::string const& n) { return params_.value(n); }),
                           pick([&](std::string const& n) { return params_.grad(n); }), opt_.precision);
      norms_.push_back({params_.value(pre + "norm.weight"), params_.grad(pre + "norm.weight")});
    }
    norms_.push_back({params_.value("backbone.norm_f.weight"), params_.grad("backbone.norm_f.weight")});
    std::string const head = cfg_.tie_embeddings ? "backbone.embedding.weight" : "lm_head.weight";
    head_ = {params_.value(head), params_.grad(head)};
    embedding_ = {params_.value("backbone.embedding.weight"), params_.grad("backbone.embedding.weight")};
    caches_.resize(static_cast<std::size_t>(cfg_.n_layers));
    ce_result_ = backends::device_buffer<ops::cross_entropy_result>(1);
    backends::cuda_check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize (model upload)");
  }

  [[nodiscard]] mamba_config const& config() const { return cfg_; }
  [[nodiscard]] std::int64_t n_params() const { return params_.elements(); }
  [[nodiscard]] backends::cuda backend() const { return opt_.be; }
  [[nodiscard]] device_params& params() { return params_; }
  [[nodiscard]] train::cuda::adamw& optimizer() { return adamw_; }

  //! Replaces the device parameters with the host model's.
  template <class HostScan>
  void upload(models::mamba_lm<float, HostScan>& host) {
    params_.upload(host.named_params(), stream());
  }

  //! Writes the device parameters and gradients into the host model (same configuration); waits for the stream.
  template <class HostScan>
  void download(models::mamba_lm<float, HostScan>& host) const {
    params_.download(host.named_params(), true, stream());
  }

  void zero_grad() { params_.zero_grad(stream()); }

  //! Sizes every buffer for a batch laid out as `seqs` (forward does it too; call it first to poison them).
  void reserve(sequences const& seqs) {
    std::int64_t const rows = seqs.tokens(), d = cfg_.d_model, v = cfg_.vocab, n = cfg_.n_layers;
    auto const td = static_cast<std::size_t>(rows * d);
    cudaStream_t const s = stream();
    layers::cuda::grow_buffer(offsets_, static_cast<std::size_t>(seqs.count() + 1), s);
    layers::cuda::grow_buffer(tokens_, static_cast<std::size_t>(rows), s);
    layers::cuda::grow_buffer(targets_, static_cast<std::size_t>(rows), s);
    layers::cuda::grow_buffer(mask_, static_cast<std::size_t>(rows), s);
    layers::cuda::grow_buffer(residual_, static_cast<std::size_t>(n + 1) * td, s);
    layers::cuda::grow_buffer(normed_, static_cast<std::size_t>(n + 1) * td, s);
    layers::cuda::grow_buffer(rstd_, static_cast<std::size_t>((n + 1) * rows), s);
    layers::cuda::grow_buffer(block_out_, td, s);
    layers::cuda::grow_buffer(du_, td, s);
    layers::cuda::grow_buffer(dnormed_, td, s);
    layers::cuda::grow_buffer(logits_, static_cast<std::size_t>(rows * v), s);
    layers::cuda::grow_buffer(dlogits_, static_cast<std::size_t>(rows * v), s);
    layers::cuda::grow_buffer(workspace_,
                              std::max({layers::cuda::rmsnorm_backward_workspace_bytes(rows, d),
                                        layers::cuda::embedding_backward_workspace_bytes(v, rows),
                                        ops::cuda::cross_entropy_workspace_bytes(rows)}),
                              s);
    device_sequences const shape_only{offsets_.data(), seqs.count(), rows};  // sizes only; offsets not read
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      blocks_[i].reserve(seqs, shape_only, caches_[i], scratch_, s);
    }
  }

  //! Fills every activation, gradient buffer and workspace with NaN (tests: nothing is read before written).
  void poison() {
    cudaStream_t const s = stream();
    for (auto* b : {&residual_, &normed_, &rstd_, &block_out_, &du_, &dnormed_, &logits_, &dlogits_}) {
      layers::cuda::poison_buffer(*b, s);
    }
    layers::cuda::poison_buffer(workspace_, s);
    layers::cuda::poison_buffer(ce_result_, s);
    for (auto& k : caches_) {
      k.poison(s);
    }
    scratch_.poison(s);
  }

  //! tokens: [T] (host) packed as `seqs` -> logits: [T, V], a device pointer valid until the next forward.
  float const* forward(std::span<const std::int32_t> tokens, sequences const& seqs) {
    std::int64_t const rows = seqs.tokens(), d = cfg_.d_model, v = cfg_.vocab, n = cfg_.n_layers;
    check_arg(static_cast<std::int64_t>(tokens.size()) == rows, "tokens.size()", tokens.size(),
              "must equal the packed length " + std::to_string(rows));
    for (std::int32_t const t : tokens) {  // the device cannot throw: check on the host, as the host model does
      if (t < 0 || t >= v) {
        check_arg(false, "token id", t, "must be in [0, vocab = " + std::to_string(v) + ")");
      }
    }
    reserve(seqs);
    seqs_ = seqs;
    offsets_host_.resize(static_cast<std::size_t>(seqs.count() + 1));
    for (std::int64_t s = 0; s <= seqs.count(); ++s) {
      offsets_host_[static_cast<std::size_t>(s)] = s < seqs.count() ? seqs.begin(s) : rows;
    }
    copy_to_device(offsets_.data(), offsets_host_.data(), offsets_host_.size());
    copy_to_device(tokens_.data(), tokens.data(), tokens.size());
    device_sequences const dseqs = device_seqs();
    auto const be = backend();
    layers::cuda::embedding_forward(be, v, d, embedding_.value, tokens_.data(), rows, residual(0));
    layers::cuda::rmsnorm_forward(be, rows, d, cfg_.norm_eps, residual(0), nullptr, nullptr, norms_[0].value, normed(0),
                                  rstd(0));
    for (std::int64_t i = 0; i < n; ++i) {
      blocks_[static_cast<std::size_t>(i)].forward(blas_, seqs_, dseqs, normed(i), block_out_.data(),
                                                   caches_[static_cast<std::size_t>(i)], scratch_);
      // u[i+1] = block output + u[i], normalized by the next layer's norm (norm_f after the last block)
      layers::cuda::rmsnorm_forward(be, rows, d, cfg_.norm_eps, block_out_.data(), residual(i), residual(i + 1),
                                    norms_[static_cast<std::size_t>(i + 1)].value, normed(i + 1), rstd(i + 1));
    }
    backends::gemm(blas_, ops::trans::n, ops::trans::t, rows, v, d, 1.0f, normed(n), d, head_.value, d, 0.0f,
                   logits_.data(), v, opt_.precision);  // [T, V]
    return logits_.data();
  }

  //! Adds every parameter gradient for dlogits: [T, V] (a device pointer) over the last forward's batch.
  void backward(float const* dlogits) {
    std::int64_t const rows = seqs_.tokens(), d = cfg_.d_model, v = cfg_.vocab, n = cfg_.n_layers;
    auto const be = backend();
    device_sequences const dseqs = device_seqs();
    backends::gemm(blas_, ops::trans::t, ops::trans::n, v, d, rows, 1.0f, dlogits, v, normed(n), d, 1.0f, head_.grad, d,
                   opt_.precision);  // [V, D]
    backends::gemm(blas_, ops::trans::n, ops::trans::n, rows, d, v, 1.0f, dlogits, v, head_.value, d, 0.0f,
                   dnormed_.data(), d, opt_.precision);  // [T, D]
    layers::cuda::rmsnorm_backward(be, rows, d, residual(n), rstd(n), norms_[static_cast<std::size_t>(n)].value,
                                   dnormed_.data(), du_.data(), norms_[static_cast<std::size_t>(n)].grad, false,
                                   workspace_.data());
    for (std::int64_t i = n; i-- > 0;) {  // du: the gradient of the residual stream u[i+1], then u[i]
      blocks_[static_cast<std::size_t>(i)].backward(blas_, seqs_, dseqs, normed(i), du_.data(), dnormed_.data(), false,
                                                    caches_[static_cast<std::size_t>(i)], scratch_);
      layers::cuda::rmsnorm_backward(be, rows, d, residual(i), rstd(i), norms_[static_cast<std::size_t>(i)].value,
                                     dnormed_.data(), du_.data(), norms_[static_cast<std::size_t>(i)].grad, true,
                                     workspace_.data());
    }
    layers::cuda::embedding_backward(be, v, d, tokens_.data(), rows, du_.data(), embedding_.grad, workspace_.data());
  }

  //! Forward, masked cross-entropy (the gradient of the mean over counted targets), zero_grad, backward; enqueued,
  //! not waited for (loss() waits). Checks on the host what the host trainer checks.
  void compute_gradients(train::batch const& b) {
    std::int64_t const rows = b.tokens(), v = cfg_.vocab;
    check_arg(static_cast<std::int64_t>(b.targets.size()) == rows && static_cast<std::int64_t>(b.mask.size()) == rows,
              "batch targets and mask", b.targets.size(),
              "must have one entry per input (" + std::to_string(rows) + ")");
    check(ops::masked_count(rows, b.mask.data()) > 0, "training batch has no masked-in targets: nothing to learn from");
    for (std::int64_t t = 0; t < rows; ++t) {
      auto const i = static_cast<std::size_t>(t);
      if (b.mask[i] != 0 && (b.targets[i] < 0 || b.targets[i] >= v)) {
        check_arg(false, "cross_entropy target", b.targets[i],
                  "must be in [0, " + std::to_string(v) + ") (token " + std::to_string(t) + ")");
      }
    }
    forward(b.inputs, b.seqs);
    copy_to_device(targets_.data(), b.targets.data(), b.targets.size());
    copy_to_device(mask_.data(), b.mask.data(), b.mask.size());
    ops::cuda::softmax_cross_entropy(backend(), rows, v, logits_.data(), targets_.data(), mask_.data(), dlogits_.data(),
                                     1.0f, ce_result_.data(), workspace_.data());
    zero_grad();
    backward(dlogits_.data());
  }

  //! The last compute_gradients' loss (summed over counted targets) and count; waits for the stream.
  [[nodiscard]] ops::cross_entropy_result loss() const {
    backend().synchronize();
    return ce_result_.to_host()[0];
  }

  //! One optimization step on `b` at learning rate `lr`, as train::trainer::step on the host.
  train::step_report train_step(train::batch const& b, double lr) {
    auto const t0 = std::chrono::steady_clock::now();
    compute_gradients(b);
    std::int64_t const step = adamw_.steps();
    adamw_.step(lr);
    auto const ce = loss();
    double const norm = adamw_.grad_norm();
    if (!std::isfinite(norm)) {
      adamw_.set_steps(step);  // the device skipped the update; the host optimizer throws before counting it
      throw error("gradient norm is not finite (" + std::to_string(norm) + "): training diverged");
    }
    train::step_report r;
    r.step = step;
    r.loss = ce.mean();
    r.lr = lr;
    r.grad_norm = norm;
    r.tokens = b.tokens();
    r.predicted = ce.count;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

private:
  struct tensor_pair {
    float* value = nullptr;
    float* grad = nullptr;
  };

  [[nodiscard]] cudaStream_t stream() const { return opt_.be.stream; }
  [[nodiscard]] device_sequences device_seqs() const { return {offsets_.data(), seqs_.count(), seqs_.tokens()}; }
  [[nodiscard]] std::size_t rows_d() const { return static_cast<std::size_t>(seqs_.tokens() * cfg_.d_model); }
  float* residual(std::int64_t i) { return residual_.data() + static_cast<std::size_t>(i) * rows_d(); }  // u[i]
  float* normed(std::int64_t i) { return normed_.data() + static_cast<std::size_t>(i) * rows_d(); }
  float* rstd(std::int64_t i) { return rstd_.data() + i * seqs_.tokens(); }

  //! Host to device on the model's stream; pageable host memory is staged before the call returns.
  template <class T>
  void copy_to_device(T* dst, T const* src, std::size_t n) {
    if (n > 0) {
      backends::cuda_check(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, stream()),
                           "cudaMemcpyAsync (batch)");
    }
  }

  mamba_config cfg_;
  mamba_lm_options opt_;
  backends::blas_handle blas_;
  device_params params_;
  backends::device_buffer<float> m_, v_;  // AdamW moments, laid out as params_
  train::cuda::adamw adamw_;
  std::vector<block_type> blocks_;
  std::vector<tensor_pair> norms_;  // n_layers + 1: each layer's norm, then norm_f
  tensor_pair head_, embedding_;

  sequences seqs_;  // the last forward's batch
  std::vector<std::int64_t> offsets_host_;
  backends::device_buffer<std::int64_t> offsets_;                 // [S + 1]
  backends::device_buffer<std::int32_t> tokens_, targets_;        // [T]
  backends::device_buffer<std::uint8_t> mask_;                    // [T]
  backends::device_buffer<float> residual_, normed_;              // (n_layers + 1) x [T, D]: u[i] and its norm
  backends::device_buffer<float> rstd_;                           // (n_layers + 1) x [T]
  backends::device_buffer<float> block_out_, du_, dnormed_;       // [T, D]
  backends::device_buffer<float> logits_, dlogits_;               // [T, V]
  backends::device_buffer<ops::cross_entropy_result> ce_result_;  // [1]
  backends::device_buffer<char> workspace_;                       // rmsnorm, embedding, cross-entropy
  std::vector<layers::cuda::mamba_block_cache> caches_;           // n_layers
  layers::cuda::mamba_block_scratch scratch_;                     // shared by the blocks
};

}  // namespace ssmlen::models::cuda
