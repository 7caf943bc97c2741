// SPDX-License-Identifier: Apache-2.0
//! @file chunked.cuh
//! The policy chunked<C> (scan/policy.hpp) on a CUDA device: each sequence split in time into chunks of C tokens
//! that run in parallel, for the shapes whose sequences × channels cannot fill the GPU (one long sequence, a small
//! model's prefill), where the other policies walk a sequence's whole length in one block.
//!
//! Both directions work over a *view* of the batch whose sequences are the chunks (view[v] = the first token of
//! chunk v, in the order of the checkpoints: chunk j of sequence s is row ck[s] + j), so that the whole-sequence
//! kernels run unchanged over chunks. The forward takes three passes:
//!   1. every chunk scanned from a zero state (state_split<4> over the view): the state the chunk adds by its end;
//!      and Σ Δ over the chunk, per channel, whose exponential exp(A Σ Δ) is the chunk's decay;
//!   2. per (sequence, state, channel), the chunks in order: H_j = exp(A Σ Δ_j) H_{j-1} + h_j gives every chunk's
//!      entering state (the checkpoints, every C tokens, scan::checkpoint_offsets' layout) and the final state;
//!   3. every chunk scanned again from its entering state (state_split<4> again), writing y and the gate's outputs.
//! The backward mirrors it:
//!   1. per chunk, the gradient its own outputs send to its entering state, g_j = Σ_t (Π_{u ≤ t} a_u) C_t dy_t (a
//!      reverse walk of the states' gradient from zero; no x, B or states needed), and Σ Δ_j on the way;
//!   2. per (sequence, state, channel), the chunks in reverse: G_j = g_j + exp(A Σ Δ_j) G_{j+1} gives the gradient
//!      reaching the end of every chunk (G_{j+1}; the last chunk gets d_final) and the initial state's (G_0);
//!   3. state_split<4>'s forward over the view again, from the checkpoints, for its own checkpoints every 8 tokens,
//!      then its backward over the view, each chunk ending in its G_{j+1}: every per-token gradient and the sums
//!      over tokens.
//! So about twice the recurrence's work, over chunks instead of sequences. A chunk's decay is one exponential of a
//! sum where the scans multiply one per token: the two agree within float roundings. Every sum is in a fixed order:
//! the backward is deterministic.
//!
//! The view's chunk count is known on the device only (Σ ceil(len_s / C)); the host bounds it by ceil(T / C) + S
//! and the view ends in empty chunks at the token count, which every pass skips.
#pragma once

#include <ssmlen/scan/cuda/selective_scan.cuh>
#include <ssmlen/scan/cuda/state_split.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace ssmlen::scan::cuda {

namespace detail {

//! Chunks the view may hold: every full chunk of T tokens, plus one partial chunk per sequence.
inline std::int64_t chunk_bound(device_sequences const& seqs, std::int64_t chunk) {
  return (seqs.tokens + chunk - 1) / chunk + seqs.count;
}

//! The view as sequences (its offsets filled in on the device by chunk_view_kernel).
inline device_sequences chunk_view(device_sequences const& seqs, std::int64_t chunk, std::int64_t const* view) {
  return {view, chunk_bound(seqs, chunk), seqs.tokens};
}

inline constexpr std::int64_t view_interval = state_split<4>::checkpoint_interval;  // the passes over the view

//! Where chunked<C>'s scratch lies in its workspace: the checkpoint offsets, the view, [bound, N, ED] states twice
//! (forward: each chunk's own end state and its entering state; backward: each chunk's own gradient g and the
//! gradient at its end), Σ Δ per chunk [bound, ED], then the forward's state_split workspace over the view; the
//! backward adds the entering states [bound, N, ED], a y to recompute into [T, ED], state_split's checkpoints over
//! the view (at most T / 8 + bound of them) and its backward workspace.
struct chunked_layout {
  std::size_t ck_offsets = 0, view = 0, states_a = 0, states_b = 0, delta_sums = 0, inner = 0, forward_bytes = 0;
  std::size_t entering = 0, y = 0, view_ck = 0, backward_inner = 0, backward_bytes = 0;

  chunked_layout(device_sequences const& seqs, std::int64_t channels, std::int64_t states, std::int64_t chunk) {
    auto const bound = static_cast<std::size_t>(chunk_bound(seqs, chunk));
    auto const size = static_cast<std::size_t>(states * channels), tokens = static_cast<std::size_t>(seqs.tokens);
    auto const state_bytes = ops::cuda::align_bytes(bound * size * sizeof(float));
    view = ops::cuda::align_bytes((static_cast<std::size_t>(seqs.count) + 1) * sizeof(std::int64_t));
    states_a = view + ops::cuda::align_bytes((bound + 1) * sizeof(std::int64_t));
    states_b = states_a + state_bytes;
    delta_sums = states_b + state_bytes;
    inner = delta_sums + ops::cuda::align_bytes(bound * static_cast<std::size_t>(channels) * sizeof(float));
    workspace_layout const over_view({nullptr, static_cast<std::int64_t>(bound), seqs.tokens}, channels, states);
    forward_bytes = inner + over_view.forward_bytes;
    entering = inner;
    y = entering + state_bytes;
    view_ck = y + ops::cuda::align_bytes(tokens * static_cast<std::size_t>(channels) * sizeof(float));
    auto const view_ck_rows = tokens / static_cast<std::size_t>(view_interval) + bound;
    backward_inner = view_ck + ops::cuda::align_bytes(view_ck_rows * size * sizeof(float));
    backward_bytes = backward_inner + std::max(over_view.forward_bytes, over_view.backward_bytes);
  }
};

//! The view: view[v] = the first token of chunk v, that is offsets[s] + (v - ck[s]) · chunk for the sequence s with
//! ck[s] ≤ v < ck[s + 1], then the token count from ck[count] to view[bound] (empty chunks). ck: the sequences'
//! checkpoint offsets at interval `chunk`.
template <class Offset>  // a template, so that the header may be included by several translation units
__global__ void chunk_view_kernel(Offset const* offsets, Offset const* ck, Offset count, Offset chunk, Offset tokens,
                                  Offset bound, Offset* view) {
  Offset const chunks = ck[count];
  for (Offset v = blockIdx.x * Offset{blockDim.x} + threadIdx.x; v <= bound; v += Offset{gridDim.x} * blockDim.x) {
    if (v >= chunks) {
      view[v] = tokens;
      continue;
    }
    Offset lo = 0, hi = count;  // the last s with ck[s] ≤ v: empty sequences share their ck with the next
    while (hi - lo > 1) {
      Offset const mid = (lo + hi) / 2;
      (ck[mid] <= v ? lo : hi) = mid;
    }
    view[v] = offsets[lo] + (v - ck[lo]) * chunk;
  }
}

inline constexpr int sum_warps = 8;  // warps that share a chunk's tokens in chunk_delta_sums_kernel

//! Σ Δ over each chunk of the view, per channel ([bound, ED]), Δ made from dt as the scans make it. A block: one
//! chunk and 32 channels, its warps taking every 8th token, their sums added in warp order.
template <class T>  // T = float; a template, so that the header may be included by several translation units
__global__ void __launch_bounds__(lanes* sum_warps) chunk_delta_sums_kernel(forward_params p, T* sums) {
  __shared__ T part[sum_warps][lanes];
  int const lane = static_cast<int>(threadIdx.x), warp = static_cast<int>(threadIdx.y);
  std::int64_t const v = blockIdx.x / p.groups, ch = (blockIdx.x % p.groups) * lanes + lane;
  bool const live = ch < p.ed;
  float const bias = delta_bias(p, ch, live);
  T sum = 0;
  if (live) {
    for (std::int64_t t = p.offsets[v] + warp; t < p.offsets[v + 1]; t += sum_warps) {
      sum += delta_of(p, __ldg(p.dt + t * p.ed + ch), bias);
    }
  }
  part[warp][lane] = sum;
  __syncthreads();
  if (warp == 0 && live) {
    for (int w = 1; w < sum_warps; ++w) {
      sum += part[w][lane];
    }
    sums[v * p.ed + ch] = sum;
  }
}

//! Forward pass 2 and backward pass 2, per (sequence, state, channel): u ← exp(A Σ Δ_v) u + local[v] over the
//! sequence's chunks in walk order (first to last; Reverse: last to first) from `start` (null: zeros), the value
//! before each chunk into before[v] (and before_copy[v] when not null), the value after the last into `last` (when
//! not null); the view's empty chunks get zeros. A long sequence's chunks are split over the block's warps
//! (threadIdx.y: parts of the walk): each composes its part's maps, adds up the parts before it, then walks its part
//! again from there. A block: 32 consecutive (state, channel) elements of one sequence, so every access is a row.
template <bool Reverse>
__global__ void __launch_bounds__(1024)
    chunk_carry_kernel(forward_params p, std::int64_t const* ck, std::int64_t count, std::int64_t bound,
                       float const* sums, float const* local, float const* start, float* before, float* before_copy,
                       float* last) {
  __shared__ affine part_maps[32][lanes];  // [part, lane]
  std::int64_t const size = p.ns * p.ed, groups = (size + lanes - 1) / lanes;
  int const lane = static_cast<int>(threadIdx.x), part = static_cast<int>(threadIdx.y);
  int const parts = static_cast<int>(blockDim.y);
  std::int64_t const s = blockIdx.x / groups, e = (blockIdx.x % groups) * lanes + lane, ch = e % p.ed;
  bool const live = e < size;
  std::int64_t const first = ck[s], n = ck[s + 1] - first, per = (n + parts - 1) / parts;
  std::int64_t const k0 = min(n, part * per), k1 = min(n, k0 + per);
  float const a2 = load_or_zero(p.a, e, live) * log2e;  // A [N, ED]: e = n · ED + channel
  auto const chunk_at = [&](std::int64_t k) { return Reverse ? first + n - 1 - k : first + k; };
  auto const decay = [&](std::int64_t v) { return exp2_approx(a2 * sums[v * p.ed + ch]); };
  affine m{1.0f, 0.0f};
  if (live) {
    for (std::int64_t k = k0; k < k1; ++k) {
      std::int64_t const v = chunk_at(k);
      m = then(m, {decay(v), local[v * size + e]});
    }
  }
  part_maps[part][lane] = m;
  __syncthreads();
  if (live) {
    float u = start != nullptr ? __ldg(start + s * size + e) : 0.0f;
    for (int q = 0; q < part; ++q) {
      u = fmaf(part_maps[q][lane].a, u, part_maps[q][lane].b);
    }
    for (std::int64_t k = k0; k < k1; ++k) {
      std::int64_t const v = chunk_at(k);
      before[v * size + e] = u;
      if (before_copy != nullptr) {
        before_copy[v * size + e] = u;
      }
      u = fmaf(decay(v), u, local[v * size + e]);
    }
    if (part == parts - 1 && last != nullptr) {
      last[s * size + e] = u;
    }
  }
  std::int64_t const stride = std::int64_t{gridDim.x} * lanes * parts;
  for (std::int64_t i = ck[count] * size + (blockIdx.x * std::int64_t{parts} + part) * lanes + lane; i < bound * size;
       i += stride) {
    before[i] = 0.0f;
  }
}

//! Launches chunk_carry_kernel with about 8 chunks per part of a sequence's walk (at most 32 parts).
template <bool Reverse>
void launch_chunk_carry(forward_params const& p, std::int64_t const* ck, std::int64_t count, std::int64_t bound,
                        float const* sums, float const* local, float const* start, float* before, float* before_copy,
                        float* last, cudaStream_t stream) {
  std::int64_t const groups = (p.ns * p.ed + lanes - 1) / lanes;
  std::int64_t const blocks = block_count(count, groups);
  if (blocks == 0) {
    return;
  }
  std::int64_t const per_sequence = (bound + count - 1) / count;  // chunks, at most
  auto const parts = static_cast<unsigned>(std::clamp<std::int64_t>((per_sequence + 7) / 8, 1, 32));
  chunk_carry_kernel<Reverse><<<static_cast<unsigned>(blocks), dim3(lanes, parts), 0, stream>>>(
      p, ck, count, bound, sums, local, start, before, before_copy, last);
  cuda_check_launch("chunk_carry_kernel");
}

//! Backward pass 1, one thread per (chunk of the view, channel), NT states from n0 in registers: the gradient the
//! chunk's outputs send to its entering state, walking its tokens in reverse, g ← a_t (g + C_t dy_t), with dy taken
//! through the gate as the backward takes it ([bound, N, ED]); the first tile also writes the chunk's Σ Δ. (Four
//! threads per channel, 4 states each, measured 187 against 135 µs for one long sequence of 65,536 tokens: each
//! repeats the loads and Δ of every token.)
template <int NT>
__global__ void __launch_bounds__(lanes)
    chunk_state_gradient_kernel(forward_params p, float const* dy, gate_gradient gate, std::int64_t n0, float* g,
                                float* sums) {
  std::int64_t const v = blockIdx.x / p.groups;
  std::int64_t const ch = (blockIdx.x % p.groups) * lanes + threadIdx.x;
  if (ch >= p.ed) {
    return;
  }
  float const bias = delta_bias(p, ch, true);
  float u[NT], a2[NT];  // [NT]: states past N keep A = 0, C = 0 and are not stored
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    u[j] = 0.0f;
    a2[j] = load_or_zero(p.a, (n0 + j) * p.ed + ch, n0 + j < p.ns) * log2e;
  }
  float sum = 0.0f;  // Σ Δ, in reverse token order
  for (std::int64_t t = p.offsets[v + 1] - 1; t >= p.offsets[v]; --t) {
    float dy_t = __ldg(dy + t * p.ed + ch);
    if (gate.z != nullptr) {
      float const z = __ldg(gate.z + t * gate.ld_z + ch);
      dy_t *= silu_fast(z);  // the gradient reaching y, as gate_backward's
    }
    float const delta = delta_of(p, __ldg(p.dt + t * p.ed + ch), bias);
    sum += delta;
    float const* c = p.c + t * p.ld_bc + n0;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      float const cj = n0 + j < p.ns ? __ldg(c + j) : 0.0f;
      u[j] = exp2_approx(delta * a2[j]) * fmaf(cj, dy_t, u[j]);
    }
  }
  std::int64_t const size = p.ns * p.ed;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    if (n0 + j < p.ns) {
      g[v * size + (n0 + j) * p.ed + ch] = u[j];
    }
  }
  if (n0 == 0) {
    sums[v * p.ed + ch] = sum;
  }
}

//! The view's entering states for the backward's recompute: the checkpoints' rows, then zeros for the empty chunks
//! (which have no checkpoint row).
template <class T>  // T = float; a template, so that the header may be included by several translation units
__global__ void chunk_entering_states_kernel(std::int64_t const* ck, std::int64_t count, T const* checkpoints,
                                             std::int64_t bound, std::int64_t size, T* entering) {
  std::int64_t const rows = ck[count] * size;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < bound * size;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    entering[i] = i < rows ? __ldg(checkpoints + i) : T(0);
  }
}

//! What both directions begin with: the checkpoint offsets at interval C and the view over them.
struct chunk_setup {
  std::int64_t const* ck;
  device_sequences view;
};

inline chunk_setup make_chunk_view(device_sequences const& seqs, std::int64_t chunk, chunked_layout const& layout,
                                   ops::cuda::scratch const& ws, cudaStream_t stream) {
  auto const* ck = checkpoint_offsets_for(seqs, chunk, ws.at<std::int64_t>(layout.ck_offsets), stream);
  auto const view = chunk_view(seqs, chunk, ws.at<std::int64_t>(layout.view));
  chunk_view_kernel<std::int64_t><<<ops::cuda::grid_blocks(view.count + 1, 256, 1024), 256, 0, stream>>>(
      seqs.offsets, ck, seqs.count, chunk, seqs.tokens, view.count, ws.at<std::int64_t>(layout.view));
  cuda_check_launch("chunk_view_kernel");
  return {ck, view};
}

//! Σ Δ per chunk of the view; over_view: forward_params of the view in blocks of 32 channels.
inline void launch_delta_sums(forward_params const& over_view, std::int64_t bound, float* sums, cudaStream_t stream) {
  std::int64_t const blocks = block_count(bound, over_view.groups);
  chunk_delta_sums_kernel<float><<<static_cast<unsigned>(blocks), dim3(lanes, sum_warps), 0, stream>>>(over_view, sums);
  cuda_check_launch("chunk_delta_sums_kernel");
}

}  // namespace detail

//! Device workspace bytes chunked<C>'s forward needs (pass at least this much, or null to allocate per call): about
//! 8 · N · ED · (T / C + S) bytes for the chunks' states.
inline std::size_t chunked_forward_workspace_bytes(device_sequences const& seqs, std::int64_t channels,
                                                   std::int64_t states, std::int64_t chunk) {
  return detail::chunked_layout(seqs, channels, states, chunk).forward_bytes;
}
//! Device workspace bytes chunked<C>'s backward needs: about 4 · ED · T · (N / 8 + 1) bytes for a recompute of y and
//! states every 8 tokens, plus backward_workspace_bytes' partials.
inline std::size_t chunked_backward_workspace_bytes(device_sequences const& seqs, std::int64_t channels,
                                                    std::int64_t states, std::int64_t chunk) {
  return detail::chunked_layout(seqs, channels, states, chunk).backward_bytes;
}

//! Both directions' workspace bytes, for a caller that keeps one workspace (selective_scan.cuh's generic one).
template <std::int64_t C>
std::size_t workspace_bytes(chunked<C>, device_sequences const& seqs, std::int64_t channels, std::int64_t states) {
  detail::chunked_layout const layout(seqs, channels, states, C);
  return std::max(layout.forward_bytes, layout.backward_bytes);
}

//! Forward, chunked<C>: the contract of the block_parallel overload, with checkpoints every C tokens
//! ([Σ_s ceil(len_s / C), N, ED]) and a workspace of chunked_forward_workspace_bytes.
template <std::int64_t C>
void selective_scan_forward(chunked<C>, backends::cuda const& be, device_sequences const& seqs,
                            selective_scan_args<float> const& a, float* y, float* checkpoints, float* final_state,
                            void* workspace = nullptr, gate_output const& gate = {}) {
  detail::check_forward_args(seqs, a, y, gate);
  if (seqs.count == 0) {
    return;
  }
  detail::chunked_layout const layout(seqs, a.channels, a.states, C);
  ops::cuda::scratch ws(workspace, layout.forward_bytes, be.stream);
  auto const [ck, chunks] = detail::make_chunk_view(seqs, C, layout, ws, be.stream);
  auto* const h_local = ws.at<float>(layout.states_a);   // [bound, N, ED]
  auto* const entering = ws.at<float>(layout.states_b);  // [bound, N, ED]
  auto* const sums = ws.at<float>(layout.delta_sums);    // [bound, ED]
  void* const inner = ws.at<char>(layout.inner);

  selective_scan_args<float> local = a;
  local.init_state = nullptr;
  selective_scan_forward(state_split<4>{}, be, chunks, local, y, nullptr, h_local, inner);  // y: pass 3 writes it
  // Both passes below take only inputs from their parameters; what they write is passed beside them.
  auto const over_view = detail::make_forward_params(chunks, a, nullptr, detail::lanes, nullptr, nullptr, nullptr);
  detail::launch_delta_sums(over_view, chunks.count, sums, be.stream);

  auto const batch = detail::make_forward_params(seqs, a, ck, detail::lanes, nullptr, nullptr, nullptr);
  detail::launch_chunk_carry<false>(batch, ck, seqs.count, chunks.count, sums, h_local, a.init_state, entering,
                                    checkpoints, final_state, be.stream);

  local.init_state = entering;
  selective_scan_forward(state_split<4>{}, be, chunks, local, y, nullptr, nullptr, inner, gate);
}

//! Backward from chunked<C>'s checkpoints: the contract of the block_parallel overload (deterministic: no atomics),
//! with a workspace of chunked_backward_workspace_bytes.
template <std::int64_t C>
void selective_scan_backward(chunked<C>, backends::cuda const& be, device_sequences const& seqs,
                             selective_scan_args<float> const& a, float const* checkpoints,
                             selective_scan_grads<float> const& g, void* workspace = nullptr,
                             bfloat16* ddt_rounded = nullptr, gate_gradient const& gate = {}) {
  detail::check_backward_args(seqs, a, checkpoints, g, gate);
  if (seqs.count == 0) {
    return;
  }
  detail::chunked_layout const layout(seqs, a.channels, a.states, C);
  ops::cuda::scratch ws(workspace, layout.backward_bytes, be.stream);
  auto const [ck, chunks] = detail::make_chunk_view(seqs, C, layout, ws, be.stream);
  auto* const own = ws.at<float>(layout.states_a);       // [bound, N, ED]: g_j
  auto* const ending = ws.at<float>(layout.states_b);    // [bound, N, ED]: the gradient at each chunk's end
  auto* const sums = ws.at<float>(layout.delta_sums);    // [bound, ED]
  auto* const entering = ws.at<float>(layout.entering);  // [bound, N, ED]
  auto* const y = ws.at<float>(layout.y);                // [T, ED]: the recompute's, not read
  auto* const view_ck = ws.at<float>(layout.view_ck);    // [Σ_v ceil(len_v / 8), N, ED]
  void* const inner = ws.at<char>(layout.backward_inner);

  auto const over_view = detail::make_forward_params(chunks, a, nullptr, detail::lanes, nullptr, nullptr, nullptr);
  std::int64_t const blocks = detail::block_count(chunks.count, over_view.groups);
  detail::dispatch_state_tile(a.states, [&]<int NT>() {
    for (std::int64_t n0 = 0; n0 < a.states; n0 += NT) {
      detail::chunk_state_gradient_kernel<NT>
          <<<static_cast<unsigned>(blocks), detail::lanes, 0, be.stream>>>(over_view, g.dy, gate, n0, own, sums);
      backends::cuda_check_launch("chunk_state_gradient_kernel");
    }
  });
  auto const batch = detail::make_forward_params(seqs, a, ck, detail::lanes, nullptr, nullptr, nullptr);
  detail::launch_chunk_carry<true>(batch, ck, seqs.count, chunks.count, sums, own, g.d_final_state, ending, nullptr,
                                   g.d_init_state, be.stream);

  std::int64_t const size = a.states * a.channels;
  detail::chunk_entering_states_kernel<float>
      <<<ops::cuda::grid_blocks(chunks.count * size, 256, 4096), 256, 0, be.stream>>>(ck, seqs.count, checkpoints,
                                                                                      chunks.count, size, entering);
  backends::cuda_check_launch("chunk_entering_states_kernel");
  selective_scan_args<float> local = a;
  local.init_state = entering;
  selective_scan_forward(state_split<4>{}, be, chunks, local, y, view_ck, nullptr, inner);
  selective_scan_grads<float> per_chunk = g;
  per_chunk.d_final_state = ending;
  per_chunk.d_init_state = nullptr;  // G_0, from the carry
  selective_scan_backward(state_split<4>{}, be, chunks, local, view_ck, per_chunk, inner, ddt_rounded, gate);
}

}  // namespace ssmlen::scan::cuda
