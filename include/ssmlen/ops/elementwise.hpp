// SPDX-License-Identifier: Apache-2.0
//! @file elementwise.hpp
//! The elementwise maps a Mamba block applies to whole activations: SiLU (conv
//! output and gate), softplus (the step size dt) and their derivatives, exp (A from
//! A_log), and the few vector sums of the backward pass. The scalar functions come
//! from core/math.hpp (one body for host loops and kernels); this header adds the
//! softplus derivative and array loops split into fixed chunks over the backend.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/config.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/math.hpp>

#include <algorithm>
#include <cstdint>
#include <string>

namespace ssmlen::ops {

using ssmlen::exp_of;
using ssmlen::sigmoid;
using ssmlen::silu;
using ssmlen::silu_grad;
using ssmlen::softplus;

//! d softplus / dx: sigmoid(x), and exactly 1 above the threshold 20 where softplus is the identity.
template <class T>
SSMLEN_HD inline T softplus_grad(T x) {
  return x > T(20) ? T(1) : sigmoid(x);
}

namespace detail {

//! Runs f(i) for i in [0, n) in fixed chunks spread over the backend's threads.
template <class F>
void for_each_index(backends::host const& be, std::int64_t n, F&& f) {
  constexpr std::int64_t chunk = 16384;
  be.parallel_for((n + chunk - 1) / chunk, [&](std::int64_t c) {
    std::int64_t const end = std::min(n, (c + 1) * chunk);
    for (std::int64_t i = c * chunk; i < end; ++i) {
      f(i);
    }
  });
}

//! Checks the element count and that every array is present when there are elements.
template <class... P>
void check_arrays(char const* op, std::int64_t n, P const*... arrays) {
  check_arg(n >= 0, std::string(op) + " n", n, "must be non-negative");
  check(n == 0 || ((arrays != nullptr) && ...), std::string(op) + ": an array is null");
}

}  // namespace detail

//! y[i] = silu(x[i]) for i < n; y may alias x.
template <class T>
void silu(backends::host const& be, std::int64_t n, T const* x, T* y) {
  detail::check_arrays("silu", n, x, y);
  detail::for_each_index(be, n, [&](std::int64_t i) { y[i] = silu(x[i]); });
}

//! dx = dy * silu'(x); dx may alias dy.
template <class T>
void silu_backward(backends::host const& be, std::int64_t n, T const* x, T const* dy, T* dx) {
  detail::check_arrays("silu_backward", n, x, dy, dx);
  detail::for_each_index(be, n, [&](std::int64_t i) { dx[i] = dy[i] * silu_grad(x[i]); });
}

//! y = softplus(x); y may alias x.
template <class T>
void softplus(backends::host const& be, std::int64_t n, T const* x, T* y) {
  detail::check_arrays("softplus", n, x, y);
  detail::for_each_index(be, n, [&](std::int64_t i) { y[i] = softplus(x[i]); });
}

//! dx = dy * softplus'(x); dx may alias dy.
template <class T>
void softplus_backward(backends::host const& be, std::int64_t n, T const* x, T const* dy, T* dx) {
  detail::check_arrays("softplus_backward", n, x, dy, dx);
  detail::for_each_index(be, n, [&](std::int64_t i) { dx[i] = dy[i] * softplus_grad(x[i]); });
}

//! y = e^x at the precision of T (see exp_of); y may alias x.
template <class T>
void exponential(backends::host const& be, std::int64_t n, T const* x, T* y) {
  detail::check_arrays("exponential", n, x, y);
  detail::for_each_index(be, n, [&](std::int64_t i) { y[i] = exp_of(x[i]); });
}

//! out = a + b; out may alias a or b.
template <class T>
void add(backends::host const& be, std::int64_t n, T const* a, T const* b, T* out) {
  detail::check_arrays("add", n, a, b, out);
  detail::for_each_index(be, n, [&](std::int64_t i) { out[i] = a[i] + b[i]; });
}

//! out = a * b elementwise (gates); out may alias a or b.
template <class T>
void mul(backends::host const& be, std::int64_t n, T const* a, T const* b, T* out) {
  detail::check_arrays("mul", n, a, b, out);
  detail::for_each_index(be, n, [&](std::int64_t i) { out[i] = a[i] * b[i]; });
}

//! y += alpha x (gradient accumulation).
template <class T>
void axpy(backends::host const& be, std::int64_t n, T alpha, T const* x, T* y) {
  detail::check_arrays("axpy", n, x, y);
  detail::for_each_index(be, n, [&](std::int64_t i) { y[i] += alpha * x[i]; });
}

//! x *= alpha.
template <class T>
void scale(backends::host const& be, std::int64_t n, T alpha, T* x) {
  detail::check_arrays("scale", n, x);
  detail::for_each_index(be, n, [&](std::int64_t i) { x[i] *= alpha; });
}

}  // namespace ssmlen::ops
