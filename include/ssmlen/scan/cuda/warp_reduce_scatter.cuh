// SPDX-License-Identifier: Apache-2.0
//! @file warp_reduce_scatter.cuh
//! Sums V values held by every lane of a warp over the warp's 32 lanes, leaving the total of value `lane % V` in each
//! lane. Recursive halving costs V - 1 + log2(32 / V) shuffles where V separate butterflies would cost 5 V, which is
//! what makes a deterministic (atomic-free) reduction of dB and dC over channels affordable.
#pragma once

#include <cuda_runtime.h>

namespace ssmlen::scan::cuda {

namespace detail {

// One halving step per template level, so every array index is a compile-time constant and v stays in registers
// (a run-time loop over `half` sends v to local memory).
template <int Half, int V>
__device__ inline void reduce_scatter_halve(float (&v)[V], int lane) {
  if constexpr (Half >= 1) {
    bool const upper = (lane & Half) != 0;
#pragma unroll
    for (int i = 0; i < Half; ++i) {
      float const send = upper ? v[i] : v[i + Half];
      float const keep = upper ? v[i + Half] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, Half);
    }
    reduce_scatter_halve<Half / 2>(v, lane);
  }
}

}  // namespace detail

template <int V>
__device__ inline float warp_reduce_scatter(float (&v)[V], int lane) {
  static_assert(V >= 1 && V <= 32 && (V & (V - 1)) == 0, "V must be a power of two no larger than a warp");
  // Each step pairs lanes that differ in bit `half`: the upper lane keeps the upper half of the values, the lower
  // lane the lower half, and each adds what its partner sends. After log2(V) steps v[0] is value (lane % V).
  detail::reduce_scatter_halve<V / 2>(v, lane);
  float r = v[0];
#pragma unroll
  for (int m = V; m < 32; m *= 2) {  // a + b == b + a in floating point: both partners hold the same bits
    r += __shfl_xor_sync(0xffffffffu, r, m);
  }
  return r;
}

}  // namespace ssmlen::scan::cuda
