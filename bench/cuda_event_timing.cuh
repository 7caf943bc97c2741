// SPDX-License-Identifier: Apache-2.0
// Shared by the CUDA benchmarks: the median time of a piece of GPU work, timed by CUDA events.
#pragma once

#include <ssmlen/backends/cuda/check.cuh>

#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

//! Seconds taken by `enqueue()` on `stream`: the median of `runs` event-timed calls after `warmup` untimed ones.
template <class F>
double median_event_seconds(cudaStream_t stream, F&& enqueue, int runs = 10, int warmup = 3) {
  using ssmlen::backends::cuda_check;
  cudaEvent_t start = nullptr, stop = nullptr;
  cuda_check(cudaEventCreate(&start), "cudaEventCreate");
  cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> seconds;
  for (int i = 0; i < warmup + runs; ++i) {
    cuda_check(cudaEventRecord(start, stream), "cudaEventRecord");
    enqueue();
    cuda_check(cudaEventRecord(stop, stream), "cudaEventRecord");
    cuda_check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    cuda_check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    if (i >= warmup) {
      seconds.push_back(ms * 1e-3);
    }
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}
