// SPDX-License-Identifier: Apache-2.0
//! @file mixture.hpp
//! The paper's task mixture: n×2 multiplication as the primary task, with
//! auxiliary n+n addition examples mixed into training at a weight w (the
//! fraction of auxiliary examples). Both tasks share one vocabulary and one
//! four-pointer memory, and their trace formats differ within a few tokens
//! everywhere, so one model can learn both. Evaluation (sample_exact) draws
//! the primary task only.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/multiplication.hpp>
#include <ssmlen/tasks/task_env.hpp>
#include <ssmlen/tools/pointer_memory.hpp>
#include <ssmlen/tools/protocol.hpp>

#include <nlohmann/json.hpp>

#include <span>
#include <string>
#include <vector>

namespace ssmlen::tasks {

struct mixture_options {
  //! Fraction of training examples drawn from the auxiliary addition task. 1/3, the smallest nonzero weight of
  //! the paper's sweep (0, 0.33, 0.5, 0.6): one addition example for every two multiplications.
  double auxiliary_weight = 1.0 / 3.0;
};

//! One example of the mixture: a multiplication (primary) or an addition (auxiliary).
struct mixture_instance {
  bool auxiliary = false;
  multiplication_instance product;  // when !auxiliary
  addition_instance sum;            // when auxiliary
  friend bool operator==(mixture_instance const&, mixture_instance const&) = default;
};

class mixture {
public:
  using instance = mixture_instance;
  using tool_type = tools::pointer_memory<4>;

  explicit mixture(mixture_options options = {}, tools::pointer_memory_limits limits = {})
      : options_(options), primary_({2, 2}, limits), auxiliary_(limits), limits_(limits) {
    check_arg(options.auxiliary_weight >= 0.0 && options.auxiliary_weight <= 1.0, "mixture_options.auxiliary_weight",
              options.auxiliary_weight, "must be in [0, 1]");
    // Addition traces are used as they are: every addition token must have the same id in the mixture's vocabulary.
    auto const& a = auxiliary_.vocab();
    auto const& m = primary_.vocab();
    for (tools::token t = 1; t < a.size(); ++t) {
      ssmlen::check(m.contains(a.name(t)) && m.id(a.name(t)) == t,
                    "mixture: token '" + a.name(t) + "' has another id in the multiplication vocabulary");
    }
  }

  [[nodiscard]] std::string name() const { return "mixture"; }
  //! The multiplication vocabulary, which extends the addition vocabulary id for id.
  [[nodiscard]] tools::vocab const& vocab() const { return primary_.vocab(); }
  [[nodiscard]] mixture_options const& options() const { return options_; }

  //! Training distribution: with probability w an addition (digit counts U{1..n} each), else a multiplication of
  //! an n1 ~ U{1..n}-digit number by a 2-digit number.
  [[nodiscard]] instance sample(rng& g, int n) const {
    instance x;
    x.auxiliary = g.uniform_double() < options_.auxiliary_weight;
    if (x.auxiliary) {
      x.sum = auxiliary_.sample(g, n);
    } else {
      x.product = primary_.sample(g, n);
    }
    return x;
  }
  //! Test distribution: the primary task, an exactly n-digit number times a 2-digit number.
  [[nodiscard]] instance sample_exact(rng& g, int n) const {
    instance x;
    x.product = primary_.sample_exact(g, n);
    return x;
  }

  [[nodiscard]] nlohmann::json describe(instance const& x) const {
    auto j = x.auxiliary ? auxiliary_.describe(x.sum) : primary_.describe(x.product);
    j["task"] = x.auxiliary ? "addition" : "multiplication";
    return j;
  }
  [[nodiscard]] std::vector<tools::token> prompt(instance const& x) const {
    return x.auxiliary ? auxiliary_.prompt(x.sum) : primary_.prompt(x.product);
  }
  [[nodiscard]] tools::trace expert(instance const& x) const {
    return x.auxiliary ? auxiliary_.expert(x.sum) : primary_.expert(x.product);
  }
  [[nodiscard]] bool check(instance const& x, std::span<const tools::token> out) const {
    return x.auxiliary ? auxiliary_.check(x.sum, out) : primary_.check(x.product, out);
  }
  //! One tool for both tasks: addition uses p1..p3 of the same commands.
  [[nodiscard]] tool_type make_tool() const { return tool_type(vocab(), limits_); }

  [[nodiscard]] multiplication const& primary() const { return primary_; }
  [[nodiscard]] addition const& auxiliary() const { return auxiliary_; }

private:
  mixture_options options_;
  multiplication primary_;
  addition auxiliary_;
  tools::pointer_memory_limits limits_;
};

static_assert(task_env<mixture>);

}  // namespace ssmlen::tasks
