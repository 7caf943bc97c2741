// SPDX-License-Identifier: Apache-2.0
//! @file step_graph.cuh
//! One greedy step of a CUDA language model for a fixed batch of B rows, captured once as a CUDA graph and replayed:
//!   B token ids (pinned host) -> every layer's step -> argmax -> B ids (pinned host)
//! so a rollout step costs one graph launch instead of a launch per kernel and GEMM. The step's last kernel (the
//! argmax, or the one-kernel step, which takes the argmax itself) writes the next ids straight into page-locked host
//! memory: no copy back. A model whose step reads each id once (Model::step_reads_ids_once: the one-kernel step)
//! reads them from page-locked memory too, and its graph is that one kernel; else the ids go up by a copy, since the
//! layer-by-layer step's first kernel reads them from every block, as many trips over the bus from host memory.
//! The graph owns the rows' states and runs on a stream and cuBLAS handle of its own (capture needs a stream other
//! than the legacy default one, and a cuBLAS workspace that stays put). A row fed models::cuda::fresh_token(t)
//! starts a new sequence; every other row continues its own.
#pragma once

#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/graph.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/models/cuda/mamba_lm.cuh>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cublas_v2.h>
#include <span>
#include <string>
#include <utility>

namespace ssmlen::agent::cuda {

//! Model: models::cuda::mamba_lm<Scan> (anything with its make_state, greedy_step, step_reads_ids_once, config and
//! state types). The model must outlive the graph, and its parameters must not change while the graph is used.
template <class Model>
class step_graph {
public:
  //! Captures the step for `batch` rows; states start at zero. The model's own stream is waited for first.
  step_graph(Model const& model, std::int64_t batch)
      : model_(model), batch_(checked_batch(batch)), blas_(stream_.backend()), state_(model.make_state(batch)),
        ids_up_(!model.step_reads_ids_once()), tokens_dev_(ids_up_ ? static_cast<std::size_t>(batch) : 0),
        tokens_(static_cast<std::size_t>(batch)), next_(static_cast<std::size_t>(batch)),
        tokens_in_(ids_up_ ? tokens_dev_.data() : tokens_.device_data()), next_dev_(next_.device_data()) {
    backends::cublas_check(cublasSetWorkspace(blas_.get(), cublas_workspace_.data(), cublas_workspace_.bytes()),
                           "cublasSetWorkspace");
    cudaStream_t const s = stream_.get();
    // One eager step first: buffers reach their size (and cuBLAS picks its kernels) outside the capture.
    for (auto& t : tokens_.span()) {
      t = models::cuda::fresh_token(0);
    }
    enqueue();
    stream_.synchronize();
    exec_ = backends::capture_graph(s, [&] { enqueue(); });
  }
  step_graph(step_graph const&) = delete;
  step_graph& operator=(step_graph const&) = delete;

  [[nodiscard]] std::int64_t batch() const { return batch_; }

  //! The ids the next run() feeds, one per row (pinned host memory): a token, or fresh_token(t).
  [[nodiscard]] std::span<std::int32_t> tokens() { return tokens_.span(); }

  //! Replays the step on tokens() and waits for it: each row's greedy next token (pinned host memory, valid until
  //! the next run). Ids are checked on the host first, since the device cannot throw.
  std::span<std::int32_t const> run() {
    std::int32_t const v = static_cast<std::int32_t>(model_.config().vocab);
    for (std::int32_t const t : tokens_.span()) {
      if (t < -v || t >= v) {
        check_arg(false, "token id", t, "must be in [0, vocab = " + std::to_string(v) + ") or a fresh_token of one");
      }
    }
    exec_.launch(stream_.get());
    stream_.synchronize();
    return next_.span();
  }

  //! The rows' states (device), laid out as Model::state.
  [[nodiscard]] typename Model::state& state() { return state_; }

private:
  static std::int64_t checked_batch(std::int64_t batch) {
    check_arg(batch >= 1 && batch <= 65535, "step graph batch", batch, "must be in [1, 65535]");
    return batch;
  }

  //! The step as stream work: (ids up,) every layer, the argmax into page-locked memory.
  void enqueue() {
    if (ids_up_) {
      auto const bytes = static_cast<std::size_t>(batch_) * sizeof(std::int32_t);
      backends::cuda_check(
          cudaMemcpyAsync(tokens_dev_.data(), tokens_.span().data(), bytes, cudaMemcpyHostToDevice, stream_.get()),
          "cudaMemcpyAsync (ids to the device)");
    }
    model_.greedy_step(blas_, tokens_in_, next_dev_, batch_, state_, work_);
  }

  static constexpr std::size_t cublas_workspace_bytes = std::size_t{32} << 20;  // cuBLAS's advice for Hopper

  Model const& model_;
  std::int64_t batch_;
  backends::cuda_stream stream_;
  backends::device_buffer<char> cublas_workspace_{cublas_workspace_bytes};
  backends::blas_handle blas_;
  typename Model::state state_;
  typename Model::step_workspace work_;
  bool ids_up_;                                          // the ids go up by a copy into tokens_dev_
  backends::device_buffer<std::int32_t> tokens_dev_;     // [B] with ids_up_, else empty
  backends::pinned_buffer<std::int32_t> tokens_, next_;  // [B], host
  std::int32_t const* tokens_in_;                        // what the step reads: tokens_dev_, or tokens_ as addressed
  std::int32_t* next_dev_;                               // next_ as the device addresses it
  backends::graph_exec exec_;
};

}  // namespace ssmlen::agent::cuda
