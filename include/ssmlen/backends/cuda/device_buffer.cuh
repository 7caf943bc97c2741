// SPDX-License-Identifier: Apache-2.0
//! @file device_buffer.cuh
//! An owning buffer of `T` in device memory (plain cudaMalloc, never managed memory), with checked copies to and
//! from host spans, and its page-locked host counterpart. Kernels take raw pointers; these only tie the allocation's
//! lifetime to a scope.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>
#include <ssmlen/core/error.hpp>

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

namespace ssmlen::backends {

template <class T>
class device_buffer {
  static_assert(std::is_trivially_copyable_v<T>, "device buffers hold trivially copyable values");

public:
  device_buffer() = default;
  explicit device_buffer(std::size_t size) : size_(size) {
    if (size_ > 0) {
      cuda_check(cudaMalloc(reinterpret_cast<void**>(&data_), size_ * sizeof(T)), "cudaMalloc");
    }
  }
  //! A device copy of `host` (synchronous).
  explicit device_buffer(std::span<T const> host) : device_buffer(host.size()) { upload(host); }

  device_buffer(device_buffer const&) = delete;
  device_buffer& operator=(device_buffer const&) = delete;
  device_buffer(device_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~device_buffer() {
    if (data_ != nullptr) {
      cudaFree(data_);  // destructors do not throw
    }
  }

  [[nodiscard]] T* data() { return data_; }
  [[nodiscard]] T const* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] std::size_t bytes() const { return size_ * sizeof(T); }

  void upload(std::span<T const> host) {
    check_arg(host.size() == size_, "host size", host.size(), "must equal the device buffer's size");
    if (size_ == 0) {
      return;
    }
    cuda_check(cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice), "cudaMemcpy to device");
  }
  void download(std::span<T> host) const {
    check_arg(host.size() == size_, "host size", host.size(), "must equal the device buffer's size");
    if (size_ == 0) {
      return;
    }
    cuda_check(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
  }
  [[nodiscard]] std::vector<T> to_host() const {
    std::vector<T> h(size_);
    download(h);
    return h;
  }
  //! Sets every byte to `byte` (0xFF makes float NaNs: poison for "was every element written?").
  void fill_bytes(int byte, cudaStream_t stream = nullptr) {
    if (size_ == 0) {
      return;
    }
    cuda_check(cudaMemsetAsync(data_, byte, bytes(), stream), "cudaMemsetAsync");
    if (stream == nullptr) {  // the legacy stream does not order non-blocking streams: finish before returning
      cuda_check(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize");
    }
  }

private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

//! An owning buffer of `T` in page-locked host memory: copies from and to it run asynchronously and at full bus
//! speed, and a CUDA graph may capture them (a copy from pageable memory is staged by the host before it returns).
template <class T>
class pinned_buffer {
  static_assert(std::is_trivially_copyable_v<T>, "pinned buffers hold trivially copyable values");

public:
  pinned_buffer() = default;
  explicit pinned_buffer(std::size_t size) : size_(size) {
    if (size_ > 0) {
      cuda_check(cudaHostAlloc(reinterpret_cast<void**>(&data_), size_ * sizeof(T), cudaHostAllocDefault),
                 "cudaHostAlloc");
    }
  }
  pinned_buffer(pinned_buffer const&) = delete;
  pinned_buffer& operator=(pinned_buffer const&) = delete;
  pinned_buffer(pinned_buffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  pinned_buffer& operator=(pinned_buffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~pinned_buffer() {
    if (data_ != nullptr) {
      cudaFreeHost(data_);  // destructors do not throw
    }
  }

  [[nodiscard]] std::span<T> span() { return {data_, size_}; }
  [[nodiscard]] T* data() { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  //! The same memory as a kernel addresses it (the host pointer itself under unified addressing): a kernel that
  //! reads or writes it directly saves a copy in each direction, for a few bytes touched once.
  [[nodiscard]] T* device_data() {
    T* device = nullptr;
    if (data_ != nullptr) {
      cuda_check(cudaHostGetDevicePointer(reinterpret_cast<void**>(&device), data_, 0), "cudaHostGetDevicePointer");
    }
    return device;
  }

private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace ssmlen::backends
