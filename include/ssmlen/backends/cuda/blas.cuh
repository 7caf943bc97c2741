// SPDX-License-Identifier: Apache-2.0
//! @file blas.cuh
//! GEMM on a CUDA device through cuBLAS, with the row-major semantics and argument order of ops::gemm:
//!   C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C
//! in three precisions: fp32 (exact float products, fp32 sums), tf32 (tensor cores on inputs rounded to 10-bit
//! mantissas) and bf16 (inputs rounded to bfloat16, fp32 sums). `blas_handle` owns a cuBLAS handle bound to one
//! stream, plus the staging memory where float inputs are rounded to bfloat16.
//! Row-major C is column-major Cᵀ = op(B)ᵀ op(A)ᵀ, so each call is one cublasGemmEx with the operands swapped and
//! nothing transposed in memory. cuBLAS gives the same bits on every run on one GPU model (no atomics in GEMM).
//! fp32 products of A [M, K] and Bᵀ ([N, K] stored) small enough to fit one launch of small tiles
//! (`small_gemm_fits`: a rollout step's GEMMs at the headline model's size) take small_gemm_nt instead.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/small_gemm.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>
#include <ssmlen/ops/gemm_problem.hpp>

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cublas_v2.h>
#include <string>
#include <string_view>
#include <utility>

namespace ssmlen::backends {

//! How the products of a device GEMM are formed; sums are fp32 in all three.
enum class gemm_precision { fp32, tf32, bf16 };

//! Throws `error("<what>: <cuBLAS status>")` unless `status` is CUBLAS_STATUS_SUCCESS.
inline void cublas_check(cublasStatus_t status, std::string_view what) {
  if (status == CUBLAS_STATUS_SUCCESS) {
    return;
  }
  throw error(std::string(what) + ": " + cublasGetStatusString(status) + " (" + cublasGetStatusName(status) + ")");
}

//! A cuBLAS handle whose work goes to one stream; movable, not copyable. GEMMs through one handle are ordered on
//! its stream, and so is the reuse of its bfloat16 staging memory.
class blas_handle {
public:
  explicit blas_handle(cuda const& be = {}) : stream_(be.stream) {
    cublas_check(cublasCreate(&handle_), "cublasCreate");
    cublas_check(cublasSetStream(handle_, stream_), "cublasSetStream");
    cublas_check(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");  // no TF32 unless asked
  }
  blas_handle(blas_handle const&) = delete;
  blas_handle& operator=(blas_handle const&) = delete;
  blas_handle(blas_handle&& o) noexcept
      : handle_(std::exchange(o.handle_, nullptr)), stream_(o.stream_), staging_(std::exchange(o.staging_, nullptr)),
        staging_bytes_(std::exchange(o.staging_bytes_, 0)) {}
  blas_handle& operator=(blas_handle&& o) noexcept {
    std::swap(handle_, o.handle_);
    std::swap(stream_, o.stream_);
    std::swap(staging_, o.staging_);
    std::swap(staging_bytes_, o.staging_bytes_);
    return *this;
  }
  ~blas_handle() {
    if (staging_ != nullptr) {
      cudaFreeAsync(staging_, stream_);  // destructors do not throw
    }
    if (handle_ != nullptr) {
      cublasDestroy(handle_);
    }
  }

  [[nodiscard]] cublasHandle_t get() const { return handle_; }
  [[nodiscard]] cuda backend() const { return cuda{stream_}; }

  //! At least `bytes` of device memory for rounding inputs, valid for work enqueued on the stream from now on.
  [[nodiscard]] void* staging(std::size_t bytes) {
    if (bytes > staging_bytes_) {
      if (staging_ != nullptr) {
        cuda_check(cudaFreeAsync(staging_, stream_), "cudaFreeAsync");  // earlier GEMMs on the stream finish first
        staging_ = nullptr;
        staging_bytes_ = 0;
      }
      cuda_check(cudaMallocAsync(&staging_, bytes, stream_), "cudaMallocAsync");
      staging_bytes_ = bytes;
    }
    return staging_;
  }

private:
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* staging_ = nullptr;
  std::size_t staging_bytes_ = 0;
};

namespace detail {

// Kernels in headers are templates: a plain __global__ function would be defined again in every translation unit.

//! C = beta C over [M, N] with row stride ldc (a bf16 C scaled in float and rounded back); beta == 0 writes zeros
//! without reading C.
template <class T>
__global__ void gemm_scale_c_kernel(std::int64_t m, std::int64_t n, float beta, T* c, std::int64_t ldc) {
  std::int64_t const total = m * n;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    T* e = c + (i / n) * ldc + i % n;
    *e = beta == 0.0f ? T(0.0f) : T(beta * static_cast<float>(*e));
  }
}

//! Packs a row-major [rows, cols] float matrix with row stride ld into dense bfloat16 (round to nearest even).
//! V = 4: four columns per thread, one 16-byte load and one 8-byte store (cols, ld and src 16-byte aligned, dst
//! 8-byte aligned); rows on blockIdx.y so that no thread divides.
template <int V>
__global__ void round_to_bf16_kernel(std::int64_t rows, std::int64_t cols, float const* src, std::int64_t ld,
                                     bfloat16* dst) {
  std::int64_t const groups = cols / V;
  for (std::int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    float const* in = src + r * ld;
    bfloat16* out = dst + r * cols;
    for (std::int64_t g = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; g < groups;
         g += std::int64_t{gridDim.x} * blockDim.x) {
      ops::cuda::store_rounded<V>(out + V * g, ops::cuda::load_floats<V>(in + V * g));
    }
  }
}

inline std::size_t align_up_256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

inline unsigned elementwise_blocks(std::int64_t items) {
  std::int64_t const blocks = (items + 255) / 256;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < 4096 ? blocks : 4096));
}

inline int blas_int(std::int64_t v, std::string_view name) {
  check_arg(v <= INT_MAX, name, v, "must fit cuBLAS's 32-bit integers");
  return static_cast<int>(v);
}

//! Handles m, n == 0 (nothing) and k == 0 or alpha == 0 (C = beta C); returns true when nothing is left to do.
template <class T>
bool gemm_degenerate(blas_handle const& h, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, float beta,
                     T* c, std::int64_t ldc) {
  if (m == 0 || n == 0) {
    return true;
  }
  if (k == 0 || alpha == 0.0f) {
    gemm_scale_c_kernel<T><<<elementwise_blocks(m * n), 256, 0, h.backend().stream>>>(m, n, beta, c, ldc);
    cuda_check_launch("gemm_scale_c_kernel");
    return true;
  }
  return false;
}

//! One cublasGemmEx for row-major C = alpha op(A) op(B) + beta C: column-major Cᵀ = op(B)ᵀ op(A)ᵀ. C is fp32 unless
//! c_type says otherwise.
inline void gemm_ex(blas_handle const& h, ops::trans ta, ops::trans tb, std::int64_t m, std::int64_t n, std::int64_t k,
                    float alpha, void const* a, std::int64_t lda, void const* b, std::int64_t ldb,
                    cudaDataType_t ab_type, float beta, void* c, std::int64_t ldc, cublasComputeType_t compute,
                    cudaDataType_t c_type = CUDA_R_32F) {
  auto const op = [](ops::trans t) { return t == ops::trans::n ? CUBLAS_OP_N : CUBLAS_OP_T; };
  cublas_check(cublasGemmEx(h.get(), op(tb), op(ta), blas_int(n, "gemm n"), blas_int(m, "gemm m"),
                            blas_int(k, "gemm k"), &alpha, b, ab_type, blas_int(ldb, "gemm ldb"), a, ab_type,
                            blas_int(lda, "gemm lda"), &beta, c, c_type, blas_int(ldc, "gemm ldc"), compute,
                            CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

}  // namespace detail

//! Rounds a row-major [rows, cols] float matrix (row stride ld, device pointers) into dense bfloat16 dst
//! [rows, cols] on `be.stream`, round to nearest even: what a bf16 GEMM reads, made once for several GEMMs.
inline void round_to_bf16(cuda const& be, std::int64_t rows, std::int64_t cols, float const* src, std::int64_t ld,
                          bfloat16* dst) {
  check_arg(rows >= 0 && cols >= 0, "bf16 rounding shape", rows < 0 ? rows : cols, "must be non-negative");
  check_arg(ld >= cols, "bf16 rounding ld", ld, "must be at least the column count");
  if (rows == 0 || cols == 0) {
    return;
  }
  check(src != nullptr && dst != nullptr, "round_to_bf16: src and dst must be device pointers, not null");
  if (ld == cols) {  // dense: one long row, so that the grid spreads over elements, not over rows of a few columns
    cols *= rows;    // (x_proj's [T, R + 2N] operands put one 80-column row on each block of 256 threads)
    ld = cols;
    rows = 1;
  }
  auto const addr = [](void const* p) { return reinterpret_cast<std::uintptr_t>(p); };
  bool const vec4 = cols % 4 == 0 && ld % 4 == 0 && addr(src) % 16 == 0 && addr(dst) % 8 == 0;
  std::int64_t const groups = vec4 ? cols / 4 : cols;
  // Rows on y; few rows (a whole flat parameter buffer is one) get more blocks on x, so the grid still fills the GPU.
  unsigned const y = static_cast<unsigned>(std::min<std::int64_t>(rows, 65535));
  unsigned const x = static_cast<unsigned>(std::min<std::int64_t>((groups + 255) / 256, std::max(64U, 8192U / y)));
  if (vec4) {
    detail::round_to_bf16_kernel<4><<<dim3(x, y), 256, 0, be.stream>>>(rows, cols, src, ld, dst);
  } else {
    detail::round_to_bf16_kernel<1><<<dim3(x, y), 256, 0, be.stream>>>(rows, cols, src, ld, dst);
  }
  cuda_check_launch("round_to_bf16_kernel");
}

//! A GEMM operand as stored (row-major, row stride ld): its float values and, optionally, the same values already
//! rounded to bfloat16 in the same layout (round_to_bf16 of the whole [rows, ld] matrix). A bf16 GEMM reads the
//! rounded copy when there is one and rounds the float values into the handle's staging memory when there is not;
//! other precisions read the floats.
//! With bf16 GEMMs an operand may be given by its rounded copy alone (values null): a tensor that is only ever a
//! GEMM operand need not be kept in fp32.
struct gemm_operand {
  float const* values = nullptr;
  std::int64_t ld = 0;
  bfloat16 const* rounded = nullptr;  // row stride ld too
};

namespace detail {

//! What an operand's null check looks at: its values or, in a bf16 GEMM given only the rounded copy, that copy.
inline void const* checked_operand(gemm_operand const& o, bool bf16) {
  bool const rounded_only = bf16 && o.values == nullptr && o.rounded != nullptr;
  return rounded_only ? static_cast<void const*>(o.rounded) : static_cast<void const*>(o.values);
}

struct bf16_operand_pair {
  bfloat16 const* a;
  std::int64_t lda;
  bfloat16 const* b;
  std::int64_t ldb;
};

//! A bf16 GEMM's operands: each one's rounded copy, or its values rounded into the handle's staging memory.
inline bf16_operand_pair bf16_operands(blas_handle& h, ops::trans ta, ops::trans tb, std::int64_t m, std::int64_t n,
                                       std::int64_t k, gemm_operand const& a, gemm_operand const& b) {
  // Stored shapes: A [M, K] or [K, M], B [K, N] or [N, K]; staged copies are dense (row stride = stored width).
  std::int64_t const a_rows = ta == ops::trans::n ? m : k, a_cols = ta == ops::trans::n ? k : m;
  std::int64_t const b_rows = tb == ops::trans::n ? k : n, b_cols = tb == ops::trans::n ? n : k;
  std::size_t const a_bytes =
      a.rounded ? 0 : align_up_256(static_cast<std::size_t>(a_rows * a_cols) * sizeof(bfloat16));
  std::size_t const b_bytes = b.rounded ? 0 : static_cast<std::size_t>(b_rows * b_cols) * sizeof(bfloat16);
  auto* staged = a_bytes + b_bytes > 0 ? static_cast<char*>(h.staging(a_bytes + b_bytes)) : nullptr;
  bfloat16 const* a16 = a.rounded;
  bfloat16 const* b16 = b.rounded;
  std::int64_t lda16 = a.ld, ldb16 = b.ld;
  if (a16 == nullptr) {
    auto* dst = reinterpret_cast<bfloat16*>(staged);
    round_to_bf16(h.backend(), a_rows, a_cols, a.values, a.ld, dst);
    a16 = dst;
    lda16 = a_cols;
  }
  if (b16 == nullptr) {
    auto* dst = reinterpret_cast<bfloat16*>(staged + a_bytes);
    round_to_bf16(h.backend(), b_rows, b_cols, b.values, b.ld, dst);
    b16 = dst;
    ldb16 = b_cols;
  }
  return {a16, lda16, b16, ldb16};
}

}  // namespace detail

//! C[M, N] = alpha op(A)[M, K] op(B)[K, N] + beta C on the handle's stream. A is stored [M, K] (ta = n) or
//! [K, M] (ta = t), B [K, N] (tb = n) or [N, K] (tb = t); lda, ldb, ldc are row strides; all pointers are device
//! pointers. beta == 0 means C is not read. With bf16 the result is that of gemm on bfloat16-rounded inputs with
//! fp32 sums: operands without a rounded copy are first rounded into the handle's staging memory (dense copies).
inline void gemm(blas_handle& h, ops::trans ta, ops::trans tb, std::int64_t m, std::int64_t n, std::int64_t k,
                 float alpha, gemm_operand const& a, gemm_operand const& b, float beta, float* c, std::int64_t ldc,
                 gemm_precision precision = gemm_precision::fp32) {
  bool const bf16 = precision == gemm_precision::bf16;
  ops::detail::check_gemm_args(ta, tb, m, n, k, detail::checked_operand(a, bf16), a.ld,
                               detail::checked_operand(b, bf16), b.ld, static_cast<void const*>(c), ldc);
  if (detail::gemm_degenerate(h, m, n, k, alpha, beta, c, ldc)) {
    return;
  }
  if (precision == gemm_precision::fp32 && ta == ops::trans::n && tb == ops::trans::t && small_gemm_fits(m, n, k)) {
    small_gemm_nt(h.backend(), m, n, k, alpha, a.values, a.ld, b.values, b.ld, beta, c, ldc);  // one launch, no split K
    return;
  }
  if (!bf16) {
    auto const compute = precision == gemm_precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    detail::gemm_ex(h, ta, tb, m, n, k, alpha, a.values, a.ld, b.values, b.ld, CUDA_R_32F, beta, c, ldc, compute);
    return;
  }
  auto const [a16, lda16, b16, ldb16] = detail::bf16_operands(h, ta, tb, m, n, k, a, b);
  detail::gemm_ex(h, ta, tb, m, n, k, alpha, a16, lda16, b16, ldb16, CUDA_R_16BF, beta, c, ldc, CUBLAS_COMPUTE_32F);
}

//! The bf16 product into a bf16 C (fp32 sums; beta C read in bf16, the result rounded once as it is written): for a
//! result only ever read in bf16, whose fp32 writes (and reads, with beta) would cost the GEMM more than its sums.
inline void gemm(blas_handle& h, ops::trans ta, ops::trans tb, std::int64_t m, std::int64_t n, std::int64_t k,
                 float alpha, gemm_operand const& a, gemm_operand const& b, float beta, bfloat16* c, std::int64_t ldc) {
  ops::detail::check_gemm_args(ta, tb, m, n, k, detail::checked_operand(a, true), a.ld,
                               detail::checked_operand(b, true), b.ld, static_cast<void const*>(c), ldc);
  if (detail::gemm_degenerate(h, m, n, k, alpha, beta, c, ldc)) {
    return;
  }
  auto const [a16, lda16, b16, ldb16] = detail::bf16_operands(h, ta, tb, m, n, k, a, b);
  detail::gemm_ex(h, ta, tb, m, n, k, alpha, a16, lda16, b16, ldb16, CUDA_R_16BF, beta, c, ldc, CUBLAS_COMPUTE_32F,
                  CUDA_R_16BF);
}

//! The same product on float operands (bf16: both rounded into the handle's staging memory first).
inline void gemm(blas_handle& h, ops::trans ta, ops::trans tb, std::int64_t m, std::int64_t n, std::int64_t k,
                 float alpha, float const* a, std::int64_t lda, float const* b, std::int64_t ldb, float beta, float* c,
                 std::int64_t ldc, gemm_precision precision = gemm_precision::fp32) {
  gemm(h, ta, tb, m, n, k, alpha, gemm_operand{a, lda}, gemm_operand{b, ldb}, beta, c, ldc, precision);
}

//! The same product on operands already stored as bfloat16 (fp32 sums, fp32 C).
inline void gemm(blas_handle& h, ops::trans ta, ops::trans tb, std::int64_t m, std::int64_t n, std::int64_t k,
                 float alpha, bfloat16 const* a, std::int64_t lda, bfloat16 const* b, std::int64_t ldb, float beta,
                 float* c, std::int64_t ldc) {
  ops::detail::check_gemm_args<void>(ta, tb, m, n, k, a, lda, b, ldb, c, ldc);
  if (detail::gemm_degenerate(h, m, n, k, alpha, beta, c, ldc)) {
    return;
  }
  detail::gemm_ex(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, CUDA_R_16BF, beta, c, ldc, CUBLAS_COMPUTE_32F);
}

}  // namespace ssmlen::backends
