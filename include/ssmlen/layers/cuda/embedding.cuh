// SPDX-License-Identifier: Apache-2.0
//! @file embedding.cuh
//! Token embedding on a CUDA device, float32, with the semantics of layers/embedding.hpp: the forward gathers rows,
//! y[t] = E[tokens[t]]; the backward adds dE[id] += Σ dy[t] over the tokens with that id, in a fixed order, so the
//! gradient is the same bits on every run, without atomics, and within float rounding of the host's sequential
//! scatter-add.
//!
//! Backward: token positions are sorted by id with CUB's radix sort (stable: positions of one id stay in token
//! order), then the first position of every run of equal ids owns that id's row: blocks of that position (one per
//! tile of 32 columns) sum the run's dy rows in 8 interleaved parts, warp g taking the run's tokens g, g + 8, ...
//! in order, and add the parts to dE in a fixed tree, ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)). A small
//! vocabulary makes few long runs (addition: about 20 runs of 800 tokens), so the run's dependent adds, not its
//! bytes, set the time: one chain per column took about 0.2–0.3 ms a step at any width.
//! Ids outside [0, vocab) cannot throw from the device: the forward writes NaN rows for them and the backward skips
//! them.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/backends/cuda/stream.cuh>
#include <ssmlen/core/error.hpp>
#include <ssmlen/ops/cuda/kernel_support.cuh>

#include <cub/device/device_radix_sort.cuh>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace ssmlen::layers::cuda {

namespace detail {

inline constexpr int embedding_threads = 256;

template <class T>
__global__ void __launch_bounds__(embedding_threads)
    embedding_forward_kernel(std::int64_t vocab, std::int64_t dim, T const* weight, std::int32_t const* tokens,
                             std::int64_t n, T* y) {
  std::int64_t const total = n * dim;
  for (std::int64_t i = blockIdx.x * std::int64_t{embedding_threads} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * embedding_threads) {
    std::int64_t const t = i / dim, d = i % dim;
    std::int32_t const id = tokens[t];
    y[i] = id >= 0 && id < vocab ? weight[std::int64_t{id} * dim + d] : T(NAN);
  }
}

//! Sort keys (the id, or `vocab` for an id out of range) and values (the token position).
template <class T>
__global__ void __launch_bounds__(embedding_threads)
    embedding_keys_kernel(std::int64_t vocab, std::int32_t const* tokens, std::int64_t n, std::int32_t* keys,
                          std::int32_t* positions) {
  for (std::int64_t t = blockIdx.x * std::int64_t{embedding_threads} + threadIdx.x; t < n;
       t += std::int64_t{gridDim.x} * embedding_threads) {
    std::int32_t const id = tokens[t];
    keys[t] = id >= 0 && id < vocab ? id : static_cast<std::int32_t>(vocab);
    positions[t] = static_cast<std::int32_t>(t);
  }
}

//! A block per sorted position; the first position of a run of equal ids adds the run's rows to dE.
inline constexpr int embedding_columns = 32;  // columns of an accumulate block: a warp's lanes
inline constexpr int embedding_parts = 8;     // warps of an accumulate block: the parts a run is summed in
inline constexpr int embedding_ahead = 4;     // rows a warp loads before it adds them

//! blockIdx.x: a position i of the sorted keys (blocks that are not the first of a run skip it); blockIdx.y: a tile
//! of 32 columns. Warp g sums dy[positions[i + g + 8 k], d] over k in order (from 0); then
//! dweight[id, d] += ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)).
template <class T>
__global__ void __launch_bounds__(embedding_columns* embedding_parts)
    embedding_accumulate_kernel(std::int64_t vocab, std::int64_t dim, std::int32_t const* keys,
                                std::int32_t const* positions, std::int64_t n, T const* dy, T* dweight) {
  constexpr int P = embedding_parts;
  static_assert(P == 8, "the tree below adds 8 parts");
  __shared__ T parts[P][embedding_columns];
  int const lane = static_cast<int>(threadIdx.x) % embedding_columns,
            g = static_cast<int>(threadIdx.x) / embedding_columns;
  for (std::int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    std::int32_t const id = keys[i];
    if (id == vocab || (i > 0 && keys[i - 1] == id)) {
      continue;  // out of range, or not the first of its run (the same for the whole block)
    }
    T* row = dweight + std::int64_t{id} * dim;  // [D]
    for (std::int64_t d0 = blockIdx.y * std::int64_t{embedding_columns}; d0 < dim;
         d0 += std::int64_t{gridDim.y} * embedding_columns) {
      std::int64_t const d = d0 + lane;
      bool const column = d < dim;
      T acc = 0;
      bool more = true;
      for (std::int64_t j = i + g; more; j += P * embedding_ahead) {  // this part's tokens of the run, in order
        T v[embedding_ahead];
        bool in_run[embedding_ahead];
#pragma unroll
        for (int u = 0; u < embedding_ahead; ++u) {  // keys are sorted: the run is a prefix of what follows i
          std::int64_t const k = j + u * P;
          in_run[u] = k < n && keys[k] == id;
          v[u] = in_run[u] && column ? dy[std::int64_t{positions[k]} * dim + d] : T(0);
        }
#pragma unroll
        for (int u = 0; u < embedding_ahead; ++u) {
          if (in_run[u]) {
            acc += v[u];
          }
        }
        more = in_run[embedding_ahead - 1];
      }
      parts[g][lane] = acc;
      __syncthreads();
      if (g == 0 && column) {
        T const(&p)[P][embedding_columns] = parts;
        T const low = (p[0][lane] + p[1][lane]) + (p[2][lane] + p[3][lane]);
        T const high = (p[4][lane] + p[5][lane]) + (p[6][lane] + p[7][lane]);
        row[d] += low + high;
      }
      __syncthreads();  // the parts are read before the next tile writes them
    }
  }
}

//! Bits that hold every key in [0, vocab].
inline int key_bits(std::int64_t vocab) {
  int bits = 1;
  while ((std::int64_t{1} << bits) <= vocab) {
    ++bits;
  }
  return bits;
}

//! Workspace pieces (byte offsets): keys and positions before and after the sort, then CUB's temporary storage.
struct embedding_layout {
  std::size_t keys_in = 0, keys_out = 0, pos_in = 0, pos_out = 0, cub = 0, cub_bytes = 0, bytes = 0;

  embedding_layout(std::int64_t n, std::int64_t vocab) {
    std::size_t const ints = ops::cuda::align_bytes(static_cast<std::size_t>(n) * sizeof(std::int32_t));
    keys_out = ints;
    pos_in = 2 * ints;
    pos_out = 3 * ints;
    cub = 4 * ints;
    backends::cuda_check(
        cub::DeviceRadixSort::SortPairs(nullptr, cub_bytes, static_cast<std::int32_t const*>(nullptr),
                                        static_cast<std::int32_t*>(nullptr), static_cast<std::int32_t const*>(nullptr),
                                        static_cast<std::int32_t*>(nullptr), static_cast<int>(n), 0, key_bits(vocab)),
        "cub::DeviceRadixSort::SortPairs (size query)");
    bytes = cub + ops::cuda::align_bytes(cub_bytes);
  }
};

inline void check_embedding(std::int64_t vocab, std::int64_t dim, std::int64_t n) {
  check_arg(vocab >= 1 && vocab < INT_MAX, "vocab", vocab, "must be in [1, 2^31 - 1)");
  check_arg(dim >= 1, "embedding dim", dim, "must be positive");
  check_arg(n >= 0 && n <= INT_MAX, "embedding tokens", n, "must be in [0, 2^31 - 1]");
}

}  // namespace detail

//! y[t] = E[tokens[t]] on `be.stream`: weight [V, D], tokens [n] -> y [n, D], device pointers. A token id outside
//! [0, V) gives a NaN row.
inline void embedding_forward(backends::cuda const& be, std::int64_t vocab, std::int64_t dim, float const* weight,
                              std::int32_t const* tokens, std::int64_t n, float* y) {
  detail::check_embedding(vocab, dim, n);
  check(n == 0 || (weight != nullptr && tokens != nullptr && y != nullptr),
        "embedding forward (cuda): weight, tokens and y must be device pointers, not null");
  if (n == 0) {
    return;
  }
  detail::embedding_forward_kernel<float>
      <<<ops::cuda::grid_blocks(n * dim, detail::embedding_threads), detail::embedding_threads, 0, be.stream>>>(
          vocab, dim, weight, tokens, n, y);
  backends::cuda_check_launch("embedding_forward_kernel");
}

//! Device workspace bytes the backward needs for n tokens (pass at least this much, or null to allocate per call).
inline std::size_t embedding_backward_workspace_bytes(std::int64_t vocab, std::int64_t n) {
  detail::check_embedding(vocab, 1, n);
  return detail::embedding_layout(n, vocab).bytes;
}

//! dweight[tokens[t]] += dy[t] for every t, each id's tokens summed in the fixed order above, on `be.stream`: tokens
//! [n], dy [n, D], dweight [V, D], device pointers. Tokens with ids outside [0, V) add nothing.
inline void embedding_backward(backends::cuda const& be, std::int64_t vocab, std::int64_t dim,
                               std::int32_t const* tokens, std::int64_t n, float const* dy, float* dweight,
                               void* workspace = nullptr) {
  detail::check_embedding(vocab, dim, n);
  check(n == 0 || (tokens != nullptr && dy != nullptr && dweight != nullptr),
        "embedding backward (cuda): tokens, dy and dweight must be device pointers, not null");
  if (n == 0) {
    return;
  }
  detail::embedding_layout const layout(n, vocab);
  ops::cuda::scratch ws(workspace, layout.bytes, be.stream);
  auto* keys_in = ws.at<std::int32_t>(layout.keys_in);
  auto* keys_out = ws.at<std::int32_t>(layout.keys_out);
  auto* pos_in = ws.at<std::int32_t>(layout.pos_in);
  auto* pos_out = ws.at<std::int32_t>(layout.pos_out);
  unsigned const blocks = ops::cuda::grid_blocks(n, detail::embedding_threads);
  detail::embedding_keys_kernel<float>
      <<<blocks, detail::embedding_threads, 0, be.stream>>>(vocab, tokens, n, keys_in, pos_in);
  backends::cuda_check_launch("embedding_keys_kernel");
  std::size_t cub_bytes = layout.cub_bytes;
  backends::cuda_check(cub::DeviceRadixSort::SortPairs(ws.at<void>(layout.cub), cub_bytes, keys_in, keys_out, pos_in,
                                                       pos_out, static_cast<int>(n), 0, detail::key_bits(vocab),
                                                       be.stream),
                       "cub::DeviceRadixSort::SortPairs");
  dim3 const grid(ops::cuda::grid_blocks(n, 1, 65536), ops::cuda::grid_blocks(dim, detail::embedding_columns, 64));
  detail::embedding_accumulate_kernel<float>
      <<<grid, detail::embedding_columns * detail::embedding_parts, 0, be.stream>>>(vocab, dim, keys_out, pos_out, n,
                                                                                    dy, dweight);
  backends::cuda_check_launch("embedding_accumulate_kernel");
}

}  // namespace ssmlen::layers::cuda
