// Helpers shared by the language models' tests: random token streams, and one forward and backward whose every output
// bit is collected (logits, then every parameter's gradient), compared across thread counts; step() against forward().
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/core/sequences.hpp>
#include <ssmlen/tasks/registry.hpp>
#include <ssmlen/train/task_batches.hpp>
#include <ssmlen/train/trainer.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <omp.h>
#include <utility>
#include <vector>

#include "gradcheck.hpp"

namespace ssmlen::testing {

inline std::vector<std::int32_t> random_tokens(rng& g, std::int64_t n, std::int64_t vocab) {
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (auto& v : t) {
    v = static_cast<std::int32_t>(g.uniform_int(0, vocab - 1));
  }
  return t;
}

//! Logits of random tokens over `seqs`, then the gradient of every parameter for random dlogits, in one vector.
template <class Model>
std::vector<typename Model::value_type> logits_and_gradients(Model& m, sequences const& seqs, std::uint64_t seed) {
  backends::host const be;
  std::int64_t const v = m.config().vocab;
  rng g(seed);
  auto const tokens = random_tokens(g, seqs.tokens(), v);
  std::vector<typename Model::value_type> logits(static_cast<std::size_t>(seqs.tokens() * v)), dlogits(logits.size());
  fill_normal(dlogits, g);
  typename Model::cache k;
  m.forward(be, tokens, seqs, logits.data(), k);
  m.zero_grad();
  m.backward(be, dlogits.data(), k);
  for (auto& p : m.named_params()) {
    logits.insert(logits.end(), p.p->grad.begin(), p.p->grad.end());
  }
  return logits;
}

//! Every parameter of a model as a gradient-check target (its values and its accumulated gradient).
template <class Model>
std::vector<grad_target> parameter_targets(Model& m) {
  std::vector<grad_target> targets;
  for (auto& p : m.named_params()) {
    targets.push_back({p.name, p.p->value.data(), p.p->grad.data(), p.p->value.size()});
  }
  return targets;
}

//! Largest |step logit - forward logit| over the largest |forward logit|: random tokens in sequences of `lengths`,
//! one forward over all of them, then step() feeding them in lockstep (shorter ones keep their last token).
template <class Model>
double step_vs_forward(Model const& m, std::vector<std::int64_t> const& lengths, std::uint64_t seed) {
  backends::host const be;
  std::int64_t const v = m.config().vocab, count = static_cast<std::int64_t>(lengths.size());
  rng g(seed);
  auto const seqs = sequences::from_lengths(lengths);
  auto const tokens = random_tokens(g, seqs.tokens(), v);
  std::vector<typename Model::value_type> logits(static_cast<std::size_t>(seqs.tokens() * v)),
      out(static_cast<std::size_t>(count * v));
  typename Model::cache k;
  m.forward(be, tokens, seqs, logits.data(), k);
  auto s = m.make_state(count);
  typename Model::step_workspace w;
  double worst = 0, scale = 0;
  for (std::int64_t t = 0; t < seqs.max_length(); ++t) {
    std::vector<std::int32_t> tok(static_cast<std::size_t>(count));
    for (std::int64_t b = 0; b < count; ++b) {
      tok[static_cast<std::size_t>(b)] =
          tokens[static_cast<std::size_t>(seqs.begin(b) + std::min(t, seqs.length(b) - 1))];
    }
    m.step(be, tok, out.data(), s, w);
    for (std::int64_t b = 0; b < count; ++b) {
      for (std::int64_t c = 0; t < seqs.length(b) && c < v; ++c) {
        double const ref = logits[static_cast<std::size_t>((seqs.begin(b) + t) * v + c)];
        worst = std::max(worst, std::abs(double(out[static_cast<std::size_t>(b * v + c)]) - ref));
        scale = std::max(scale, std::abs(ref));
      }
    }
  }
  REQUIRE(scale > 0);
  return worst / scale;
}

//! The loss of the first and of the last of 120 training steps on batches of 16 one-digit additions (warm-up 10,
//! then cosine from `lr`).
template <class Model>
std::pair<double, double> short_training_losses(Model& m, double lr) {
  backends::host const be;
  auto const task = tasks::make_task("addition");
  train::trainer tr(m, {.lr = lr}, {.peak = lr, .warmup = 10, .total = 120});
  double first = 0, last = 0;
  tr.fit(
      be, 120, [&](std::int64_t step) { return train::task_batch(task, 1, step, 16, 1); },
      [&](train::step_report const& r) {
        (r.step == 0 ? first : last) = r.loss;
        return true;
      });
  return {first, last};
}

//! logits_and_gradients of the model `make()` returns, on 1, 2 and again 2 threads: every bit the same.
template <class Make>
void check_bit_identical_across_threads(Make&& make, sequences const& seqs) {
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    auto m = make();
    return logits_and_gradients(m, seqs, 4);
  };
  int const before = omp_get_max_threads();
  auto const a = run(1), b = run(2), c = run(2);
  omp_set_num_threads(before);
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(a[0])) == 0);
  CHECK(std::memcmp(b.data(), c.data(), b.size() * sizeof(b[0])) == 0);
}

}  // namespace ssmlen::testing
