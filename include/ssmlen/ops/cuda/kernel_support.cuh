// SPDX-License-Identifier: Apache-2.0
//! @file kernel_support.cuh
//! What the layer, loss and optimizer kernels share: a stream-ordered workspace (the caller's, or one allocated for
//! the call), grid sizes for grid-stride loops, vector loads and stores of float rows, warp and block sums whose
//! results are the same bits on every run, and the multi-function-unit exponential, sigmoid and silu that the scans
//! and the conv kernels use.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/core/bfloat16.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace ssmlen::ops::cuda {

inline constexpr int warp_lanes = 32;
inline constexpr float log2e = 1.44269504088896341f;  // exp(x) = exp2(x log2 e)

//! 2^x as one MUFU.EX2 (flushing subnormal results to 0: a decay below 2^-126 is 0 for a scan). exp2f without
//! fast-math adds range fix-ups around it, about four instructions per decay.
__device__ inline float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

//! sigmoid(z) = 1 / (1 + e^-z) on MUFU.EX2 and MUFU.RCP, within a few 1e-7 of the host's sigmoid: 0 where e^-z
//! overflows, 1 where it underflows. The host's exp and IEEE division take about 40 instructions, which the scans
//! (bound by issue) and the conv kernels (by their instruction count, at the rates of their bytes) cannot afford.
__device__ inline float sigmoid_fast(float z) { return __fdividef(1.0f, 1.0f + exp2_approx(-z * log2e)); }
//! silu(z) = z · sigmoid(z), by sigmoid_fast.
__device__ inline float silu_fast(float z) { return z * sigmoid_fast(z); }
//! silu'(z) = s (1 + z (1 - s)), given s = sigmoid(z) (whose caller often needs it for silu as well).
__device__ inline float silu_slope(float z, float s) { return s * (1.0f + z * (1.0f - s)); }

//! Rounds a byte count up to 256 so that every piece of a workspace starts aligned for any vector type.
inline constexpr std::size_t align_bytes(std::size_t n) { return (n + 255) / 256 * 256; }

//! Blocks for a grid-stride loop over `items` with `threads` per block; capped, since the loops cover the rest.
inline unsigned grid_blocks(std::int64_t items, int threads, std::int64_t cap = 8192) {
  std::int64_t const blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < cap ? blocks : cap));
}

//! Whether a pointer allows the V = 4 accesses below: 16-byte aligned for floats, 8 for their bf16 rounding (null
//! counts as aligned: an absent tensor is not accessed).
inline bool aligned16(void const* p) { return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }
inline bool aligned8(void const* p) { return p == nullptr || reinterpret_cast<std::uintptr_t>(p) % 8 == 0; }

//! V consecutive floats in registers; V = 4 moves them as one 16-byte vector (the address must be 16-byte aligned).
template <int V>
struct float_vec {
  float v[V];
};

template <int V>
__device__ inline float_vec<V> load_floats(float const* p) {
  float_vec<V> r;
  if constexpr (V == 4) {
    float4 const q = *reinterpret_cast<float4 const*>(p);
    r.v[0] = q.x;
    r.v[1] = q.y;
    r.v[2] = q.z;
    r.v[3] = q.w;
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      r.v[j] = p[j];
    }
  }
  return r;
}

template <int V>
__device__ inline void store_floats(float* p, float_vec<V> const& r) {
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(p) = make_float4(r.v[0], r.v[1], r.v[2], r.v[3]);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      p[j] = r.v[j];
    }
  }
}

//! V consecutive bfloat16 values widened to floats: one 8-byte load for V = 4 (p 8-byte aligned).
template <int V>
__device__ inline float_vec<V> load_widened(bfloat16 const* p) {
  float_vec<V> r;
  if constexpr (V == 4) {
    ushort4 const q = *reinterpret_cast<ushort4 const*>(p);
    r.v[0] = bfloat16::to_float(q.x);
    r.v[1] = bfloat16::to_float(q.y);
    r.v[2] = bfloat16::to_float(q.z);
    r.v[3] = bfloat16::to_float(q.w);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      r.v[j] = static_cast<float>(p[j]);
    }
  }
  return r;
}

//! The bfloat16 rounding (nearest even) of r into p: one 8-byte store for V = 4 (p 8-byte aligned).
template <int V>
__device__ inline void store_rounded(bfloat16* p, float_vec<V> const& r) {
  if constexpr (V == 4) {
    *reinterpret_cast<ushort4*>(p) =
        ushort4{bfloat16(r.v[0]).bits, bfloat16(r.v[1]).bits, bfloat16(r.v[2]).bits, bfloat16(r.v[3]).bits};
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      p[j] = bfloat16(r.v[j]);
    }
  }
}

//! Sum over the 32 lanes by an xor butterfly: every lane adds the same pairs in the same order, so all lanes end
//! with identical bits (a + b == b + a in floating point).
template <class T>
__device__ inline T warp_sum(T v) {
#pragma unroll
  for (int m = warp_lanes / 2; m >= 1; m /= 2) {
    v += __shfl_xor_sync(0xffffffffu, v, m);
  }
  return v;
}

template <class T>
__device__ inline T warp_max(T v) {
#pragma unroll
  for (int m = warp_lanes / 2; m >= 1; m /= 2) {
    T const o = __shfl_xor_sync(0xffffffffu, v, m);
    v = o > v ? o : v;
  }
  return v;
}

//! Sums `v` over a block of `Threads` threads in a fixed tree (the same bits on every run); `shared` holds `Threads`
//! elements. Every thread gets the total.
template <int Threads, class T>
__device__ inline T block_sum(T v, T* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int h = Threads / 2; h >= 1; h /= 2) {
    if (static_cast<int>(threadIdx.x) < h) {
      shared[threadIdx.x] += shared[threadIdx.x + h];
    }
    __syncthreads();
  }
  return shared[0];
}

//! A workspace for one call: the caller's pointer when given, else memory allocated on the stream and freed on it
//! when the call's work is enqueued (stream order keeps it alive until the kernels ran).
class scratch {
public:
  scratch(void* given, std::size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (given != nullptr || bytes == 0) {
      ptr_ = static_cast<char*>(given);
    } else {
      backends::cuda_check(cudaMallocAsync(reinterpret_cast<void**>(&ptr_), bytes, stream), "cudaMallocAsync");
      owned_ = true;
    }
  }
  scratch(scratch const&) = delete;
  scratch& operator=(scratch const&) = delete;
  ~scratch() {
    if (owned_) {
      cudaFreeAsync(ptr_, stream_);  // destructors do not throw; a fault shows at the next checked call
    }
  }
  template <class T>
  [[nodiscard]] T* at(std::size_t offset) const {
    return reinterpret_cast<T*>(ptr_ + offset);
  }

private:
  char* ptr_ = nullptr;
  cudaStream_t stream_;
  bool owned_ = false;
};

}  // namespace ssmlen::ops::cuda
