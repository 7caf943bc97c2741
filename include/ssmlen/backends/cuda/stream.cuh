// SPDX-License-Identifier: Apache-2.0
//! @file stream.cuh
//! The CUDA backend value and an owning stream. `backends::cuda` is to kernels what `backends::host` is to OpenMP
//! loops: a cheap value saying *where* work runs (one stream); `cuda_stream` owns a stream for code that needs its
//! own, so work on it stays ordered and other streams are not serialized behind it.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>

#include <cuda_runtime.h>

#include <utility>

namespace ssmlen::backends {

//! Work is enqueued on `stream` (nullptr: the legacy default stream); calls are asynchronous to the host.
struct cuda {
  cudaStream_t stream = nullptr;

  //! Blocks the host until the stream's work is done; reports faults raised by that work.
  void synchronize() const { cuda_check(cudaStreamSynchronize(stream), "cudaStreamSynchronize"); }

  friend bool operator==(cuda const& l, cuda const& r) { return l.stream == r.stream; }
};

//! An owned, non-blocking stream; movable, not copyable.
class cuda_stream {
public:
  cuda_stream() { cuda_check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"); }
  cuda_stream(cuda_stream const&) = delete;
  cuda_stream& operator=(cuda_stream const&) = delete;
  cuda_stream(cuda_stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  cuda_stream& operator=(cuda_stream&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  ~cuda_stream() {
    if (s_ != nullptr) {
      cudaStreamDestroy(s_);  // destructors do not throw; a fault shows at the next checked call
    }
  }

  [[nodiscard]] cudaStream_t get() const { return s_; }
  [[nodiscard]] cuda backend() const { return cuda{s_}; }
  void synchronize() const { backend().synchronize(); }

private:
  cudaStream_t s_ = nullptr;
};

}  // namespace ssmlen::backends
