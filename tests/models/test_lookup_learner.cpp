// The lookup learner: replaying, conflicts of a short window, length generalization on addition, copies of tokens
// training never showed, the constant-over-copy rule, independence of learning order, and bad input.
#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/lookup_learner.hpp>
#include <ssmlen/tasks/addition.hpp>

#include <doctest/doctest.h>

#include <vector>

#include "../support/task_testing.hpp"

using namespace ssmlen;
using testing::solves;

static_assert(agent::policy<models::lookup_learner<4>>);

TEST_CASE("lookup_learner: replays a learned trace; knows nothing before learning") {
  tasks::addition const task;
  auto const x = task.instance_from_strings("57", "68");
  models::lookup_learner<11> learner;
  learner.reset();
  CHECK(learner.act() == tools::vocab::pad);
  learner.learn(task.expert(x));
  CHECK(learner.conflicts() == 0);
  CHECK(learner.contexts() > 0);
  CHECK(solves(learner, task, x));
}

TEST_CASE("lookup_learner: a window too short for the addition trace has conflicts") {
  // The sum digit depends on the previous column's carry, 11 tokens back: a 6-token window cannot see it.
  tasks::addition const task;
  models::lookup_learner<6> learner;
  rng g(4);
  for (int i = 0; i < 200; ++i) {
    learner.learn(task.expert(task.sample(g, 5)));
  }
  CHECK(learner.conflicts() > 0);
  REQUIRE(!learner.conflict_examples().empty());
  CHECK(learner.conflict_examples().front().first != learner.conflict_examples().front().other);
}

TEST_CASE("lookup_learner<11> trained on additions of at most 5 digits adds 1000-digit numbers exactly") {
  // W = 11 is the longest reach of the format: a sum digit depends on the carry written 11 tokens earlier.
  tasks::addition const task;
  models::lookup_learner<11> learner;
  rng g(1);
  for (int i = 0; i < 3000; ++i) {
    learner.learn(task.expert(task.sample(g, 5)));
  }
  CHECK(learner.conflicts() == 0);
  rng h(101);
  int solved = 0, total = 0;
  for (int n : {1, 2, 5, 6, 10, 33, 100}) {
    for (int i = 0; i < 4; ++i) {
      solved += solves(learner, task, task.sample_exact(h, n)) ? 1 : 0;
      ++total;
    }
  }
  for (int i = 0; i < 3; ++i) {
    solved += solves(learner, task, task.sample_exact(h, 1000)) ? 1 : 0;
    ++total;
  }
  CHECK(solved == total);
  CHECK(learner.unseen() > 0);  // long episodes do contain contexts never seen whole in training
}

namespace {

// A hand-written format over bare token ids: the tool shows `q x`, the model copies x and writes `;`.
constexpr tools::token q = 1, semicolon = 2;

tools::trace echo(std::vector<tools::token> const& xs) {
  tools::trace t;
  for (auto x : xs) {
    t.push(q, tools::role::observation);
    t.push(x, tools::role::observation);
    t.push(x, tools::role::thought);
    t.push(semicolon, tools::role::thought);
  }
  return t;
}

}  // namespace

TEST_CASE("lookup_learner: a copy answers with tokens training never showed") {
  models::lookup_learner<4> learner;
  rng g(3);
  for (int i = 0; i < 30; ++i) {
    std::vector<tools::token> xs(6);
    for (auto& x : xs) {
      x = static_cast<tools::token>(g.uniform_int(10, 14));
    }
    learner.learn(echo(xs));
  }
  CHECK(learner.conflicts() == 0);
  // Tokens 20..29 never appeared: no context holding one is in the table, and the tree copies them.
  learner.reset();
  for (tools::token x = 20; x < 30; ++x) {
    learner.observe(q);
    learner.observe(x);
    CHECK(learner.act() == x);
    learner.observe(x);
    CHECK(learner.act() == semicolon);
    learner.observe(semicolon);
  }
  CHECK(learner.unseen() == 20);
  CHECK(learner.copies() == 10);
  CHECK(learner.guesses() == 0);
}

TEST_CASE("lookup_learner: where a constant and a copy both fit every example, the constant answers") {
  // Every context is `; x` and every continuation `;`: "always ;" and "copy the token two back" both fit. The
  // learner answers the constant, which does not depend on a token it never asked about.
  models::lookup_learner<2> learner;
  tools::trace t;
  t.push(semicolon, tools::role::input);
  for (tools::token x = 10; x < 15; ++x) {
    t.push(x, tools::role::observation);
    t.push(semicolon, tools::role::thought);
  }
  learner.learn(t);
  learner.reset();
  learner.observe(q);
  learner.observe(20);
  CHECK(learner.act() == semicolon);  // a copy would have answered q
  CHECK(learner.unseen() == 1);
  CHECK(learner.copies() == 0);
}

TEST_CASE("lookup_learner: the answers depend on what was learned, not on the order it was learned in") {
  tasks::addition const task;
  std::vector<tools::trace> traces;
  rng g(6);
  for (int i = 0; i < 600; ++i) {
    traces.push_back(task.expert(task.sample(g, 5)));
  }
  models::lookup_learner<11> forward, backward;
  for (auto const& t : traces) {
    forward.learn(t);
  }
  for (auto it = traces.rbegin(); it != traces.rend(); ++it) {
    backward.learn(*it);
  }
  REQUIRE(forward.conflicts() == 0);
  CHECK(forward.contexts() == backward.contexts());
  // Every context of a few long additions, most of them unseen: both learners answer alike, right or wrong.
  int compared = 0;
  for (int i = 0; i < 3; ++i) {
    auto const t = task.expert(task.sample_exact(g, 40));
    forward.reset();
    backward.reset();
    for (auto token : t.tokens) {
      CHECK(forward.act() == backward.act());
      forward.observe(token);
      backward.observe(token);
      ++compared;
    }
  }
  CHECK(compared > 1000);
  CHECK(forward.unseen() > 100);
}

TEST_CASE("lookup_learner: a trace with a negative token id is refused") {
  models::lookup_learner<3> learner;
  tools::trace t;
  t.push(4, tools::role::input);
  t.push(-1, tools::role::thought);
  CHECK_THROWS_AS(learner.learn(t), ssmlen::error);
}
