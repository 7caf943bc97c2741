// SPDX-License-Identifier: Apache-2.0
//! @file fused_step.cuh
//! The whole recurrent step of a small fp32 Mamba language model in one launch: for each row, the embedding of its
//! token (a fresh_token starts its row from zeroed states), then per layer the RMSNorm fused with the residual add,
//! in_proj, the conv step with its SiLU, x_proj, dt_proj with the softplus, the SSM state update, the gate and
//! out_proj, then norm_f and the head's logits (and, for greedy decoding, each row's argmax, so that a greedy step's
//! graph is this one kernel): the arithmetic of mamba_lm::step's kernels and GEMMs, with the
//! products summed along K and C·h over the states in other orders (within float roundings of that path and of the
//! host's step).
//!
//! Why: at the headline's size (4 layers × d_model 64, ED 128) the step layer by layer is 29 launches, each a few µs
//! of latency for a few µs of work. One launch removes the launches' gaps and the round trips of the activations
//! through global memory: each block keeps its rows' activations in shared memory from the embedding to the logits,
//! reads every weight from L2 (about 0.5 MB for the headline's model, the same for every block) and reads and writes
//! the states once, in place. Every block pulls the whole model's weights through its SM each step, so the products
//! read them by 16-byte loads; the phases run one after another behind barriers (28 for the headline), each block's
//! time independent of how many blocks run. 83–85 → 56–57 µs a step in graph replay, 134–141 → 57 µs eager (one
//! H200, docs/perf.md).
//!
//! Layout: a block of 1024 threads owns 2 rows. In a product, a few adjacent lanes share each output (the rows'
//! sums in registers, K split between the lanes, the partials summed by shuffles); the conv step gives each
//! thread a (row, channel) pair, the SSM step four threads (a quarter of the states each), with A = -exp(A_log)
//! made once per block in shared memory; RMSNorm gives each of the first warps a row.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/math.hpp>
#include <ssmlen/layers/cuda/conv1d.cuh>
#include <ssmlen/layers/cuda/row_argmax.cuh>
#include <ssmlen/models/cuda/step_tokens.cuh>
#include <ssmlen/models/mamba_config.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace ssmlen::models::cuda {

inline constexpr int fused_step_rows = 2;           // rows per block: 128 blocks for 256 rows
inline constexpr int fused_step_threads = 1024;     // 32 warps: what hides the latency of each phase
inline constexpr int fused_step_max_layers = 16;    // layer pointers travel in the kernel's parameters
inline constexpr int fused_step_max_d_model = 128;  // the activations' shared-memory rows
inline constexpr int fused_step_max_d_inner = 256;
inline constexpr int fused_step_max_states = 16;  // the states a thread holds in registers
inline constexpr int fused_step_max_dt_rank = 16;
inline constexpr int fused_step_max_d_conv = 4;
inline constexpr int fused_step_max_vocab = 1024;  // the head: rows × V outputs per block

//! One layer's tensors (device pointers, mamba_ssm's layouts) and the norm that follows it.
struct fused_step_layer {
  float const* in_proj = nullptr;      // [2ED, D]
  float const* conv_weight = nullptr;  // [ED, K]
  float const* conv_bias = nullptr;    // [ED]
  float const* x_proj = nullptr;       // [R + 2N, ED]
  float const* dt_proj = nullptr;      // [ED, R]
  float const* dt_bias = nullptr;      // [ED]
  float const* a_log = nullptr;        // [ED, N]
  float const* d = nullptr;            // [ED]
  float const* out_proj = nullptr;     // [D, ED]
  float const* norm = nullptr;         // [D]: the next layer's norm, or norm_f after the last
};

struct fused_step_params {
  int batch = 0, d_model = 0, d_inner = 0, d_state = 0, d_conv = 0, dt_rank = 0, vocab = 0, layers = 0;
  float eps = 0, delta_min = 0;
  std::int32_t const* tokens = nullptr;  // [B]: a token, or fresh_token(t); read once (it may be host memory)
  float const* embedding = nullptr;      // [V, D]
  float const* norm0 = nullptr;          // [D]: the first layer's norm
  float const* head = nullptr;           // [V, D]
  float* conv = nullptr;                 // layer i's [state_batch, K-1, ED] after i such blocks
  float* ssm = nullptr;                  // layer i's [state_batch, N, ED] alike
  std::int64_t state_batch = 0;
  float* logits = nullptr;       // [B, V]
  std::int32_t* next = nullptr;  // [B]: each row's greedy next token (the argmax of its logits), or null
  fused_step_layer layer[fused_step_max_layers];
};

//! Whether a model of this configuration takes the fused step (every bound above; fp32 GEMMs are the caller's test).
inline bool fused_step_fits(mamba_config const& c) {
  return c.d_model <= fused_step_max_d_model && c.d_inner() <= fused_step_max_d_inner &&
         c.d_state <= fused_step_max_states && c.d_conv <= fused_step_max_d_conv &&
         c.resolved_dt_rank() <= fused_step_max_dt_rank && c.vocab <= fused_step_max_vocab && c.n_layers >= 1 &&
         c.n_layers <= fused_step_max_layers;
}

namespace detail {

inline constexpr int fused_bc_width = fused_step_max_dt_rank + 2 * fused_step_max_states;
inline constexpr int fused_ssm_lanes = 4;                                         // lanes per (row, channel)
inline constexpr int fused_ssm_states = fused_step_max_states / fused_ssm_lanes;  // states per lane, at most
static_assert(fused_step_threads % 32 == 0 && 32 % fused_ssm_lanes == 0, "a channel's lanes share a warp");

//! out[r][j] (+)= Σ_k in[r][k] W[j][k] for the block's rows r and j < n (W [n, k] in global memory, in and out in
//! shared memory). `add`: out += the sum (the residual), else out = the sum. G adjacent lanes share an output (G the
//! largest power of two ≤ 32 with n · G ≤ the block's threads), their partial sums added by shuffles in a fixed
//! order. When k is a multiple of 4 and W 16-byte aligned (the usual case), lane s of a group sums the quads of k
//! ≡ s (mod G), each from one 16-byte load of W and of each row: a block pulls every weight of the model through
//! its SM each step, and 16-byte loads move it in a quarter of the requests. Else lane s sums k ≡ s (mod G).
template <int Rows>
__device__ void rows_times_weight_t(float const* in, int ld_in, int k, float const* w, int n, float* out, int ld_out,
                                    bool add) {
  int const tid = static_cast<int>(threadIdx.x);
  int g = 1;
  while (g < 32 && n * g * 2 <= fused_step_threads) {
    g *= 2;
  }
  int const sub = tid % g;
  bool const quads = k % 4 == 0 && reinterpret_cast<std::uintptr_t>(w) % 16 == 0;  // in's rows: 16-byte aligned
  for (int j0 = 0; j0 < n; j0 += fused_step_threads / g) {
    int const j = j0 + tid / g;
    float acc[Rows] = {};
    if (j < n && quads) {
      float4 const* wj = reinterpret_cast<float4 const*>(w + static_cast<std::int64_t>(j) * k);
#pragma unroll 4
      for (int q = sub; q < k / 4; q += g) {
        float4 const wv = __ldg(wj + q);
#pragma unroll
        for (int r = 0; r < Rows; ++r) {
          float4 const iv = reinterpret_cast<float4 const*>(in + r * ld_in)[q];
          acc[r] = fmaf(iv.x, wv.x, acc[r]);
          acc[r] = fmaf(iv.y, wv.y, acc[r]);
          acc[r] = fmaf(iv.z, wv.z, acc[r]);
          acc[r] = fmaf(iv.w, wv.w, acc[r]);
        }
      }
    } else if (j < n) {
      float const* wj = w + static_cast<std::int64_t>(j) * k;
#pragma unroll 4
      for (int q = sub; q < k; q += g) {
        float const wv = __ldg(wj + q);
#pragma unroll
        for (int r = 0; r < Rows; ++r) {
          acc[r] = fmaf(in[r * ld_in + q], wv, acc[r]);
        }
      }
    }
    for (int m = g / 2; m >= 1; m /= 2) {  // g is the same in every lane: every lane shuffles
#pragma unroll
      for (int r = 0; r < Rows; ++r) {
        acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], m);
      }
    }
    if (j < n && sub == 0) {
#pragma unroll
      for (int r = 0; r < Rows; ++r) {
        out[r * ld_out + j] = add ? out[r * ld_out + j] + acc[r] : acc[r];
      }
    }
  }
}

//! y[r] = u[r] / sqrt(mean(u[r]²) + eps) · weight for the block's rows, one warp per row.
template <int Rows>
__device__ void rmsnorm_rows(float const (*u)[fused_step_max_d_model], float (*y)[fused_step_max_d_model], int d,
                             float const* weight, float eps) {
  int const lane = static_cast<int>(threadIdx.x) % 32, r = static_cast<int>(threadIdx.x) / 32;
  if (r < Rows) {
    constexpr int each = fused_step_max_d_model / 32;
    float wv[each];  // this lane's weights, loaded before the sum so that their latency hides behind it
#pragma unroll
    for (int i = 0; i < each; ++i) {
      wv[i] = lane + 32 * i < d ? __ldg(weight + lane + 32 * i) : 0.0f;
    }
    float ss = 0;
    for (int c = lane; c < d; c += 32) {
      ss += u[r][c] * u[r][c];
    }
    float const s = 1.0f / sqrtf(ops::cuda::warp_sum(ss) / static_cast<float>(d) + eps);
#pragma unroll
    for (int i = 0; i < each; ++i) {
      int const c = lane + 32 * i;
      if (c < d) {
        y[r][c] = u[r][c] * s * wv[i];
      }
    }
  }
}

template <int Rows>
__global__ void __launch_bounds__(fused_step_threads, 1) fused_step_kernel(fused_step_params p) {
  constexpr int DM = fused_step_max_d_model, EM = fused_step_max_d_inner, WM = fused_bc_width;
  static_assert(DM % 4 == 0 && EM % 4 == 0, "the products read the activations' rows by 16-byte loads");
  __shared__ alignas(16) float u[Rows][DM];        // the residual stream
  __shared__ alignas(16) float nrm[Rows][DM];      // its norm: the next product's input
  __shared__ alignas(16) float xz[Rows][2 * EM];   // in_proj's output: x, then z
  __shared__ alignas(16) float xs[Rows][EM];       // SiLU of the conv: the SSM's input
  __shared__ alignas(16) float dbc[Rows][WM];      // x_proj's output: Δ_low, B, C
  __shared__ alignas(16) float yg[Rows][EM];       // the gated SSM output
  __shared__ float a2[fused_step_max_states][EM];  // [state, channel]: A log2(e) = -exp(A_log) log2(e), one layer's
  __shared__ std::int32_t ids[Rows];               // the rows' ids, read once (tokens may be in host memory)
  __shared__ bool fresh[Rows];
  int const tid = static_cast<int>(threadIdx.x);
  int const row0 = static_cast<int>(blockIdx.x) * Rows;
  int const rows = p.batch - row0 < Rows ? p.batch - row0 : Rows;  // rows past the batch compute zeros, store nothing
  if (tid < Rows) {
    std::int32_t const t = tid < rows ? p.tokens[row0 + tid] : 0;
    ids[tid] = token_of(t);
    fresh[tid] = tid < rows && t < 0;
  }
  __syncthreads();
  int const d = p.d_model, ed = p.d_inner, ns = p.d_state, km1 = p.d_conv - 1, rank = p.dt_rank;
  for (int i = tid; i < Rows * d; i += fused_step_threads) {
    int const r = i / d, c = i % d;
    float v = 0.0f;
    if (r < rows) {
      std::int32_t const id = ids[r];
      v = id >= 0 && id < p.vocab ? __ldg(p.embedding + static_cast<std::int64_t>(id) * d + c) : NAN;
    }
    u[r][c] = v;
  }
  __syncthreads();
  rmsnorm_rows<Rows>(u, nrm, d, p.norm0, p.eps);
  __syncthreads();
  for (int l = 0; l < p.layers; ++l) {
    fused_step_layer const& L = p.layer[l];
    rows_times_weight_t<Rows>(&nrm[0][0], DM, d, L.in_proj, 2 * ed, &xz[0][0], 2 * EM, false);  // [rows, 2ED]
    __syncthreads();
    // The conv step (conv1d.cuh's conv_window_step, as the layer-by-layer step); state [K-1, ED], oldest first.
    for (int i = tid; i < Rows * ed; i += fused_step_threads) {
      int const r = i / ed, ch = i % ed;
      float v = 0.0f;
      if (r < rows) {
        float const* wc = L.conv_weight + static_cast<std::int64_t>(ch) * (km1 + 1);
        float* const st = p.conv + ((l * p.state_batch + row0 + r) * km1) * ed + ch;
        float win[fused_step_max_d_conv - 1];
#pragma unroll
        for (int k = 0; k < fused_step_max_d_conv - 1; ++k) {
          win[k] = k < km1 && !fresh[r] ? st[k * ed] : 0.0f;
        }
        v = ops::cuda::silu_fast(layers::cuda::conv_window_step(wc, __ldg(L.conv_bias + ch), xz[r][ch], win, km1));
#pragma unroll
        for (int k = 0; k < fused_step_max_d_conv - 1; ++k) {
          if (k < km1) {
            st[k * ed] = win[k];
          }
        }
      }
      xs[r][ch] = v;
    }
    for (int i = tid; i < ns * ed; i += fused_step_threads) {  // made once for the block's rows
      int const n = i / ed, ch = i % ed;
      a2[n][ch] = -expf(__ldg(L.a_log + static_cast<std::int64_t>(ch) * ns + n)) * ops::cuda::log2e;
    }
    __syncthreads();
    rows_times_weight_t<Rows>(&xs[0][0], EM, ed, L.x_proj, rank + 2 * ns, &dbc[0][0], WM, false);  // [rows, R + 2N]
    __syncthreads();
    // The SSM step: Δ = delta_min + softplus(dt_proj(Δ_low) + bias), h = exp(Δ A) h + Δ B x, y = (C·h + D x) silu(z),
    // by quads of lanes: lane q of a (row, channel)'s four holds states q, q + 4, … and the four partial sums of C·h
    // meet by two shuffles. Four times the threads of the (row, channel) pairs, each a quarter of the states' chain.
    for (int i0 = 0; i0 < Rows * ed * fused_ssm_lanes; i0 += fused_step_threads) {  // every lane shuffles
      int const i = i0 + tid, pair = i / fused_ssm_lanes, q = i % fused_ssm_lanes;
      int const r = pair / ed, ch = pair % ed;
      bool const live = r < rows;  // past the block's rows (or the loop's end): zeros, no loads or stores
      float* const h = p.ssm + ((l * p.state_batch + row0 + r) * ns) * ed + ch;
      float hv[fused_ssm_states];  // this lane's states, every load in flight before Δ's arithmetic
#pragma unroll
      for (int m = 0; m < fused_ssm_states; ++m) {
        int const n = q + fused_ssm_lanes * m;
        hv[m] = live && n < ns && !fresh[r] ? h[n * ed] : 0.0f;
      }
      float y = 0.0f, x = 0.0f;
      if (live) {
        float pre = 0.0f;
        float const* wd = L.dt_proj + static_cast<std::int64_t>(ch) * rank;
        for (int k = 0; k < rank; ++k) {
          pre += dbc[r][k] * __ldg(wd + k);
        }
        float const dt = p.delta_min + softplus(pre + __ldg(L.dt_bias + ch));
        x = xs[r][ch];
        float const dtx = dt * x;
#pragma unroll
        for (int m = 0; m < fused_ssm_states; ++m) {
          int const n = q + fused_ssm_lanes * m;
          if (n < ns) {
            float const hn = ops::cuda::exp2_approx(dt * a2[n][ch]) * hv[m] + dtx * dbc[r][rank + n];
            h[n * ed] = hn;
            y += hn * dbc[r][rank + ns + n];
          }
        }
      }
      y += __shfl_xor_sync(0xffffffffu, y, 1);
      y += __shfl_xor_sync(0xffffffffu, y, 2);
      if (q == 0 && r < Rows) {
        yg[r][ch] = live ? (y + __ldg(L.d + ch) * x) * silu(xz[r][ed + ch]) : 0.0f;
      }
    }
    __syncthreads();
    rows_times_weight_t<Rows>(&yg[0][0], EM, ed, L.out_proj, d, &u[0][0], DM, true);  // u += out_proj(y)
    __syncthreads();
    rmsnorm_rows<Rows>(u, nrm, d, L.norm, p.eps);
    __syncthreads();
  }
  // The head: the rows' logits through shared memory (xz's rows, free now) to global memory, 2 ED columns a pass;
  // with `next`, warp r also keeps row r's argmax over the passes (row_argmax's, so that the graph of a greedy step
  // needs no kernel after this one).
  int const warp = tid / ops::cuda::warp_lanes;
  float best = 0.0f;
  std::int64_t best_at = 0;
  for (int v0 = 0; v0 < p.vocab; v0 += 2 * EM) {
    int const cols = p.vocab - v0 < 2 * EM ? p.vocab - v0 : 2 * EM;
    rows_times_weight_t<Rows>(&nrm[0][0], DM, d, p.head + static_cast<std::int64_t>(v0) * d, cols, &xz[0][0], 2 * EM,
                              false);
    __syncthreads();
    if (p.next != nullptr && warp < Rows) {
      if (v0 == 0) {
        best = xz[warp][0];
      }
      layers::cuda::warp_argmax(&xz[warp][0], cols, v0, best, best_at);
    }
    for (int i = tid; i < Rows * cols; i += fused_step_threads) {
      int const r = i / cols, c = i % cols;
      if (r < rows) {
        p.logits[static_cast<std::int64_t>(row0 + r) * p.vocab + v0 + c] = xz[r][c];
      }
    }
    __syncthreads();
  }
  if (p.next != nullptr && warp < rows && tid % ops::cuda::warp_lanes == 0) {
    p.next[row0 + warp] = static_cast<std::int32_t>(best_at);
  }
}

}  // namespace detail

//! One fused step on `be.stream`; p's shapes must pass fused_step_fits and every pointer be a device pointer.
inline void fused_step(backends::cuda const& be, fused_step_params const& p) {
  unsigned const blocks = static_cast<unsigned>((p.batch + fused_step_rows - 1) / fused_step_rows);
  detail::fused_step_kernel<fused_step_rows><<<blocks, fused_step_threads, 0, be.stream>>>(p);
  backends::cuda_check_launch("fused_step_kernel");
}

}  // namespace ssmlen::models::cuda
