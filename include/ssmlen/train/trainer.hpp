// SPDX-License-Identifier: Apache-2.0
//! @file trainer.hpp
//! The training step and loop: packed batch -> forward -> masked softmax
//! cross-entropy -> backward -> AdamW at the scheduled rate. Batches come from a
//! source called with the step index, so a run is a pure function of its seed
//! and a resumed run continues bit-identically.
#pragma once

#include <ssmlen/backends/host.hpp>
#include <ssmlen/ops/cross_entropy.hpp>
#include <ssmlen/train/adamw.hpp>
#include <ssmlen/train/batch.hpp>
#include <ssmlen/train/schedule.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <vector>

namespace ssmlen::train {

//! What one step reports.
struct step_report {
  std::int64_t step = 0;  // 0-based index of the step just taken
  double loss = 0;        // mean cross-entropy over the masked-in targets
  double lr = 0;
  double grad_norm = 0;        // before clipping
  std::int64_t tokens = 0;     // packed tokens processed (inputs)
  std::int64_t predicted = 0;  // targets that counted in the loss
  double seconds = 0;          // wall time of the step
};

template <class Model>
class trainer {
public:
  using value_type = typename Model::value_type;

  trainer(Model& model, adamw_config const& opt, warmup_cosine const& schedule)
      : model_(model), opt_(opt, model.named_params()), schedule_(schedule) {
    schedule_.validate();
  }

  //! One optimization step on `b`.
  step_report step(backends::host const& be, batch const& b) {
    auto const t0 = std::chrono::steady_clock::now();
    std::int64_t const rows = b.tokens(), v = model_.config().vocab;
    logits_.resize(static_cast<std::size_t>(rows * v));  // [T, V]
    dlogits_.resize(logits_.size());                     // [T, V]
    model_.forward(be, b.inputs, b.seqs, logits_.data(), cache_);
    std::int64_t const count = ops::masked_count(rows, b.mask.data());
    check(count > 0, "training batch has no masked-in targets: nothing to learn from");
    auto const ce = ops::softmax_cross_entropy(be, rows, v, logits_.data(), b.targets.data(), b.mask.data(),
                                               dlogits_.data(), 1.0 / static_cast<double>(count));
    model_.zero_grad();
    model_.backward(be, dlogits_.data(), cache_);
    double const lr = schedule_(opt_.steps());
    step_report r;
    r.step = opt_.steps();
    r.grad_norm = opt_.step(be, lr);
    r.loss = ce.loss / static_cast<double>(count);
    r.lr = lr;
    r.tokens = rows;
    r.predicted = count;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  //! Runs steps until `total` have been taken, asking `source(step)` for each batch; `on_step` may stop early
  //! by returning false.
  template <class Source, class Callback>
  void fit(backends::host const& be, std::int64_t total, Source&& source, Callback&& on_step) {
    check_arg(total > 0, "steps", total, "must be positive");
    while (opt_.steps() < total) {
      batch const b = source(opt_.steps());
      if (!on_step(step(be, b))) {
        break;
      }
    }
  }

  [[nodiscard]] adamw<value_type>& optimizer() { return opt_; }
  [[nodiscard]] warmup_cosine const& schedule() const { return schedule_; }
  [[nodiscard]] Model& model() { return model_; }

private:
  Model& model_;
  adamw<value_type> opt_;
  warmup_cosine schedule_;
  typename Model::cache cache_;
  std::vector<value_type> logits_, dlogits_;
};

}  // namespace ssmlen::train
