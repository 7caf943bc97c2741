// SPDX-License-Identifier: Apache-2.0
//! @file graph.cuh
//! A captured CUDA graph, ready to launch: `capture_graph` records the work a function enqueues on a stream and
//! instantiates it; `graph_exec` owns the result. Capture needs a stream other than the legacy default one, and
//! buffers that stay put while the graph is used (a graph replays the addresses it recorded).
#pragma once

#include <ssmlen/backends/cuda/check.cuh>

#include <cuda_runtime.h>

#include <utility>

namespace ssmlen::backends {

//! An instantiated CUDA graph, destroyed with its owner; empty until assigned.
class graph_exec {
public:
  graph_exec() = default;
  //! Instantiates `graph` and destroys it.
  explicit graph_exec(cudaGraph_t graph) {
    cudaError_t const status = cudaGraphInstantiate(&exec_, graph, 0);
    cudaGraphDestroy(graph);
    cuda_check(status, "cudaGraphInstantiate");
  }
  graph_exec(graph_exec const&) = delete;
  graph_exec& operator=(graph_exec const&) = delete;
  graph_exec(graph_exec&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
  graph_exec& operator=(graph_exec&& o) noexcept {
    std::swap(exec_, o.exec_);
    return *this;
  }
  ~graph_exec() { reset(); }

  explicit operator bool() const { return exec_ != nullptr; }
  void reset() {
    if (exec_ != nullptr) {
      cudaGraphExecDestroy(exec_);  // destructors do not throw
      exec_ = nullptr;
    }
  }
  void launch(cudaStream_t stream) const { cuda_check(cudaGraphLaunch(exec_, stream), "cudaGraphLaunch"); }

private:
  cudaGraphExec_t exec_ = nullptr;
};

//! The work `enqueue()` puts on `stream`, captured (relaxed mode: other threads' calls are not checked) and
//! instantiated. When enqueue throws, the capture is ended first, so the stream stays usable, and the first error
//! is the one reported.
template <class Enqueue>
graph_exec capture_graph(cudaStream_t stream, Enqueue&& enqueue) {
  cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
  cudaGraph_t graph = nullptr;
  try {
    enqueue();
  } catch (...) {
    cudaStreamEndCapture(stream, &graph);
    if (graph != nullptr) {
      cudaGraphDestroy(graph);
    }
    throw;
  }
  cuda_check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
  return graph_exec(graph);
}

}  // namespace ssmlen::backends
