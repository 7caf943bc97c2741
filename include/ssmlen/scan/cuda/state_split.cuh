// SPDX-License-Identifier: Apache-2.0
//! @file state_split.cuh
//! The `state_split<NT>` scan policy for CUDA: the recurrent forward with the states of each channel split over
//! warps, so that a (sequence, channel) pair runs on N / NT threads instead of one.
//!
//! Why: the forward of the Mamba-1 scan at N = 16 is bound by its exponentials (one exp(Δ·A) per token, channel and
//! state) and by issue, not by bytes. A recurrence per (sequence, channel, state) needs no cross-thread scan at all:
//! about 7 instructions per token and state (exp, the state update, the C·h term and a share of the loads; 13–15
//! as built, docs/perf.md), against 16 in block_parallel, whose cross-warp prefix and carry cost as much as the
//! recurrence itself. Splitting the states over warps gives N / NT times the threads of `recurrent` (enough warps to
//! keep the exponential units busy at training shapes) and keeps each thread's states in registers.
//!
//! Layout: a block per (sequence, 32 channels); lane = channel, warp w = states [n0 + w·NT, n0 + (w + 1)·NT).
//! B and C of each 64-token interval are staged in shared memory (read back as uniform, broadcast vector loads).
//! x and Δ go through shared memory in batches of 16 tokens, each warp loading its share of the next batch while the
//! current one is scanned. Each warp's C·h sums (plus D·x in warp 0) go to shared memory; after one barrier per batch
//! every warp adds up its tokens' sums over the warps and writes y. At most 16 states per launch (8 warps of NT = 2,
//! 4 of NT = 4, 2 of NT = 8); more states run in several launches, each adding to y.
//!
//! The backward is block_parallel<8, 8>'s (the same 64-token checkpoints). Measured speeds: docs/perf.md.
#pragma once

#include <ssmlen/scan/cuda/selective_scan.cuh>

#include <algorithm>
#include <cstdint>
#include <string>

namespace ssmlen::scan::cuda {

//! States per thread NT (1, 2, 4 or 8); checkpoints every 64 tokens, as `recurrent` and block_parallel<8, 8>.
//! NT = 2 is the fastest forward measured at the 130M shape (4 at the headline's, within 1 %): docs/perf.md.
template <int NT = 2>
struct state_split {
  static_assert(NT == 1 || NT == 2 || NT == 4 || NT == 8, "states per thread: 1, 2, 4 or 8");
  static constexpr algorithm kind = algorithm::recurrent;  // one token after another, per state
  static constexpr int states_per_thread = NT;
  static constexpr std::int64_t checkpoint_interval = 64;
  using backward_policy = block_parallel<8, 8>;  // its chunk is the checkpoint interval
  static_assert(backward_policy::chunk == checkpoint_interval);
  static std::string name() { return "state_split<" + std::to_string(NT) + ">"; }
  friend constexpr bool operator==(state_split, state_split) { return true; }
};

static_assert(policy<state_split<>>);

namespace detail {

inline constexpr int split_interval = 64;    // tokens whose B, C are staged together (= the checkpoint interval)
inline constexpr int split_batch = 16;       // tokens whose x, Δ are loaded together
inline constexpr int split_max_states = 16;  // states per launch: B, C, the warps' shares and x, Δ fit 48 KB

//! NT consecutive floats of a shared-memory row, as vector loads where NT allows.
template <int NT>
__device__ inline void load_states(float const* row, float (&out)[NT]) {
  if constexpr (NT % 4 == 0) {
#pragma unroll
    for (int j = 0; j < NT; j += 4) {
      float4 const v = *reinterpret_cast<float4 const*>(row + j);
      out[j] = v.x, out[j + 1] = v.y, out[j + 2] = v.z, out[j + 3] = v.w;
    }
  } else if constexpr (NT == 2) {
    float2 const v = *reinterpret_cast<float2 const*>(row);
    out[0] = v.x, out[1] = v.y;
  } else {
    out[0] = row[0];
  }
}

template <int NT, int WG>
__global__ void __launch_bounds__(WG* lanes) forward_state_split_kernel(forward_params p, std::int64_t n0) {
  constexpr int L = split_interval, NB = split_batch, S = WG * NT;
  static_assert(NB % WG == 0, "each warp finishes NB / WG tokens of a batch");
  __shared__ __align__(16) float sb[L][S], sc[L][S];  // [interval, S]: B, C of this launch's states
  __shared__ float partial[2][WG][NB][lanes];         // [buffer, warp, token, lane]: each warp's share of y
  __shared__ float2 xdt[2][NB][lanes];                // [buffer, token, lane]: x, Δ of a batch
  int const lane = static_cast<int>(threadIdx.x) % lanes, w = static_cast<int>(threadIdx.x) / lanes;
  std::int64_t const s = blockIdx.x / p.groups;
  std::int64_t const ch = (blockIdx.x % p.groups) * lanes + lane;
  bool const live = ch < p.ed;
  int const ed = static_cast<int>(p.ed);  // < 2^26 (checked on the host): i · ed fits 32 bits
  std::int64_t const t0 = p.offsets[s], t1 = p.offsets[s + 1];
  std::int64_t const n_intervals = (t1 - t0 + L - 1) / L;
  std::int64_t const size = p.ns * p.ed;  // one state: [N, ED]
  std::int64_t const ck0 = p.ck_offsets[s];
  std::int64_t const my_n0 = n0 + std::int64_t{w} * NT;  // this warp's first state
  // D·x joins warp 0's share in the first launch; later launches add to y.
  float const dskip = n0 == 0 && w == 0 ? load_or_zero(p.d, ch, live) : 0.0f;
  float h[NT], a2[NT];  // [NT]; states past N keep A = 0 and B = 0: an identity that adds nothing to y
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    bool const ok = live && my_n0 + j < p.ns;
    std::int64_t const at = (my_n0 + j) * p.ed + ch;
    h[j] = p.init != nullptr ? load_or_zero(p.init, s * size + at, ok) : 0.0f;
    a2[j] = load_or_zero(p.a, at, ok) * log2e;
  }
  // x, Δ of a batch are loaded once per block: warp w reads tokens [w·NB/WG, (w + 1)·NB/WG) of the next batch
  // while the current one is scanned, and leaves them in shared memory for every warp. Masked tokens (past the
  // sequence, dead lanes) get x = Δ = 0, an identity step.
  constexpr int mine_count = NB / WG;
  int const mine_first = w * mine_count;
  auto load_mine = [&](std::int64_t t, float2(&v)[mine_count]) {
    int const valid = live ? tokens_before<NB>(t, t1) : 0;
    float const* xr = p.x + (t + mine_first) * p.ed + ch;
    float const* dr = p.dt + (t + mine_first) * p.ed + ch;
#pragma unroll
    for (int r = 0; r < mine_count; ++r) {
      bool const ok = mine_first + r < valid;
      v[r] = make_float2(ok ? __ldg(xr + r * ed) : 0.0f, ok ? __ldg(dr + r * ed) : 0.0f);
    }
  };
  auto store_mine = [&](int b, float2 const(&v)[mine_count]) {
#pragma unroll
    for (int r = 0; r < mine_count; ++r) {
      xdt[b][mine_first + r][lane] = v[r];
    }
  };
  float2 next[mine_count];  // [NB / WG]: this warp's tokens of the next batch
  load_mine(t0, next);
  store_mine(0, next);  // visible after the first interval's barriers
  int buf = 0;
  for (std::int64_t k = 0; k < n_intervals; ++k) {
    std::int64_t const tc = t0 + k * L;
    if (p.ck != nullptr && live) {
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        if (my_n0 + j < p.ns) {
          p.ck[(ck0 + k) * size + (my_n0 + j) * p.ed + ch] = h[j];
        }
      }
    }
    __syncthreads();                                    // every warp is done with the previous interval's B, C
    stage_bc<L, S, WG * lanes>(sb, sc, p, tc, t1, n0);  // zeros past the sequence and past N
    __syncthreads();
    int const len = t1 - tc < L ? static_cast<int>(t1 - tc) : L;
    for (int tb = 0; tb < len; tb += NB) {
      std::int64_t const t = tc + tb;
      bool const more = t + NB < t1;
      if (more) {
        load_mine(t + NB, next);  // in flight while this batch is scanned
      }
      float* const share = &partial[buf][w][0][lane];
#pragma unroll
      for (int i = 0; i < NB; ++i) {
        float2 const v = xdt[buf][i][lane];  // x, Δ
        float const dtx = v.y * v.x;
        float bv[NT], cv[NT];
        load_states<NT>(&sb[tb + i][w * NT], bv);
        load_states<NT>(&sc[tb + i][w * NT], cv);
        float y = dskip * v.x;  // this warp's share: Σ_j C h over its NT states (+ D x in warp 0)
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          h[j] = fmaf(exp2_approx(v.y * a2[j]), h[j], dtx * bv[j]);
          y = fmaf(cv[j], h[j], y);
        }
        share[i * lanes] = y;
      }
      if (more) {
        store_mine(buf ^ 1, next);  // that buffer's last readers finished before the previous barrier
      }
      __syncthreads();  // every warp's share of this batch, and the next batch's x, Δ, are in
      int const valid = live ? tokens_before<NB>(t, t1) : 0;
      float* const yr = p.y + t * p.ed + ch;
#pragma unroll
      for (int r = 0; r < NB / WG; ++r) {
        int const i = r * WG + w;  // warp w finishes tokens w, w + WG, ...
        if (i < valid) {
          float sum = n0 == 0 ? 0.0f : yr[i * ed];
#pragma unroll
          for (int g = 0; g < WG; ++g) {
            sum += partial[buf][g][i][lane];
          }
          yr[i * ed] = sum;
        }
      }
      buf ^= 1;  // the next batch uses the other buffers; the barrier above orders their reuse after next
    }
  }
  if (p.final_state != nullptr && live) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      if (my_n0 + j < p.ns) {
        p.final_state[s * size + (my_n0 + j) * p.ed + ch] = h[j];
      }
    }
  }
}

}  // namespace detail

//! Forward scan; the contract of the block_parallel overload (checkpoints every 64 tokens).
template <int NT>
void selective_scan_forward(state_split<NT>, backends::cuda const& be, device_sequences const& seqs,
                            selective_scan_args<float> const& a, float* y, float* checkpoints, float* final_state,
                            void* workspace = nullptr) {
  detail::check_forward_args(seqs, a, y);
  check_arg(a.channels <= std::int64_t{1} << 26, "channels", a.channels, "must be at most 2^26 for state_split");
  detail::workspace_layout const layout(seqs, a.channels, a.states);
  ops::cuda::scratch ws(workspace, layout.forward_bytes, be.stream);
  auto* ck_offsets = ws.at<std::int64_t>(layout.ck_offsets);
  detail::launch_checkpoint_offsets(seqs, state_split<NT>::checkpoint_interval, ck_offsets, be.stream);
  auto const p = detail::make_forward_params(seqs, a, ck_offsets, detail::lanes, y, checkpoints, final_state);
  std::int64_t const blocks = detail::block_count(seqs.count, p.groups);
  if (blocks == 0) {
    return;
  }
  std::int64_t const groups = (a.states + NT - 1) / NT;  // warps the states need
  auto launch = [&]<int WG>() {
    for (std::int64_t n0 = 0; n0 < a.states; n0 += std::int64_t{WG} * NT) {  // later launches add to y, in order
      detail::forward_state_split_kernel<NT, WG>
          <<<static_cast<unsigned>(blocks), WG * detail::lanes, 0, be.stream>>>(p, n0);
      backends::cuda_check_launch("forward_state_split_kernel");
    }
  };
  constexpr int max_warps = std::min(8, detail::split_max_states / NT);  // at least 2
  std::int64_t const warps = std::min<std::int64_t>(groups, max_warps);  // launched as the power of two at or below it
  if (warps >= 8) {
    launch.template operator()<std::min(8, max_warps)>();
  } else if (warps >= 4) {
    launch.template operator()<std::min(4, max_warps)>();
  } else if (warps >= 2) {
    launch.template operator()<2>();
  } else {
    launch.template operator()<1>();
  }
}

//! Backward: block_parallel<8, 8>'s, from the same checkpoints.
template <int NT>
void selective_scan_backward(state_split<NT>, backends::cuda const& be, device_sequences const& seqs,
                             selective_scan_args<float> const& a, float const* checkpoints,
                             selective_scan_grads<float> const& g, void* workspace = nullptr) {
  selective_scan_backward(typename state_split<NT>::backward_policy{}, be, seqs, a, checkpoints, g, workspace);
}

}  // namespace ssmlen::scan::cuda
