// SPDX-License-Identifier: Apache-2.0
//! @file mamba_lm.cuh
//! The Mamba language model on a CUDA device, float32, with the semantics of models/mamba_lm.hpp:
//!   embedding -> N x (u + block(rmsnorm(u))) -> rmsnorm -> LM head (tied to the embedding, or not)
//! built from a host model (its parameters uploaded; parameters and gradients download back into one), with the
//! training step of train/trainer.hpp: forward -> masked softmax cross-entropy -> backward -> AdamW. Each residual
//! add is fused into the RMSNorm that follows it (h = block output + u is written out and normalized in one pass).
//! With bf16 GEMMs the RMSNorm kernels also write the bf16 rounding of each block's input (forward) and of the
//! gradient into each block's output (backward), which the block's GEMMs read instead of rounding them again; the
//! blocks' inputs are then kept only rounded (their GEMMs read nothing else), the head's input in fp32 too. The
//! weights' bf16 copies are kept current by the upload and by AdamW (device_params), never remade by a forward.
//! All work is enqueued on one stream; a training step waits for the host once, to report its loss and norm.
//! Buffers grow to the largest batch seen and are reused. With `step_graphs`, a training step whose batch has the
//! layout of the last one (the same sequence lengths) replays a CUDA graph of its device work instead of launching
//! each kernel and GEMM (about 960 operations at the paper's shape: 1–2 % of the step). For rollouts, `step` advances B
//! sequences by one token each (the host model's step) on a caller's stream, on device states (`make_state`), and
//! `greedy_step` also picks each row's argmax; agent/cuda/step_graph.cuh replays it as a CUDA graph.
#pragma once

#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/graph.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/cuda/device_sequences.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/cuda/embedding.cuh>
#include <ssmlen/layers/cuda/mamba_block.cuh>
#include <ssmlen/layers/cuda/rmsnorm.cuh>
#include <ssmlen/layers/cuda/row_argmax.cuh>
#include <ssmlen/models/cuda/device_params.cuh>
#include <ssmlen/models/cuda/fused_step.cuh>
#include <ssmlen/models/cuda/step_tokens.cuh>
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

//! Recurrent state of every layer for B sequences on the device: layer i's conv [B, K-1, ED] and ssm [B, N, ED], the
//! layouts of the host's models::mamba_lm::state, stored one layer after another in two buffers.
struct mamba_lm_state {
  std::int64_t batch = 0;
  std::int64_t conv_row = 0, ssm_row = 0;  // elements of one sequence in one layer: (K-1)·ED and N·ED
  backends::device_buffer<float> conv;     // [L, B, K-1, ED]
  backends::device_buffer<float> ssm;      // [L, B, N, ED]

  [[nodiscard]] layers::cuda::mamba_block_states<float*> layer(std::int64_t i) {
    return {conv.data() + i * batch * conv_row, ssm.data() + i * batch * ssm_row};
  }
};

//! The buffers of a recurrent step of B rows, sized by the first step of that many rows.
struct mamba_lm_step_workspace {
  backends::device_buffer<std::int32_t> ids;      // [B]: the tokens, fresh marks removed
  backends::device_buffer<float> u, normed, out;  // [B, D]: residual stream, its norm, a block's output
  backends::device_buffer<bfloat16> normed16;     // [B, D]: with bf16 GEMMs, the norm kept only rounded
  backends::device_buffer<float> logits;          // [B, V]
  layers::cuda::mamba_block_step_scratch block;   // shared by the blocks

  void poison(cudaStream_t stream) {
    for (auto* b : {&u, &normed, &out, &logits}) {
      layers::cuda::poison_buffer(*b, stream);
    }
    layers::cuda::poison_buffer(normed16, stream);
    layers::cuda::poison_buffer(ids, stream);
    block.poison(stream);
  }
};

namespace detail {

inline constexpr int begin_step_threads = 256;

//! ids[b] = the token of row b; a row fed fresh_token(t) gets t and its state zeroed in every layer. Rows in
//! blockIdx.y, their state elements over blockIdx.x.
template <class T>
__global__ void __launch_bounds__(begin_step_threads)
    begin_step_kernel(std::int32_t const* tokens, std::int32_t* ids, std::int64_t layers, std::int64_t batch,
                      std::int64_t conv_row, std::int64_t ssm_row, T* conv, T* ssm) {
  std::int64_t const b = blockIdx.y;
  std::int32_t const t = tokens[b];
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    ids[b] = token_of(t);
  }
  if (t >= 0) {
    return;
  }
  std::int64_t const per_layer = conv_row + ssm_row, total = layers * per_layer;
  for (std::int64_t i = blockIdx.x * std::int64_t{begin_step_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * begin_step_threads) {
    std::int64_t const l = i / per_layer, j = i % per_layer;
    if (j < conv_row) {
      conv[(l * batch + b) * conv_row + j] = T(0);
    } else {
      ssm[(l * batch + b) * ssm_row + (j - conv_row)] = T(0);
    }
  }
}

}  // namespace detail

struct mamba_lm_options {
  backends::cuda be{};  // the stream all work goes to
  backends::gemm_precision precision = backends::gemm_precision::fp32;
  train::adamw_config optimizer{};
  // Replay the gradient computation of a training step (batch copies, forward, loss, backward) as a CUDA graph when
  // the batch's layout is the one the buffers were last set for: the first step of a layout runs eagerly and sizes
  // every buffer, the next is captured, later ones replay it; any other layout (training or forward) drops the
  // graph. Results are the eager steps' bits. Needs a stream of its own (`be`): the legacy default stream cannot be
  // captured.
  bool step_graphs = false;
  // With fp32 GEMMs and a model within fused_step_fits (the headline's size), run the recurrent step as one kernel
  // (models/cuda/fused_step.cuh) instead of its layers' kernels and GEMMs: the same arithmetic, within float
  // roundings of the other path. Off: the layer-by-layer step, for any size.
  bool fused_step = true;
};

//! Scan: a CUDA scan policy (scan::cuda::state_split<NT>, scan::cuda::block_parallel<W, I>, scan::recurrent or
//! scan::chunked<C>: the last for batches of few long sequences).
template <class Scan = scan::cuda::state_split<>>
class mamba_lm {
public:
  using block_type = layers::cuda::mamba_block<Scan>;

  //! Uploads the host model's parameters; the optimizer starts fresh (zero moments, step 0).
  template <class HostScan>
  explicit mamba_lm(models::mamba_lm<float, HostScan>& host, mamba_lm_options const& options = {})
      : cfg_(host.config()), opt_(options), blas_(options.be),
        params_(host.named_params(), options.precision == backends::gemm_precision::bf16), m_(params_.capacity()),
        v_(params_.capacity()), adamw_(options.optimizer, params_.adamw_tensors(m_.data(), v_.data()), options.be) {
    check(!opt_.step_graphs || opt_.be.stream != nullptr,
          "mamba_lm (cuda): step_graphs needs a stream of its own in options.be (the legacy default stream cannot be "
          "captured)");
    // A workspace of cuBLAS's recommended size that stays put, so that captured GEMMs find it; eager ones use it too,
    // so both pick the same kernels.
    backends::cublas_check(cublasSetWorkspace(blas_.get(), cublas_workspace_.data(), cublas_workspace_.bytes()),
                           "cublasSetWorkspace");
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
      layers::cuda::mamba_block_params<bfloat16 const*> rounded{};
      if (bf16()) {  // the weight matrices' bf16 copies, kept current by the upload and AdamW
        std::string const m = pre + "mixer.";
        rounded.in_proj = params_.rounded(m + "in_proj.weight");
        rounded.x_proj = params_.rounded(m + "x_proj.weight");
        rounded.dt_proj = params_.rounded(m + "dt_proj.weight");
        rounded.out_proj = params_.rounded(m + "out_proj.weight");
      }
      blocks_.emplace_back(shape, pick([&](std::string const& n) { return params_.value(n); }),
                           pick([&](std::string const& n) { return params_.grad(n); }), opt_.precision, rounded);
      norms_.push_back({params_.value(pre + "norm.weight"), params_.grad(pre + "norm.weight")});
    }
    norms_.push_back({params_.value("backbone.norm_f.weight"), params_.grad("backbone.norm_f.weight")});
    std::string const head = cfg_.tie_embeddings ? "backbone.embedding.weight" : "lm_head.weight";
    head_ = {params_.value(head), params_.grad(head), params_.rounded(head)};
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

  //! Copies the optimizer's state (both moments and the step count) into `host`, an AdamW over the host model's
  //! named_params(): with download(), what train::save_training_checkpoint needs to write a checkpoint that the host
  //! trainer and this class both resume from. Waits for the stream.
  void download_optimizer(train::adamw<float>& host) const {
    params_.check_layout(host.params());
    params_.download_flat(m_.data(), host.first_moments(), stream());
    params_.download_flat(v_.data(), host.second_moments(), stream());
    host.set_steps(adamw_.steps());
  }

  //! Replaces the optimizer's state with `host`'s (e.g. after train::load_training_checkpoint), so training resumes
  //! bit-identically; upload() the parameters too.
  void upload_optimizer(train::adamw<float>& host) {
    params_.check_layout(host.params());
    params_.upload_flat(host.first_moments(), m_.data(), stream());
    params_.upload_flat(host.second_moments(), v_.data(), stream());
    adamw_.set_steps(host.steps());
  }

  void zero_grad() { params_.zero_grad(stream()); }

  using state = mamba_lm_state;
  using step_workspace = mamba_lm_step_workspace;

  //! Zeroed states for `batch` sequences (waits for the model's stream).
  [[nodiscard]] state make_state(std::int64_t batch) const {
    check_arg(batch >= 0, "state batch", batch, "must be non-negative");
    state s;
    s.batch = batch;
    s.conv_row = (cfg_.d_conv - 1) * cfg_.d_inner();
    s.ssm_row = cfg_.d_state * cfg_.d_inner();
    s.conv = backends::device_buffer<float>(static_cast<std::size_t>(cfg_.n_layers * batch * s.conv_row));
    s.ssm = backends::device_buffer<float>(static_cast<std::size_t>(cfg_.n_layers * batch * s.ssm_row));
    s.conv.fill_bytes(0, stream());
    s.ssm.fill_bytes(0, stream());
    backends::cuda_check(cudaStreamSynchronize(stream()), "cudaStreamSynchronize (zeroed state)");
    return s;
  }

  //! One token for each of B sequences, as the host model's step: tokens [B] (a device pointer; fresh_token(t)
  //! starts a new sequence in its row) -> logits [B, V], a device pointer into `w` valid until its next step; rows
  //! [0, B) of `s` advance in place. Work goes to h's stream, not the model's (a captured graph needs a stream of
  //! its own), and allocates nothing once `w` has held B rows: a step can be captured as a CUDA graph. Token ids
  //! cannot be checked on the device: an id outside [0, V) gives a row of NaN logits.
  float const* step(backends::blas_handle& h, std::int32_t const* tokens, std::int64_t batch, state& s,
                    step_workspace& w) const {
    return step_impl(h, tokens, batch, s, w, nullptr);
  }

  //! Whether step reads each row's id once (the one-kernel step reads them into shared memory first; the layer by
  //! layer step reads them from every block of its first kernel): then tokens may be page-locked host memory as the
  //! device addresses it, which saves a step's graph its copy up.
  [[nodiscard]] bool step_reads_ids_once() const { return fused(); }

  //! step, then greedy decoding on the device: next [B] (a device pointer) = the argmax of each row's logits. The
  //! fused step takes the argmax itself (no second launch). next is written once per row by the step's last kernel,
  //! so it may be page-locked host memory as the device addresses it (no copy back).
  void greedy_step(backends::blas_handle& h, std::int32_t const* tokens, std::int32_t* next, std::int64_t batch,
                   state& s, step_workspace& w) const {
    check(next != nullptr, "mamba_lm greedy_step (cuda): next must be a device pointer, not null");
    float const* logits = step_impl(h, tokens, batch, s, w, next);
    if (!fused()) {
      layers::cuda::row_argmax(h.backend(), batch, cfg_.vocab, logits, next);
    }
  }

private:
  //! step; the fused step also writes each row's argmax into `next` where it is not null.
  float const* step_impl(backends::blas_handle& h, std::int32_t const* tokens, std::int64_t batch, state& s,
                         step_workspace& w, std::int32_t* next) const {
    std::int64_t const d = cfg_.d_model, v = cfg_.vocab, n = cfg_.n_layers;
    check_arg(batch >= 1 && batch <= s.batch && batch <= 65535, "step batch", batch,
              "must be in [1, min(state batch " + std::to_string(s.batch) + ", 65535)]");
    check(s.conv_row == (cfg_.d_conv - 1) * cfg_.d_inner() && s.ssm_row == cfg_.d_state * cfg_.d_inner() &&
              s.ssm.size() == static_cast<std::size_t>(n * s.batch * s.ssm_row),
          "mamba_lm step (cuda): the state must come from this model's make_state");
    check(tokens != nullptr, "mamba_lm step (cuda): tokens must be a device pointer, not null");
    auto const be = h.backend();
    cudaStream_t const stream = be.stream;
    if (fused()) {
      layers::cuda::grow_buffer(w.logits, static_cast<std::size_t>(batch * v), stream);
      models::cuda::fused_step(be, fused_params(tokens, batch, s, w.logits.data(), next));
      return w.logits.data();
    }
    auto const bd = static_cast<std::size_t>(batch * d);
    layers::cuda::grow_buffer(w.ids, static_cast<std::size_t>(batch), stream);
    for (auto* b : {&w.u, &w.out}) {
      layers::cuda::grow_buffer(*b, bd, stream);
    }
    layers::cuda::grow_buffer(w.normed, bf16() ? 0 : bd, stream);  // with bf16 GEMMs the norm is kept only rounded
    layers::cuda::grow_buffer(w.normed16, bf16() ? bd : 0, stream);
    float* const normed = bf16() ? nullptr : w.normed.data();
    bfloat16* const normed16 = bf16() ? w.normed16.data() : nullptr;
    layers::cuda::grow_buffer(w.logits, static_cast<std::size_t>(batch * v), stream);
    std::int64_t const per_row = n * (s.conv_row + s.ssm_row);
    dim3 const grid(ops::cuda::grid_blocks(per_row, detail::begin_step_threads * 4, 32), static_cast<unsigned>(batch));
    detail::begin_step_kernel<float><<<grid, detail::begin_step_threads, 0, stream>>>(
        tokens, w.ids.data(), n, s.batch, s.conv_row, s.ssm_row, s.conv.data(), s.ssm.data());
    backends::cuda_check_launch("begin_step_kernel");
    layers::cuda::embedding_forward(be, v, d, embedding_.value, w.ids.data(), batch, w.u.data());
    layers::cuda::rmsnorm_forward(be, batch, d, cfg_.norm_eps, w.u.data(), nullptr, nullptr, norms_[0].value, normed,
                                  nullptr, normed16);
    for (std::int64_t i = 0; i < n; ++i) {
      blocks_[static_cast<std::size_t>(i)].step(h, batch, {normed, normed16}, w.out.data(), s.layer(i), w.block);
      // u += block output, normalized by the next layer's norm (norm_f after the last block)
      layers::cuda::rmsnorm_forward(be, batch, d, cfg_.norm_eps, w.out.data(), w.u.data(), w.u.data(),
                                    norms_[static_cast<std::size_t>(i + 1)].value, normed, nullptr, normed16);
    }
    backends::gemm(h, ops::trans::n, ops::trans::t, batch, v, d, 1.0f, {normed, d, normed16},
                   {head_.value, d, head_.rounded}, 0.0f, w.logits.data(), v, opt_.precision);  // [B, V]
    return w.logits.data();
  }

public:
  //! Sizes every buffer for a batch laid out as `seqs` (forward does it too; call it first to poison them).
  void reserve(sequences const& seqs) {
    graph_.reset();   // a buffer may move,
    layout_.clear();  // and the offsets with it: the next step is eager
    std::int64_t const rows = seqs.tokens(), d = cfg_.d_model, v = cfg_.vocab, n = cfg_.n_layers;
    auto const td = static_cast<std::size_t>(rows * d);
    cudaStream_t const s = stream();
    layers::cuda::grow_buffer(offsets_, static_cast<std::size_t>(seqs.count() + 1), s);
    layers::cuda::grow_buffer(checkpoint_offsets_, static_cast<std::size_t>(seqs.count() + 1), s);
    layers::cuda::grow_buffer(tokens_, static_cast<std::size_t>(rows), s);
    layers::cuda::grow_buffer(targets_, static_cast<std::size_t>(rows), s);
    layers::cuda::grow_buffer(mask_, static_cast<std::size_t>(rows), s);
    layers::cuda::grow_buffer(residual_, static_cast<std::size_t>(n + 1) * td, s);
    layers::cuda::grow_buffer(normed_, static_cast<std::size_t>(bf16() ? 1 : n + 1) * td, s);
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
    check_tokens(tokens, seqs.tokens());
    set_layout(seqs);
    copy_to_device(tokens_.data(), tokens.data(), tokens.size());
    return enqueue_forward();
  }

  //! Adds every parameter gradient for dlogits: [T, V] (a device pointer) over the last forward's batch.
  void backward(float const* dlogits) {
    std::int64_t const rows = seqs_.tokens(), d = cfg_.d_model, v = cfg_.vocab, n = cfg_.n_layers;
    auto const be = backend();
    device_sequences const dseqs = device_seqs();
    backends::gemm(blas_, ops::trans::t, ops::trans::n, v, d, rows, 1.0f, dlogits, v, normed(n), d, 1.0f, head_.grad, d,
                   opt_.precision);  // [V, D]
    backends::gemm(blas_, ops::trans::n, ops::trans::n, rows, d, v, 1.0f, {dlogits, v}, {head_.value, d, head_.rounded},
                   0.0f, dnormed_.data(), d, opt_.precision);  // [T, D]
    // du: the gradient of the residual stream u[i+1], which is also that of block i's output; the norm's backward
    // that completes it (the last to add to it) writes its bf16 rounding for the block.
    layers::cuda::rmsnorm_backward(be, rows, d, residual(n), rstd(n), norms_[static_cast<std::size_t>(n)].value,
                                   dnormed_.data(), du_.data(), norms_[static_cast<std::size_t>(n)].grad, false,
                                   workspace_.data(), block_dout16());
    for (std::int64_t i = n; i-- > 0;) {
      blocks_[static_cast<std::size_t>(i)].backward(blas_, seqs_, dseqs, normed(i), {du_.data(), block_dout16()},
                                                    dnormed_.data(), false, caches_[static_cast<std::size_t>(i)],
                                                    scratch_);
      // du = ∂L/∂u[i]: u[i+1]'s gradient (the residual path) plus norm i's; norm 0's goes to the embedding
      layers::cuda::rmsnorm_backward(be, rows, d, residual(i), rstd(i), norms_[static_cast<std::size_t>(i)].value,
                                     dnormed_.data(), du_.data(), norms_[static_cast<std::size_t>(i)].grad, true,
                                     workspace_.data(), i > 0 ? block_dout16() : nullptr);
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
    if (opt_.step_graphs && layout_of(b.seqs) == layout_) {  // the buffers and device offsets are this batch's
      check_tokens(b.inputs, rows);
      replay_gradients(b);
      return;
    }
    forward(b.inputs, b.seqs);
    copy_to_device(targets_.data(), b.targets.data(), b.targets.size());
    copy_to_device(mask_.data(), b.mask.data(), b.mask.size());
    enqueue_loss_and_backward();
  }

  //! Training steps whose gradients came from a replayed CUDA graph (step_graphs), and graphs captured.
  [[nodiscard]] std::int64_t graph_replays() const { return graph_replays_; }
  [[nodiscard]] std::int64_t graph_captures() const { return graph_captures_; }

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
  //! Whether step() runs as one kernel: fp32 GEMMs, a model within the fused step's bounds, and the option on.
  [[nodiscard]] bool fused() const {
    return opt_.fused_step && opt_.precision == backends::gemm_precision::fp32 && fused_step_fits(cfg_);
  }

  //! The fused step's parameters: every layer's tensors, the states, the logits (and with `next`, the argmax).
  [[nodiscard]] fused_step_params fused_params(std::int32_t const* tokens, std::int64_t batch, state& s, float* logits,
                                               std::int32_t* next = nullptr) const {
    fused_step_params p;
    p.batch = static_cast<int>(batch);
    p.d_model = static_cast<int>(cfg_.d_model);
    p.d_inner = static_cast<int>(cfg_.d_inner());
    p.d_state = static_cast<int>(cfg_.d_state);
    p.d_conv = static_cast<int>(cfg_.d_conv);
    p.dt_rank = static_cast<int>(cfg_.resolved_dt_rank());
    p.vocab = static_cast<int>(cfg_.vocab);
    p.layers = static_cast<int>(cfg_.n_layers);
    p.eps = static_cast<float>(cfg_.norm_eps);
    p.delta_min = static_cast<float>(cfg_.delta_min);
    p.tokens = tokens;
    p.embedding = embedding_.value;
    p.norm0 = norms_[0].value;
    p.head = head_.value;
    p.conv = s.conv.data();
    p.ssm = s.ssm.data();
    p.state_batch = s.batch;
    p.logits = logits;
    p.next = next;
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      auto const& b = blocks_[i].values();
      p.layer[i] = {b.in_proj, b.conv_weight, b.conv_bias, b.x_proj,   b.dt_proj,
                    b.dt_bias, b.a_log,       b.d,         b.out_proj, norms_[i + 1].value};
    }
    return p;
  }

  struct tensor_pair {
    float* value = nullptr;
    float* grad = nullptr;
    bfloat16 const* rounded = nullptr;  // with bf16 GEMMs, the value's bf16 copy (matrices only)
  };

  [[nodiscard]] bool bf16() const { return opt_.precision == backends::gemm_precision::bf16; }

  //! Token ids are checked on the host: the device cannot throw (as the host model does).
  void check_tokens(std::span<const std::int32_t> tokens, std::int64_t rows) const {
    check_arg(static_cast<std::int64_t>(tokens.size()) == rows, "tokens.size()", tokens.size(),
              "must equal the packed length " + std::to_string(rows));
    for (std::int32_t const t : tokens) {
      if (t < 0 || t >= cfg_.vocab) {
        check_arg(false, "token id", t, "must be in [0, vocab = " + std::to_string(cfg_.vocab) + ")");
      }
    }
  }

  //! A batch's layout: its sequences' offsets, then its token count.
  static std::vector<std::int64_t> layout_of(sequences const& seqs) {
    std::vector<std::int64_t> out(static_cast<std::size_t>(seqs.count() + 1));
    for (std::int64_t s = 0; s < seqs.count(); ++s) {
      out[static_cast<std::size_t>(s)] = seqs.begin(s);
    }
    out.back() = seqs.tokens();
    return out;
  }

  //! Sizes the buffers for `seqs` and copies its offsets, and its checkpoint offsets for the scan, to the device
  //! (dropping any step graph): every layer's scan reads the same ones.
  void set_layout(sequences const& seqs) {
    reserve(seqs);
    seqs_ = seqs;
    layout_ = layout_of(seqs);
    checkpoint_layout_ = scan::checkpoint_offsets(seqs, Scan::checkpoint_interval);
    copy_to_device(offsets_.data(), layout_.data(), layout_.size());
    copy_to_device(checkpoint_offsets_.data(), checkpoint_layout_.data(), checkpoint_layout_.size());
  }

  //! The forward from the token ids already on the device (tokens_), laid out as seqs_.
  float const* enqueue_forward() {
    std::int64_t const rows = seqs_.tokens(), d = cfg_.d_model, v = cfg_.vocab, n = cfg_.n_layers;
    device_sequences const dseqs = device_seqs();
    auto const be = backend();
    layers::cuda::embedding_forward(be, v, d, embedding_.value, tokens_.data(), rows, residual(0));
    layers::cuda::rmsnorm_forward(be, rows, d, cfg_.norm_eps, residual(0), nullptr, nullptr, norms_[0].value, normed(0),
                                  rstd(0), block_input16(0));
    for (std::int64_t i = 0; i < n; ++i) {
      blocks_[static_cast<std::size_t>(i)].forward(blas_, seqs_, dseqs, {normed(i), block_input16(i)},
                                                   block_out_.data(), caches_[static_cast<std::size_t>(i)], scratch_);
      // u[i+1] = block output + u[i], normalized by the next layer's norm (norm_f after the last block)
      layers::cuda::rmsnorm_forward(be, rows, d, cfg_.norm_eps, block_out_.data(), residual(i), residual(i + 1),
                                    norms_[static_cast<std::size_t>(i + 1)].value, normed(i + 1), rstd(i + 1),
                                    i + 1 < n ? block_input16(i + 1) : nullptr);
    }
    backends::gemm(blas_, ops::trans::n, ops::trans::t, rows, v, d, 1.0f, {normed(n), d},
                   {head_.value, d, head_.rounded}, 0.0f, logits_.data(), v, opt_.precision);  // [T, V]
    return logits_.data();
  }

  //! Masked cross-entropy of the last forward's logits against targets_ and mask_, zero_grad, backward.
  void enqueue_loss_and_backward() {
    ops::cuda::softmax_cross_entropy(backend(), seqs_.tokens(), cfg_.vocab, logits_.data(), targets_.data(),
                                     mask_.data(), dlogits_.data(), 1.0f, ce_result_.data(), workspace_.data());
    zero_grad();
    backward(dlogits_.data());
  }

  //! compute_gradients for a batch laid out as the buffers are: its ids go to pinned staging, and the graph of the
  //! copies, forward, loss and backward is replayed (captured first when there is none).
  void replay_gradients(train::batch const& b) {
    auto const rows = static_cast<std::size_t>(seqs_.tokens());
    if (staged_tokens_.size() != rows) {  // a new pinned buffer moves: capture again
      graph_.reset();
      staged_tokens_ = backends::pinned_buffer<std::int32_t>(rows);
      staged_targets_ = backends::pinned_buffer<std::int32_t>(rows);
      staged_mask_ = backends::pinned_buffer<std::uint8_t>(rows);
    }
    std::copy(b.inputs.begin(), b.inputs.end(), staged_tokens_.data());
    std::copy(b.targets.begin(), b.targets.end(), staged_targets_.data());
    std::copy(b.mask.begin(), b.mask.end(), staged_mask_.data());
    if (!graph_) {
      graph_ = backends::capture_graph(stream(), [&] {
        copy_to_device(tokens_.data(), staged_tokens_.data(), rows);
        copy_to_device(targets_.data(), staged_targets_.data(), rows);
        copy_to_device(mask_.data(), staged_mask_.data(), rows);
        enqueue_forward();
        enqueue_loss_and_backward();
      });
      ++graph_captures_;
    }
    graph_.launch(stream());
    ++graph_replays_;
  }

  [[nodiscard]] cudaStream_t stream() const { return opt_.be.stream; }

  [[nodiscard]] device_sequences device_seqs() const {
    return {.offsets = offsets_.data(),
            .count = seqs_.count(),
            .tokens = seqs_.tokens(),
            .checkpoint_offsets = checkpoint_offsets_.data(),
            .checkpoint_interval = Scan::checkpoint_interval};
  }
  [[nodiscard]] std::size_t rows_d() const { return static_cast<std::size_t>(seqs_.tokens() * cfg_.d_model); }
  float* residual(std::int64_t i) { return residual_.data() + static_cast<std::size_t>(i) * rows_d(); }  // u[i]
  //! The norm of u[i] in fp32: block i's input (i < n), the head's (i = n). With bf16 GEMMs the blocks read only
  //! its rounding (block_input16), and normed(i < n) is null.
  float* normed(std::int64_t i) {
    if (bf16()) {
      return i == cfg_.n_layers ? normed_.data() : nullptr;
    }
    return normed_.data() + static_cast<std::size_t>(i) * rows_d();
  }
  float* rstd(std::int64_t i) { return rstd_.data() + i * seqs_.tokens(); }
  //! bf16 GEMMs only (else null): where norm i writes block i's input rounded, the block's cache (sized by reserve).
  bfloat16* block_input16(std::int64_t i) { return bf16() ? caches_[static_cast<std::size_t>(i)].u16.data() : nullptr; }
  //! bf16 GEMMs only (else null): where a norm's backward writes the next block's dout rounded, the shared scratch.
  bfloat16* block_dout16() { return bf16() ? scratch_.dout16.data() : nullptr; }

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
  backends::device_buffer<char> cublas_workspace_{std::size_t{32} << 20};  // cuBLAS's advice for Hopper
  backends::blas_handle blas_;
  device_params params_;
  backends::device_buffer<float> m_, v_;  // AdamW moments, laid out as params_
  train::cuda::adamw adamw_;
  std::vector<block_type> blocks_;
  std::vector<tensor_pair> norms_;  // n_layers + 1: each layer's norm, then norm_f
  tensor_pair head_, embedding_;

  sequences seqs_;                                                // the last forward's batch
  std::vector<std::int64_t> layout_;                              // its layout_of, as the device offsets hold it
  backends::device_buffer<std::int64_t> offsets_;                 // [S + 1]
  std::vector<std::int64_t> checkpoint_layout_;                   // scan::checkpoint_offsets of seqs_ for the scan
  backends::device_buffer<std::int64_t> checkpoint_offsets_;      // [S + 1]: the same on the device
  backends::device_buffer<std::int32_t> tokens_, targets_;        // [T]
  backends::device_buffer<std::uint8_t> mask_;                    // [T]
  backends::device_buffer<float> residual_;                       // (n_layers + 1) x [T, D]: u[i]
  backends::device_buffer<float> normed_;                         // u[i]'s norms alike, or with bf16 norm_f's alone
  backends::device_buffer<float> rstd_;                           // (n_layers + 1) x [T]
  backends::device_buffer<float> block_out_, du_, dnormed_;       // [T, D]
  backends::device_buffer<float> logits_, dlogits_;               // [T, V]
  backends::device_buffer<ops::cross_entropy_result> ce_result_;  // [1]
  backends::device_buffer<char> workspace_;                       // rmsnorm, embedding, cross-entropy
  std::vector<layers::cuda::mamba_block_cache> caches_;           // n_layers
  layers::cuda::mamba_block_scratch scratch_;                     // shared by the blocks
  // step_graphs: the batch's ids in page-locked memory (what the graph's copies read), the graph, and counts
  backends::pinned_buffer<std::int32_t> staged_tokens_, staged_targets_;
  backends::pinned_buffer<std::uint8_t> staged_mask_;
  backends::graph_exec graph_;
  std::int64_t graph_replays_ = 0, graph_captures_ = 0;
};

}  // namespace ssmlen::models::cuda
