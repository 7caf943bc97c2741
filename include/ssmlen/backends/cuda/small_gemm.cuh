// SPDX-License-Identifier: Apache-2.0
//! @file small_gemm.cuh
//! fp32 C[M, N] = alpha A[M, K] B[N, K]ᵀ + beta C (row-major, A and B read along K) for problems too small to fill
//! the GPU: a rollout step's GEMMs at the headline model's size (256 rows, 32–256 columns, K 64–128) when the step
//! runs layer by layer (models/cuda/fused_step.cuh runs it as one kernel where the model's shape allows).
//!
//! Why: for these shapes cuBLAS picks a SIMT kernel with a split-K reduction, two launches that take about 9 µs in
//! graph replay for 2 M multiply-adds, and those GEMMs were two thirds of the headline's step. Here each block owns a
//! 16 × 32 tile of C, loads a whole K chunk of both operands in one go (every load issued before the block's
//! one barrier) and sums each output along K in one fixed order: one launch, one wait for memory per chunk, and the
//! same bits on every run.
//!
//! Layout: 128 threads; lane = column of the tile, warp w = rows w, w + 4, w + 8, w + 12. A's rows are read back as
//! broadcast 16-byte loads, B's rows padded to 132 floats so that a quarter-warp's 16-byte loads hit distinct banks.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>

#include <cuda_runtime.h>

#include <cstdint>

namespace ssmlen::backends {

namespace detail {

inline constexpr int small_gemm_rows = 16;      // rows of C per block
inline constexpr int small_gemm_cols = 32;      // columns of C per block: one per lane
inline constexpr int small_gemm_chunk = 128;    // K staged at once
inline constexpr int small_gemm_threads = 128;  // 4 warps, each 4 rows of the tile

//! One operand's tile [Rows, chunk] of K columns [k0, k0 + kc) into registers, as quads of 4 floats: zeros past
//! `valid_rows` and past kc. `vec`: 16-byte loads (ld, K and the pointer multiples of 4 floats).
template <int Rows>
struct small_gemm_tile {
  static constexpr int quads_per_row = small_gemm_chunk / 4;
  static constexpr int count = Rows * quads_per_row / small_gemm_threads;  // quads per thread
  float4 v[count];

  __device__ void load(float const* src, std::int64_t ld, int valid_rows, int kc, bool vec) {
#pragma unroll
    for (int i = 0; i < count; ++i) {
      int const q = static_cast<int>(threadIdx.x) + i * small_gemm_threads;
      int const row = q / quads_per_row, col = q % quads_per_row * 4;
      float const* p = src + row * ld + col;
      bool const live = row < valid_rows;
      if (vec) {
        v[i] = live && col < kc ? *reinterpret_cast<float4 const*>(p) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      } else {
        v[i].x = live && col < kc ? p[0] : 0.0f;
        v[i].y = live && col + 1 < kc ? p[1] : 0.0f;
        v[i].z = live && col + 2 < kc ? p[2] : 0.0f;
        v[i].w = live && col + 3 < kc ? p[3] : 0.0f;
      }
    }
  }
  template <int Ld>
  __device__ void store(float (*dst)[Ld]) const {
#pragma unroll
    for (int i = 0; i < count; ++i) {
      int const q = static_cast<int>(threadIdx.x) + i * small_gemm_threads;
      *reinterpret_cast<float4*>(&dst[q / quads_per_row][q % quads_per_row * 4]) = v[i];
    }
  }
};

// Kernels in headers are templates: a plain __global__ function would be defined again in every translation unit.
template <int Rows>
__global__ void __launch_bounds__(small_gemm_threads)
    small_gemm_nt_kernel(int m, int n, int k, float alpha, float const* a, std::int64_t lda, float const* b,
                         std::int64_t ldb, float beta, float* c, std::int64_t ldc, bool vec_a, bool vec_b) {
  constexpr int Cols = small_gemm_cols, KC = small_gemm_chunk, Warps = small_gemm_threads / 32;
  static_assert(Rows % Warps == 0, "each warp owns Rows / 4 rows of the tile");
  __shared__ __align__(16) float sa[Rows][KC];      // [row, k]: read back as broadcasts
  __shared__ __align__(16) float sb[Cols][KC + 4];  // [column, k]: padded against bank conflicts
  int const lane = static_cast<int>(threadIdx.x) % 32, w = static_cast<int>(threadIdx.x) / 32;
  int const r0 = static_cast<int>(blockIdx.x) * Rows, c0 = static_cast<int>(blockIdx.y) * Cols;
  float acc[Rows / Warps] = {};  // [rows of this thread]
  small_gemm_tile<Rows> ta;
  small_gemm_tile<Cols> tb;
  for (int k0 = 0; k0 < k; k0 += KC) {
    int const kc = k - k0 < KC ? k - k0 : KC;
    ta.load(a + r0 * lda + k0, lda, m - r0, kc, vec_a);
    tb.load(b + c0 * ldb + k0, ldb, n - c0, kc, vec_b);
    if (k0 > 0) {
      __syncthreads();  // every warp is done with the previous chunk
    }
    ta.store(sa);
    tb.store(sb);
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < kc; kk += 4) {  // past kc the tiles hold zeros
      float4 const bv = *reinterpret_cast<float4 const*>(&sb[lane][kk]);
#pragma unroll
      for (int j = 0; j < Rows / Warps; ++j) {
        float4 const av = *reinterpret_cast<float4 const*>(&sa[w + j * Warps][kk]);
        acc[j] = fmaf(av.x, bv.x, acc[j]);
        acc[j] = fmaf(av.y, bv.y, acc[j]);
        acc[j] = fmaf(av.z, bv.z, acc[j]);
        acc[j] = fmaf(av.w, bv.w, acc[j]);
      }
    }
  }
  int const col = c0 + lane;
  if (col < n) {
#pragma unroll
    for (int j = 0; j < Rows / Warps; ++j) {
      int const row = r0 + w + j * Warps;
      if (row < m) {
        float* const e = c + row * ldc + col;
        *e = beta == 0.0f ? alpha * acc[j] : fmaf(beta, *e, alpha * acc[j]);  // beta == 0: C is not read
      }
    }
  }
}

}  // namespace detail

//! Whether small_gemm_nt takes this problem: few enough products that one launch of small tiles beats cuBLAS's
//! choice, and a grid within CUDA's limits.
inline bool small_gemm_fits(std::int64_t m, std::int64_t n, std::int64_t k) {
  return m <= 65536 && n <= 8192 && k <= 65536 && m * n * k <= (std::int64_t{1} << 24);
}

//! fp32 C[M, N] = alpha A[M, K] B[N, K]ᵀ + beta C on `be.stream`; row strides lda, ldb, ldc; beta == 0: C is not
//! read. The caller checks the arguments (backends::gemm does) and small_gemm_fits(m, n, k); m, n, k > 0.
inline void small_gemm_nt(cuda const& be, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, float const* a,
                          std::int64_t lda, float const* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  auto const aligned = [&](float const* p, std::int64_t ld) {
    return ld % 4 == 0 && k % 4 == 0 && reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
  };
  // One tile height for every shape: 16 rows (128 blocks for the headline's in_proj). Tiles of 4 rows took the
  // narrow shapes 0.4 µs faster alone, but not the headline's step (docs/perf.md).
  constexpr int rows = detail::small_gemm_rows, cols = detail::small_gemm_cols;
  dim3 const grid(static_cast<unsigned>((m + rows - 1) / rows), static_cast<unsigned>((n + cols - 1) / cols));
  detail::small_gemm_nt_kernel<rows><<<grid, detail::small_gemm_threads, 0, be.stream>>>(
      static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a, lda, b, ldb, beta, c, ldc,
      aligned(a, lda), aligned(b, ldb));
  cuda_check_launch("small_gemm_nt_kernel");
}

}  // namespace ssmlen::backends
