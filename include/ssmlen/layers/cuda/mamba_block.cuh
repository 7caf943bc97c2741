// SPDX-License-Identifier: Apache-2.0
//! @file mamba_block.cuh
//! The Mamba-1 block on a CUDA device, float32, with the semantics of layers/mamba_block.hpp:
//!   [T, D] -> in_proj -> [T, 2ED] = (x, z) -> conv1d -> SiLU -> x_proj -> (Δ_low, B, C)
//!   Δ = delta_min + softplus(dt_proj(Δ_low) + bias), A = -exp(A_log) -> selective scan (+ D x) -> · SiLU(z)
//!   -> out_proj -> [T, D]
//! over a packed batch of variable-length sequences, each starting from a given state (conv window, SSM state) or
//! zeros and reporting its final state; the backward gives ∂L/∂u, adds every parameter gradient, and carries
//! gradients through both states. Composed from the cuBLAS GEMM (ops::gemm's argument order), the conv1d and scan
//! kernels, and two small kernels below (A from A_log, and back), so the activations are the host's up to GEMM
//! summation order (the softplus and the gate's silu, which the scan applies, and the conv's silu, all on the
//! multi-function unit, within a few 1e-7). The conv writes only SiLU of its output
//! (its backward recomputes the output from the input window it reads anyway and goes through silu' itself), and the
//! kernels that make a bf16 GEMM's operand write its bf16 copy, to save a pass over [T, ED] each; u and dout may come
//! with theirs, written by the model's RMSNorm kernels (mamba_block_rows), and with bf16 GEMMs ∂L/∂xz is kept only
//! rounded. The scan makes Δ from dt_proj's output as it reads it (bias, softplus on the multi-function unit) and its
//! backward writes ∂L/∂dt_pre and its bf16 copy, so Δ is never stored; its forward also writes the gated output y ·
//! silu(z) (silu on the same unit) for out_proj, so the gate's forward is no pass of its own; its backward takes the
//! gated output's gradient back through the gate as it loads it and writes ∂L/∂z (and sums dt_bias's gradient), so
//! neither is a pass of its own either. The activations kept for the backward are the host's (the scan keeps only
//! chunk-start states and recomputes the rest); the backward's buffers live in a scratch that every block of a model
//! shares, since blocks run one after another on one stream. `step` advances B sequences by one token each (the host
//! block's step_row on every row): in_proj, the conv's step kernel with SiLU fused, x_proj, then one fused SSM step
//! that applies dt_proj itself (scan/cuda/selective_scan_step.cuh), and out_proj.
#pragma once

#include <ssmlen/backends/cuda/blas.cuh>
#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/device_buffer.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/cuda/device_sequences.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/layers/cuda/conv1d.cuh>
#include <ssmlen/ops/cuda/kernel_support.cuh>
#include <ssmlen/ops/gemm_problem.hpp>
#include <ssmlen/scan/cuda/chunked.cuh>
#include <ssmlen/scan/cuda/selective_scan.cuh>
#include <ssmlen/scan/cuda/selective_scan_step.cuh>
#include <ssmlen/scan/cuda/state_split.cuh>
#include <ssmlen/scan/selective_scan.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ssmlen::layers::cuda {

//! The block's sizes: D, ED, N, K, R, and the floor of Δ.
struct mamba_block_shape {
  std::int64_t d_model = 0, d_inner = 0, d_state = 0, d_conv = 0, dt_rank = 0;
  float delta_min = 0;

  [[nodiscard]] std::int64_t bc_width() const { return dt_rank + 2 * d_state; }  // x_proj's outputs: Δ_low, B, C

  void validate() const {
    check_arg(d_model >= 1, "d_model", d_model, "must be positive");
    check_arg(d_inner >= 1, "d_inner", d_inner, "must be positive");
    check_arg(d_state >= 1 && d_state <= 256, "d_state", d_state, "must be in [1, 256]");
    check_arg(d_conv >= 1, "d_conv", d_conv, "must be positive");
    check_arg(dt_rank >= 1, "dt_rank", dt_rank, "must be positive");
    check_arg(delta_min >= 0, "delta_min", delta_min, "must be non-negative");
  }
};

//! The block's tensors (values or gradients) as device pointers, in mamba_ssm's layouts.
template <class P>
struct mamba_block_params {
  P in_proj = nullptr;      // [2ED, D]
  P conv_weight = nullptr;  // [ED, K]
  P conv_bias = nullptr;    // [ED]
  P x_proj = nullptr;       // [R + 2N, ED]
  P dt_proj = nullptr;      // [ED, R]
  P dt_bias = nullptr;      // [ED]
  P a_log = nullptr;        // [ED, N]
  P d = nullptr;            // [ED]
  P out_proj = nullptr;     // [D, ED]
};

//! Recurrent states of S sequences (or their gradients) as device pointers; null means none (zeros).
template <class P>
struct mamba_block_states {
  P conv = nullptr;  // [S, K-1, ED]: the last K-1 conv inputs
  P ssm = nullptr;   // [S, N, ED]
};

//! A [T, D] tensor the block reads (its input u, or the gradient dout) as device pointers: the fp32 values and,
//! for bf16 GEMMs, their bf16 rounding written beside them by the kernel that made them (null: the block rounds the
//! values itself, one more pass over them). Only GEMMs read these: fp32 and TF32 blocks read the values, bf16 ones
//! the rounding alone when there is one (the values may then be null).
struct mamba_block_rows {
  float const* values = nullptr;      // [T, D]
  bfloat16 const* rounded = nullptr;  // [T, D], or null
};

//! Makes `b` hold at least n elements. Reallocating waits for `stream` first: work enqueued there may still use
//! the old memory. The contents are not kept.
template <class T>
void grow_buffer(backends::device_buffer<T>& b, std::size_t n, cudaStream_t stream) {
  if (b.size() >= n) {
    return;
  }
  backends::cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize (before reallocating)");
  b = backends::device_buffer<T>(n);
}

//! Fills a buffer with 0xFF bytes on `stream`: float NaNs, so a value read before it was written shows.
template <class T>
void poison_buffer(backends::device_buffer<T>& b, cudaStream_t stream) {
  if (b.size() > 0) {
    backends::cuda_check(cudaMemsetAsync(b.data(), 0xFF, b.bytes(), stream), "cudaMemsetAsync (poison)");
  }
}

//! What the forward keeps for the backward; sized by the forward for its batch.
struct mamba_block_cache {
  backends::device_buffer<float> xz;           // [T, 2ED]: conv input x, then gate z
  backends::device_buffer<float> xs;           // [T, ED]: SSM input
  backends::device_buffer<float> dbc;          // [T, R + 2N]: Δ_low, B, C
  backends::device_buffer<float> dt_pre;       // [T, ED]: dt_proj(Δ_low); the scan adds the bias, takes the softplus
  backends::device_buffer<float> a;            // [N, ED]: -exp(A_log), transposed
  backends::device_buffer<float> checkpoints;  // [Σ ceil(len / interval), N, ED]: scan states
  backends::device_buffer<float> y;            // [T, ED]: SSM output, before gating
  backends::device_buffer<float> yg;           // [T, ED]: gated (fp32 GEMMs only; bf16 ones keep yg16)
  // bf16 GEMMs only: the GEMM inputs that the backward reads again, rounded once (backends::round_to_bf16)
  backends::device_buffer<bfloat16> u16;    // [T, D]: u, unless its rounding came with it
  backends::device_buffer<bfloat16> xs16;   // [T, ED]
  backends::device_buffer<bfloat16> dbc16;  // [T, R + 2N]
  backends::device_buffer<bfloat16> yg16;   // [T, ED]
  bfloat16 const* u_rounded = nullptr;      // [T, D]: what in_proj read, u16 or the caller's (alive until backward)

  //! rounded: also the bf16 copies (a block with bf16 GEMMs).
  void reserve(mamba_block_shape const& s, std::int64_t rows, std::int64_t checkpoint_rows, bool rounded,
               cudaStream_t stream) {
    auto const te = static_cast<std::size_t>(rows * s.d_inner);
    grow_buffer(xz, 2 * te, stream);
    grow_buffer(xs, te, stream);
    grow_buffer(dbc, static_cast<std::size_t>(rows * s.bc_width()), stream);
    grow_buffer(dt_pre, te, stream);
    grow_buffer(a, static_cast<std::size_t>(s.d_state * s.d_inner), stream);
    grow_buffer(checkpoints, static_cast<std::size_t>(checkpoint_rows * s.d_state * s.d_inner), stream);
    grow_buffer(y, te, stream);
    if (rounded) {
      grow_buffer(u16, static_cast<std::size_t>(rows * s.d_model), stream);
      grow_buffer(xs16, te, stream);
      grow_buffer(dbc16, static_cast<std::size_t>(rows * s.bc_width()), stream);
      grow_buffer(yg16, te, stream);
    } else {
      grow_buffer(yg, te, stream);
    }
  }

  void poison(cudaStream_t stream) {
    for (auto* b : {&xz, &xs, &dbc, &dt_pre, &a, &checkpoints, &y, &yg}) {
      poison_buffer(*b, stream);
    }
    for (auto* b : {&u16, &xs16, &dbc16, &yg16}) {
      poison_buffer(*b, stream);
    }
  }
};

//! The backward's buffers and the kernels' workspace; one scratch serves every block of a model.
struct mamba_block_scratch {
  backends::device_buffer<float> dyg;    // [T, ED]: ∂L/∂(y · silu(z)), which the scan takes back through the gate
  backends::device_buffer<float> dxz;    // [T, 2ED] (fp32 GEMMs only; bf16 ones keep dxz16)
  backends::device_buffer<float> dxs;    // [T, ED]: ∂L/∂xs
  backends::device_buffer<float> ddt;    // [T, ED]: ∂L/∂dt_pre (the scan goes through the softplus)
  backends::device_buffer<float> d_dbc;  // [T, R + 2N]
  backends::device_buffer<float> da;     // [N, ED]
  backends::device_buffer<char> workspace;
  // bf16 GEMMs only: gradients that two GEMMs each read, rounded once
  backends::device_buffer<bfloat16> dout16;      // [T, D]
  backends::device_buffer<bfloat16> ddt16;       // [T, ED]
  backends::device_buffer<bfloat16> d_dbc16;     // [T, R + 2N]
  backends::device_buffer<bfloat16> dxz16;       // [T, 2ED]
  backends::device_buffer<bfloat16> dxs_proj16;  // [T, ED]: x_proj's share of ∂L/∂xs, which the conv adds to dxs

  //! rounded: also the bf16 copies (a block with bf16 GEMMs); scan_bytes: the scan policy's workspace
  //! (scan::cuda::workspace_bytes).
  void reserve(mamba_block_shape const& s, device_sequences const& seqs, bool rounded, std::size_t scan_bytes,
               cudaStream_t stream);

  void poison(cudaStream_t stream) {
    for (auto* b : {&dyg, &dxz, &dxs, &ddt, &d_dbc, &da}) {
      poison_buffer(*b, stream);
    }
    for (auto* b : {&dout16, &ddt16, &d_dbc16, &dxz16, &dxs_proj16}) {
      poison_buffer(*b, stream);
    }
    poison_buffer(workspace, stream);
  }
};

//! The buffers of one recurrent step of B rows; one scratch serves every block of a model.
struct mamba_block_step_scratch {
  backends::device_buffer<float> xz;   // [B, 2ED]: conv input x, then gate z
  backends::device_buffer<float> xs;   // [B, ED]: SSM input, silu of the conv (the step keeps no pre-activation)
  backends::device_buffer<float> dbc;  // [B, R + 2N]: Δ_low, B, C
  backends::device_buffer<float> y;    // [B, ED]: the gated SSM output (fp32 and TF32 GEMMs)
  // bf16 GEMMs only: what x_proj and out_proj read, rounded by the kernels that make them
  backends::device_buffer<bfloat16> xs16, y16;  // [B, ED]

  //! rounded: the bf16 copies (a block with bf16 GEMMs) instead of y.
  void reserve(mamba_block_shape const& s, std::int64_t batch, bool rounded, cudaStream_t stream) {
    auto const be = static_cast<std::size_t>(batch * s.d_inner);
    grow_buffer(xz, 2 * be, stream);
    grow_buffer(xs, be, stream);
    grow_buffer(dbc, static_cast<std::size_t>(batch * s.bc_width()), stream);
    if (rounded) {
      grow_buffer(xs16, be, stream);
      grow_buffer(y16, be, stream);
    } else {
      grow_buffer(y, be, stream);
    }
  }

  void poison(cudaStream_t stream) {
    for (auto* b : {&xz, &xs, &dbc, &y}) {
      poison_buffer(*b, stream);
    }
    poison_buffer(xs16, stream);
    poison_buffer(y16, stream);
  }
};

namespace detail {

inline constexpr int block_threads = 256;

inline unsigned blocks_for(std::int64_t items) { return ops::cuda::grid_blocks(items, block_threads); }

//! a[n, c] = -exp(a_log[c, n]): A transposed to [N, ED] for the scan.
template <class T>
__global__ void __launch_bounds__(block_threads) make_a_kernel(std::int64_t ed, std::int64_t ns, T const* a_log, T* a) {
  for (std::int64_t i = blockIdx.x * std::int64_t{block_threads} + threadIdx.x; i < ns * ed;
       i += std::int64_t{gridDim.x} * block_threads) {
    std::int64_t const n = i / ed, c = i % ed;
    a[i] = -exp(a_log[c * ns + n]);
  }
}

//! Through A = -exp(A_log), ∂A/∂A_log = A: d_a_log[c, n] += da[n, c] · a[n, c].
template <class T>
__global__ void __launch_bounds__(block_threads)
    a_log_backward_kernel(std::int64_t ed, std::int64_t ns, T const* da, T const* a, T* d_a_log) {
  for (std::int64_t i = blockIdx.x * std::int64_t{block_threads} + threadIdx.x; i < ed * ns;
       i += std::int64_t{gridDim.x} * block_threads) {
    std::int64_t const c = i / ns, n = i % ns;
    d_a_log[i] += da[n * ed + c] * a[n * ed + c];
  }
}

}  // namespace detail

inline void mamba_block_scratch::reserve(mamba_block_shape const& s, device_sequences const& seqs, bool rounded,
                                         std::size_t scan_bytes, cudaStream_t stream) {
  auto const rows = seqs.tokens, ed = s.d_inner;
  auto const te = static_cast<std::size_t>(rows * ed);
  grow_buffer(dyg, te, stream);
  grow_buffer(dxs, te, stream);
  grow_buffer(ddt, te, stream);
  grow_buffer(d_dbc, static_cast<std::size_t>(rows * s.bc_width()), stream);
  grow_buffer(da, static_cast<std::size_t>(s.d_state * ed), stream);
  std::size_t const bytes = std::max(scan_bytes, conv1d_backward_workspace_bytes(rows, ed, s.d_conv));
  grow_buffer(workspace, bytes, stream);
  if (rounded) {
    grow_buffer(dout16, static_cast<std::size_t>(rows * s.d_model), stream);
    grow_buffer(ddt16, te, stream);
    grow_buffer(d_dbc16, static_cast<std::size_t>(rows * s.bc_width()), stream);
    grow_buffer(dxz16, 2 * te, stream);
    grow_buffer(dxs_proj16, te, stream);
  } else {
    grow_buffer(dxz, 2 * te, stream);
  }
}

//! One Mamba block whose parameters live at fixed device addresses (a model's parameter buffers). Work goes to
//! the stream of the cuBLAS handle passed to forward and backward. Scan: a CUDA scan policy
//! (scan::cuda::state_split<NT>, scan::cuda::block_parallel<W, I>, scan::recurrent or scan::chunked<C>).
template <class Scan = scan::cuda::state_split<>>
class mamba_block {
public:
  using scan_policy = Scan;

  //! rounded: with bf16 GEMMs, the weight matrices (in_proj, x_proj, dt_proj, out_proj) already rounded to
  //! bfloat16 in their layouts, kept current by the owner (null: each GEMM rounds its weight itself).
  mamba_block(mamba_block_shape const& shape, mamba_block_params<float*> const& value,
              mamba_block_params<float*> const& grad,
              backends::gemm_precision precision = backends::gemm_precision::fp32,
              mamba_block_params<bfloat16 const*> const& rounded = {})
      : s_(shape), value_(value), grad_(grad), rounded_(rounded), precision_(precision) {
    s_.validate();
  }

  [[nodiscard]] mamba_block_shape const& shape() const { return s_; }
  [[nodiscard]] mamba_block_params<float*> const& values() const { return value_; }
  [[nodiscard]] mamba_block_params<float*> const& grads() const { return grad_; }

  //! Rows of scan checkpoints a batch laid out as `seqs` needs.
  [[nodiscard]] static std::int64_t checkpoint_rows(sequences const& seqs) {
    return scan::checkpoint_offsets(seqs, Scan::checkpoint_interval).back();
  }

  //! Sizes the cache and the scratch for a batch (the forward does it too; call it first to poison them).
  void reserve(sequences const& host_seqs, device_sequences const& seqs, mamba_block_cache& k, mamba_block_scratch& ws,
               cudaStream_t stream) const {
    if (host_seqs.tokens() != seqs.tokens || host_seqs.count() != seqs.count) {
      throw error("mamba block (cuda): device sequences (" + std::to_string(seqs.count) + " sequences, " +
                  std::to_string(seqs.tokens) + " tokens) must describe the host sequences (" +
                  std::to_string(host_seqs.count()) + ", " + std::to_string(host_seqs.tokens()) + ")");
    }
    k.reserve(s_, seqs.tokens, checkpoint_rows(host_seqs), bf16(), stream);
    ws.reserve(s_, seqs, bf16(), scan::cuda::workspace_bytes(Scan{}, seqs, s_.d_inner, s_.d_state), stream);
  }

  //! u: [T, D] -> out: [T, D], device pointers; the batch is `seqs` (device offsets) laid out as `host_seqs`.
  //! init (null pointers: zeros) and final (null pointers: not written) are [S, K-1, ED] and [S, N, ED]. With bf16
  //! GEMMs, u's rounding, when given, is read again by the backward: keep it until then (k.u16 may hold it, written
  //! after reserve).
  void forward(backends::blas_handle& h, sequences const& host_seqs, device_sequences const& seqs,
               mamba_block_rows const& u, float* out, mamba_block_cache& k, mamba_block_scratch& ws,
               mamba_block_states<float const*> const& init = {}, mamba_block_states<float*> const& final = {}) const {
    using ops::trans;
    cudaStream_t const stream = h.backend().stream;
    reserve(host_seqs, seqs, k, ws, stream);
    std::int64_t const rows = seqs.tokens, d = s_.d_model, ed = s_.d_inner, r = s_.dt_rank, w = s_.bc_width();
    // With bf16 GEMMs the inputs the backward reads again are rounded once, here, and kept in the cache.
    bfloat16* const xs16 = bf16() ? k.xs16.data() : nullptr;
    bfloat16* const yg16 = bf16() ? k.yg16.data() : nullptr;
    k.u_rounded = rounding_of(h, u, rows, k.u16);
    gemm(h, trans::n, trans::t, rows, 2 * ed, d, {u.values, d, k.u_rounded}, {value_.in_proj, d, rounded_.in_proj},
         0.0f, k.xz.data(), 2 * ed);  // [T, 2ED]
    conv1d_forward(h.backend(), seqs, conv_weights(), k.xz.data(), 2 * ed, nullptr, init.conv, final.conv,
                   {.y = k.xs.data(), .y16 = xs16});  // [T, ED]: xs = silu(conv), which the backward recomputes
    gemm(h, trans::n, trans::t, rows, w, ed, {k.xs.data(), ed, xs16}, {value_.x_proj, ed, rounded_.x_proj}, 0.0f,
         k.dbc.data(), w);  // [T, R + 2N]
    gemm(h, trans::n, trans::t, rows, ed, r, {k.dbc.data(), w, round(h, rows, w, k.dbc.data(), k.dbc16)},
         {value_.dt_proj, r, rounded_.dt_proj}, 0.0f, k.dt_pre.data(), ed);  // [T, ED]
    detail::make_a_kernel<float><<<detail::blocks_for(s_.d_state * ed), detail::block_threads, 0, stream>>>(
        ed, s_.d_state, value_.a_log, k.a.data());
    backends::cuda_check_launch("make_a_kernel");
    scan::cuda::gate_output const gate{.z = k.xz.data() + ed,  // [T, ED] of [T, 2ED]
                                       .ld_z = 2 * ed,
                                       .gated = bf16() ? nullptr : k.yg.data(),  // bf16 GEMMs read only yg16
                                       .gated_rounded = yg16};
    scan::cuda::selective_scan_forward(Scan{}, h.backend(), seqs, scan_args(k, init.ssm), k.y.data(),
                                       k.checkpoints.data(), final.ssm, ws.workspace.data(), gate);  // y and y·silu(z)
    gemm(h, trans::n, trans::t, rows, d, ed, {k.yg.data(), ed, yg16}, {value_.out_proj, ed, rounded_.out_proj}, 0.0f,
         out, d);  // [T, D]
  }

  //! Adds every parameter gradient and writes du = ∂L/∂u ([T, D]; added to it when `accumulate`), given the
  //! forward's u (its values: with bf16 GEMMs the cache holds its rounding and u is not read, so it may be null),
  //! cache and init and dout = ∂L/∂out (with its bf16 rounding, or null). d_final (null: none) is the gradient arriving
  //! at the final states; d_init (null pointers: not written) receives ∂L/∂init.
  void backward(backends::blas_handle& h, sequences const& host_seqs, device_sequences const& seqs, float const* u,
                mamba_block_rows const& dout, float* du, bool accumulate, mamba_block_cache const& k,
                mamba_block_scratch& ws, mamba_block_states<float const*> const& init = {},
                mamba_block_states<float const*> const& d_final = {}, mamba_block_states<float*> const& d_init = {}) {
    using ops::trans;
    cudaStream_t const stream = h.backend().stream;
    std::int64_t const rows = seqs.tokens, d = s_.d_model, ed = s_.d_inner, r = s_.dt_rank, w = s_.bc_width();
    std::int64_t const ns = s_.d_state;
    check(host_seqs.tokens() == rows && k.xz.size() >= static_cast<std::size_t>(rows * 2 * ed) &&
              k.checkpoints.size() >= static_cast<std::size_t>(checkpoint_rows(host_seqs) * ns * ed),
          "mamba block backward (cuda): the cache must come from a forward over the same batch");
    ws.reserve(s_, seqs, bf16(), scan::cuda::workspace_bytes(Scan{}, seqs, s_.d_inner, s_.d_state), stream);
    auto const yg = k.yg.data();
    // ∂L/∂xz is only ever in_proj's GEMM operand: with bf16 GEMMs only its rounding is written.
    float* const dxz = bf16() ? nullptr : ws.dxz.data();         // [T, 2ED]
    bfloat16* const dxz16 = bf16() ? ws.dxz16.data() : nullptr;  // [T, 2ED]
    backends::gemm_operand const dout_op{dout.values, d, rounding_of(h, dout, rows, ws.dout16)};
    gemm(h, trans::t, trans::n, d, ed, rows, dout_op, {yg, ed, bf16() ? k.yg16.data() : nullptr}, 1.0f, grad_.out_proj,
         ed);  // [D, ED]
    gemm(h, trans::n, trans::n, rows, ed, d, dout_op, {value_.out_proj, ed, rounded_.out_proj}, 0.0f, ws.dyg.data(),
         ed);  // [T, ED]
    backends::cuda_check(cudaMemsetAsync(ws.da.data(), 0, static_cast<std::size_t>(ns * ed) * sizeof(float), stream),
                         "cudaMemsetAsync (dA)");                   // the scan accumulates dA
    scan::selective_scan_grads<float> const g{.dy = ws.dyg.data(),  // the gated output's: the scan takes it back
                                              .d_final_state = d_final.ssm,
                                              .dx = ws.dxs.data(),
                                              .ddt = ws.ddt.data(),
                                              .db = ws.d_dbc.data() + r,
                                              .dc = ws.d_dbc.data() + r + ns,
                                              .ld_dbc = w,
                                              .da = ws.da.data(),
                                              .dd = grad_.d,
                                              .d_init_state = d_init.ssm,
                                              .d_dt_bias = grad_.dt_bias};  // Σ_t ∂L/∂dt_pre
    scan::cuda::gate_gradient const gate{.z = k.xz.data() + ed,             // [T, ED] of [T, 2ED]
                                         .ld_z = 2 * ed,
                                         .y = k.y.data(),
                                         .dz = dxz != nullptr ? dxz + ed : nullptr,  // z's columns of ∂L/∂xz
                                         .dz_rounded = dxz16 != nullptr ? dxz16 + ed : nullptr,
                                         .ld_dz = 2 * ed};
    scan::cuda::selective_scan_backward(Scan{}, h.backend(), seqs, scan_args(k, init.ssm), k.checkpoints.data(), g,
                                        ws.workspace.data(), bf16() ? ws.ddt16.data() : nullptr,
                                        gate);  // ∂L/∂dt_pre, and ∂L/∂z through the gate
    detail::a_log_backward_kernel<float><<<detail::blocks_for(ed * ns), detail::block_threads, 0, stream>>>(
        ed, ns, ws.da.data(), k.a.data(), grad_.a_log);
    backends::cuda_check_launch("a_log_backward_kernel");

    // dt_proj: weight (its bias's gradient came from the scan) and Δ_low's columns of d_dbc
    backends::gemm_operand const ddt_op{ws.ddt.data(), ed, bf16() ? ws.ddt16.data() : nullptr};
    gemm(h, trans::t, trans::n, ed, r, rows, ddt_op, {k.dbc.data(), w, bf16() ? k.dbc16.data() : nullptr}, 1.0f,
         grad_.dt_proj, r);  // [ED, R]
    gemm(h, trans::n, trans::n, rows, r, ed, ddt_op, {value_.dt_proj, r, rounded_.dt_proj}, 0.0f, ws.d_dbc.data(),
         w);  // [T, R] of [T, R + 2N]
    // x_proj: weight, and dxs += d_dbc W (the scan wrote dxs). With bf16 GEMMs d_dbc W is written apart, in bf16,
    // and the conv adds it as it reads dxs: a K = 80 GEMM adding into dxs in fp32 spends most of its time reading
    // and writing [T, ED] floats, not on its sums (62 against 20 µs a layer at the paper's shape).
    backends::gemm_operand const d_dbc_op{ws.d_dbc.data(), w, round(h, rows, w, ws.d_dbc.data(), ws.d_dbc16)};
    gemm(h, trans::t, trans::n, w, ed, rows, d_dbc_op, {k.xs.data(), ed, bf16() ? k.xs16.data() : nullptr}, 1.0f,
         grad_.x_proj, ed);  // [R + 2N, ED]
    if (bf16()) {
      backends::gemm(h, trans::n, trans::n, rows, ed, w, 1.0f, d_dbc_op, {value_.x_proj, ed, rounded_.x_proj}, 0.0f,
                     ws.dxs_proj16.data(), ed);  // [T, ED]
    } else {
      gemm(h, trans::n, trans::n, rows, ed, w, d_dbc_op, {value_.x_proj, ed, rounded_.x_proj}, 1.0f, ws.dxs.data(),
           ed);  // [T, ED]: dxs += d_dbc W
    }
    conv1d_backward(h.backend(), seqs, conv_weights(), k.xz.data(), 2 * ed, ws.dxs.data(), dxz, 2 * ed, init.conv,
                    d_final.conv, d_init.conv, grad_.conv_weight, grad_.conv_bias, ws.workspace.data(), dxz16,
                    conv_activation::silu,  // through xs = silu(conv): x's columns of dxz (or of dxz16)
                    bf16() ? ws.dxs_proj16.data() : nullptr);
    // dxz or dxz16: x's columns from the conv, z's from the gate's backward
    backends::gemm_operand const dxz_op{dxz, 2 * ed, dxz16};
    gemm(h, trans::t, trans::n, 2 * ed, d, rows, dxz_op, {u, d, k.u_rounded}, 1.0f, grad_.in_proj,
         d);  // [2ED, D]
    gemm(h, trans::n, trans::n, rows, d, 2 * ed, dxz_op, {value_.in_proj, d, rounded_.in_proj},
         accumulate ? 1.0f : 0.0f, du, d);  // [T, D]
  }

  //! One token for each of B sequences, as the host block's step_row on every row: u [B, D] -> out [B, D], device
  //! pointers; state.conv [B, K-1, ED] and state.ssm [B, N, ED] advance in place. Work goes to h's stream and
  //! allocates nothing once `ws` has held a batch this large, so it can be captured in a CUDA graph. With bf16
  //! GEMMs the weights are read through their rounded copies (when the block has them) and the activations the
  //! GEMMs read are rounded by the kernels that make them: a step runs no rounding pass of its own.
  void step(backends::blas_handle& h, std::int64_t batch, mamba_block_rows const& u, float* out,
            mamba_block_states<float*> const& state, mamba_block_step_scratch& ws) const {
    using ops::trans;
    cudaStream_t const stream = h.backend().stream;
    check_arg(batch >= 0, "mamba block step batch", batch, "must be non-negative");
    check(state.ssm != nullptr && (s_.d_conv == 1 || state.conv != nullptr),
          "mamba block step (cuda): the conv and SSM states must be device pointers, not null");
    if (batch == 0) {
      return;
    }
    ws.reserve(s_, batch, bf16(), stream);
    std::int64_t const d = s_.d_model, ed = s_.d_inner, r = s_.dt_rank, ns = s_.d_state, w = s_.bc_width();
    bfloat16* const xs16 = bf16() ? ws.xs16.data() : nullptr;
    bfloat16* const y16 = bf16() ? ws.y16.data() : nullptr;
    float* const y = bf16() ? nullptr : ws.y.data();
    gemm(h, trans::n, trans::t, batch, 2 * ed, d, {u.values, d, u.rounded}, {value_.in_proj, d, rounded_.in_proj}, 0.0f,
         ws.xz.data(), 2 * ed);  // [B, 2ED]
    conv1d_step(h.backend(), conv_weights(), ws.xz.data(), 2 * ed, ws.xs.data(), state.conv, batch,
                conv_activation::silu, xs16);  // [B, ED]: silu of the conv (the scan reads it; x_proj its rounding)
    gemm(h, trans::n, trans::t, batch, w, ed, {ws.xs.data(), ed, xs16}, {value_.x_proj, ed, rounded_.x_proj}, 0.0f,
         ws.dbc.data(), w);                  // [B, R + 2N]
    scan::cuda::selective_scan_step_args a;  // dt_proj inside: fp32 products
    a.batch = batch;
    a.channels = ed;
    a.states = ns;
    a.x = ws.xs.data();
    a.dt_low = ws.dbc.data();
    a.ld_dt_low = w;
    a.dt_rank = r;
    a.dt_weight = value_.dt_proj;
    a.dt_bias = value_.dt_bias;
    a.delta_min = s_.delta_min;
    a.a_log = value_.a_log;
    a.b = ws.dbc.data() + r;
    a.c = ws.dbc.data() + r + ns;
    a.ld_bc = w;
    a.d = value_.d;
    a.z = ws.xz.data() + ed;
    a.ld_z = 2 * ed;
    a.state = state.ssm;
    a.y = y;
    a.y_rounded = y16;
    scan::cuda::selective_scan_step(h.backend(), a);
    gemm(h, trans::n, trans::t, batch, d, ed, {y, ed, y16}, {value_.out_proj, ed, rounded_.out_proj}, 0.0f, out,
         d);  // [B, D]
  }

private:
  [[nodiscard]] conv1d_weights conv_weights() const {
    return {s_.d_inner, s_.d_conv, value_.conv_weight, value_.conv_bias};
  }

  [[nodiscard]] scan::selective_scan_args<float> scan_args(mamba_block_cache const& k, float const* init) const {
    std::int64_t const r = s_.dt_rank, ns = s_.d_state;
    return {.channels = s_.d_inner,
            .states = ns,
            .x = k.xs.data(),
            .dt = k.dt_pre.data(),  // the scan makes Δ = delta_min + softplus(dt_pre + bias) as it reads it
            .a = k.a.data(),
            .b = k.dbc.data() + r,
            .c = k.dbc.data() + r + ns,
            .ld_bc = s_.bc_width(),
            .d = value_.d,
            .init_state = init,
            .dt_softplus = true,
            .dt_bias = value_.dt_bias,
            .delta_min = s_.delta_min};
  }

  [[nodiscard]] bool bf16() const { return precision_ == backends::gemm_precision::bf16; }

  //! With bf16 GEMMs: rounds src [rows, cols] (dense) into dst and returns it; otherwise null (GEMMs read floats).
  [[nodiscard]] bfloat16 const* round(backends::blas_handle& h, std::int64_t rows, std::int64_t cols, float const* src,
                                      backends::device_buffer<bfloat16>& dst) const {
    if (!bf16()) {
      return nullptr;
    }
    backends::round_to_bf16(h.backend(), rows, cols, src, cols, dst.data());
    return dst.data();
  }

  //! With bf16 GEMMs: the rounding handed in with t ([rows, D]), or else t rounded into dst; otherwise null.
  [[nodiscard]] bfloat16 const* rounding_of(backends::blas_handle& h, mamba_block_rows const& t, std::int64_t rows,
                                            backends::device_buffer<bfloat16>& dst) const {
    return bf16() && t.rounded != nullptr ? t.rounded : round(h, rows, s_.d_model, t.values, dst);
  }

  //! C = op(A) op(B) (alpha 1) in the block's precision, reading rounded copies where the operands have them.
  void gemm(backends::blas_handle& h, ops::trans ta, ops::trans tb, std::int64_t m, std::int64_t n, std::int64_t k,
            backends::gemm_operand const& a, backends::gemm_operand const& b, float beta, float* c,
            std::int64_t ldc) const {
    backends::gemm(h, ta, tb, m, n, k, 1.0f, a, b, beta, c, ldc, precision_);
  }

  mamba_block_shape s_;
  mamba_block_params<float*> value_, grad_;
  mamba_block_params<bfloat16 const*> rounded_;  // with bf16 GEMMs: the weight matrices rounded, or null
  backends::gemm_precision precision_;
};

}  // namespace ssmlen::layers::cuda
