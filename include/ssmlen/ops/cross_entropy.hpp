// SPDX-License-Identifier: Apache-2.0
//! @file cross_entropy.hpp
//! Fused softmax cross-entropy for next-token training: per token, the loss
//! -log softmax(logits)[target] and, in the same pass, the gradient
//! dlogits = scale * (softmax - onehot). A per-token byte mask selects the tokens
//! that count (the command, thought and output tokens of a trace); the others add
//! nothing, get a zero gradient, and their logits and targets are not read.
//! The loss is reduced in fixed blocks combined in order: the same bits on any thread count.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/math.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <type_traits>
#include <vector>

namespace ssmlen::ops {

//! The loss summed over the tokens that count, and how many counted.
struct cross_entropy_result {
  double loss = 0;         // sum of -log p(target) over masked-in tokens
  std::int64_t count = 0;  // masked-in tokens
  //! Mean loss per counted token (0 when none counted).
  [[nodiscard]] double mean() const { return count > 0 ? loss / static_cast<double>(count) : 0.0; }
};

//! Tokens that count under a mask (nonzero byte = counts; a null mask counts every token).
inline std::int64_t masked_count(std::int64_t tokens, std::uint8_t const* mask) {
  check_arg(tokens >= 0, "cross_entropy tokens", tokens, "must be non-negative");
  if (mask == nullptr) {
    return tokens;
  }
  return std::count_if(mask, mask + tokens, [](std::uint8_t m) { return m != 0; });
}

//! Softmax cross-entropy over logits [tokens, vocab] (dense rows) with targets [tokens].
//! mask [tokens]: nonzero bytes mark the tokens that count; nullptr means all count.
//! dlogits [tokens, vocab] (optional, may be nullptr): scale * (softmax - onehot(target)) for
//! counted tokens, 0 for the others; pass scale = 1 / count for the gradient of the mean loss.
//! A counted token's target outside [0, vocab) raises ssmlen::error before anything is written.
template <class T>
cross_entropy_result softmax_cross_entropy(backends::host const& be, std::int64_t tokens, std::int64_t vocab,
                                           T const* logits, std::int32_t const* targets, std::uint8_t const* mask,
                                           T* dlogits, double scale = 1.0) {
  static_assert(std::is_floating_point_v<T>, "logits are float or double");
  check_arg(tokens >= 0, "cross_entropy tokens", tokens, "must be non-negative");
  check_arg(vocab >= 1, "cross_entropy vocab", vocab, "must be positive");
  check(tokens == 0 || (logits != nullptr && targets != nullptr), "cross_entropy: logits and targets must not be null");
  cross_entropy_result r;
  for (std::int64_t t = 0; t < tokens; ++t) {  // validate serially: nothing may throw inside the threads
    if (mask != nullptr && mask[t] == 0) {
      continue;
    }
    if (targets[t] < 0 || targets[t] >= vocab) {
      std::ostringstream s;
      s << "must be in [0, " << vocab << ") (token " << t << ")";
      check_arg(false, "cross_entropy target", targets[t], s.str());
    }
    ++r.count;
  }

  constexpr std::int64_t block = 64;  // tokens per partial sum: fixed, so the reduction order is too
  std::int64_t const blocks = (tokens + block - 1) / block;
  std::vector<double> partial(static_cast<std::size_t>(blocks), 0.0);
  be.parallel_for(blocks, [&](std::int64_t bi) {
    double sum = 0;
    std::int64_t const end = std::min(tokens, (bi + 1) * block);
    for (std::int64_t t = bi * block; t < end; ++t) {
      T* d = dlogits != nullptr ? dlogits + t * vocab : nullptr;  // [vocab]
      if (mask != nullptr && mask[t] == 0) {
        if (d != nullptr) {
          std::fill(d, d + vocab, T(0));
        }
        continue;
      }
      T const* x = logits + t * vocab;  // [vocab]
      T const mx = *std::max_element(x, x + vocab);
      double s = 0;
      for (std::int64_t v = 0; v < vocab; ++v) {
        T const e = exp_of(T(x[v] - mx));  // in (0, 1]: no overflow
        s += e;
        if (d != nullptr) {
          d[v] = e;
        }
      }
      std::int32_t const y = targets[t];
      sum += (std::log(s) + static_cast<double>(mx)) - static_cast<double>(x[y]);
      if (d != nullptr) {
        double const k = scale / s;
        double const e_y = d[y];
        for (std::int64_t v = 0; v < vocab; ++v) {
          d[v] = static_cast<T>(static_cast<double>(d[v]) * k);
        }
        d[y] = static_cast<T>(e_y * k - scale);  // one rounding: p - 1 cancels badly once rounded
      }
    }
    partial[static_cast<std::size_t>(bi)] = sum;
  });
  for (double p : partial) {
    r.loss += p;
  }
  return r;
}

}  // namespace ssmlen::ops
