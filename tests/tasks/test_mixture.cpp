// The task mixture (n×2 multiplication + auxiliary addition): one vocabulary and tool for both, the mixing weight,
// replays and checks of both kinds, and one lookup table that learns both from short examples without conflicts.
#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/lookup_learner.hpp>
#include <ssmlen/tasks/mixture.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "../support/task_testing.hpp"

using namespace ssmlen;
using tasks::mixture;
using testing::output_of;
using testing::render;
using testing::replay;
using testing::run;
using testing::solves;

static_assert(tasks::task_env<mixture>);

TEST_CASE("mixture: one vocabulary extends the addition vocabulary id for id") {
  mixture const task;
  auto const& add = tasks::addition::make_vocab();
  for (tools::token t = 0; t < add.size(); ++t) {
    CHECK(task.vocab().name(t) == add.name(t));
  }
  CHECK(task.vocab() == tasks::multiplication::make_vocab());
  CHECK(task.vocab().contains("[p4.read]"));
  CHECK(task.vocab().contains("*"));
  CHECK(task.name() == "mixture");
}

TEST_CASE("mixture: the auxiliary weight is the fraction of addition examples; tests draw multiplications") {
  for (double w : {0.0, 1.0 / 3.0, 0.6, 1.0}) {
    mixture const task({w});
    rng g(3);
    int aux = 0;
    int const n = 3000;
    for (int i = 0; i < n; ++i) {
      auto const x = task.sample(g, 20);
      aux += x.auxiliary ? 1 : 0;
      if (x.auxiliary) {
        CHECK(x.sum.a.size() <= 20);
        CHECK(x.sum.b.size() <= 20);
      } else {
        CHECK(x.product.a.size() <= 20);
        CHECK(x.product.b.size() == 2);  // the primary task is n×2
      }
    }
    CHECK(std::abs(static_cast<double>(aux) / n - w) < 0.03);
    auto const x = task.sample_exact(g, 50);
    CHECK_FALSE(x.auxiliary);
    CHECK(x.product.a.size() == 50);
    CHECK(task.describe(x)["task"] == "multiplication");
  }
  rng g1(9), g2(9);
  mixture const task;
  for (int i = 0; i < 20; ++i) {
    CHECK(task.sample(g1, 10) == task.sample(g2, 10));
  }
  CHECK_THROWS_AS(mixture({-0.1}), ssmlen::error);
  CHECK_THROWS_AS(mixture({1.5}), ssmlen::error);
}

TEST_CASE("mixture: both kinds of trace replay through the shared tool and pass check") {
  mixture const task({0.5});
  rng g(4);
  int kinds[2] = {0, 0};
  for (int i = 0; i < 60; ++i) {
    auto const x = i < 58 ? task.sample(g, 20) : task.sample_exact(g, 300);
    ++kinds[x.auxiliary ? 1 : 0];
    auto const t = task.expert(x);
    agent::replay_policy p(t);
    auto const r = run(p, task, x, static_cast<std::int64_t>(t.size()) + 10);
    REQUIRE(r.end == agent::end_reason::eos);
    CHECK(r.trace == t);
    CHECK(task.check(x, r.output));
    auto wrong = r.output;
    wrong.front() = tasks::addition_tokens::digit((tasks::addition_tokens::value(wrong.front()) + 1) % 10);
    CHECK_FALSE(task.check(x, wrong));
  }
  CHECK(kinds[0] > 10);
  CHECK(kinds[1] > 10);
}

TEST_CASE("mixture: one lookup table learned from at most 10 digits does both tasks at 1000 digits") {
  // W = 11, addition's reach (multiplication needs 7): the two formats never share an 11-token context with
  // different continuations, which is what lets one fixed-memory model learn the mixture.
  mixture const task({0.5});
  models::lookup_learner<11> learner;
  rng g(1);
  for (int i = 0; i < 2500; ++i) {
    learner.learn(task.expert(task.sample(g, 10)));
  }
  CHECK(learner.conflicts() == 0);
  rng h(5);
  int solved = 0, total = 0;
  for (int n : {7, 30, 300, 1000}) {
    for (bool auxiliary : {false, true}) {
      mixture::instance x;
      x.auxiliary = auxiliary;
      if (auxiliary) {
        x.sum = task.auxiliary().sample_exact(h, n);
      } else {
        x.product = task.primary().sample_exact(h, n);
      }
      solved += solves(learner, task, x) ? 1 : 0;
      ++total;
    }
  }
  CHECK(solved == total);
}
