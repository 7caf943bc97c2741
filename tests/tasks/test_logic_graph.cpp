// The logical-graph task with a search memory: the documented trace, replays through the tool up to 1000 nodes,
// checks, invalid actions, fuzz, the graph distribution (every node feeds the returned one), trace length, and the
// locality of the format (a lookup table over 38 tokens learned from 10-node graphs evaluates 1000-node ones).
#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/lookup_learner.hpp>
#include <ssmlen/tasks/logic_graph.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../support/sampling_checks.hpp"
#include "../support/task_testing.hpp"

using namespace ssmlen;
using tasks::logic_graph;
using tasks::logic_graph_instance;
using tasks::logic_op;
using testing::output_of;
using testing::render;
using testing::replay;
using testing::run;
using testing::solves;

static_assert(tasks::task_env<logic_graph>);

namespace {

//! v007 := v630 or v045, v630 := v191 and not v872, with v191 = True, v872 = False, v045 = True.
logic_graph_instance documented_graph() {
  logic_graph_instance x;
  x.labels = {191, 872, 45, 630, 7};
  x.inputs = {true, false, true};
  x.gates = {{0, 1, logic_op::and_not}, {3, 2, logic_op::or_}};
  x.line_order = {4, 1, 3, 0, 2};
  return x;
}

}  // namespace

TEST_CASE("logic_graph: the documented program and its depth-first evaluation") {
  logic_graph const task;
  auto const x = documented_graph();
  auto const prompt = task.prompt(x);
  auto const t = task.expert(x);
  CHECK(render(task, t, 0)
            .rfind("v 0 0 7 := v 6 3 0 or v 0 4 5 <NL> v 8 7 2 = False <NL> "
                   "v 6 3 0 := v 1 9 1 and not v 8 7 2 <NL> v 1 9 1 = True <NL> v 0 4 5 = True <NL> "
                   "return v 0 0 7 <NL> [FIND]",
                   0) == 0);
  CHECK(render(task, t, prompt.size()) ==
        // Visit v007: its definition, then its first operand has no value yet: link and descend.
        "[FIND] v 0 0 7 := [END] (v) (0) (0) (7) (:=) (v) (6) (3) (0) (or) (v) (0) (4) (5) (<NL>) "
        "v 0 0 7 : or [FIND] v 6 3 0 = [END] <NL> v 6 3 0 < v 0 0 7 <NL> "
        // Visit v630: both operands have values; write v630's value, then find where it came from.
        "[FIND] v 6 3 0 := [END] (v) (6) (3) (0) (:=) (v) (1) (9) (1) (and not) (v) (8) (7) (2) (<NL>) "
        "v 6 3 0 : and not [FIND] v 1 9 1 = [END] (v) (1) (9) (1) (=) (True) (<NL>) True "
        "[FIND] v 8 7 2 = [END] (v) (8) (7) (2) (=) (False) (<NL>) False True <NL> v 6 3 0 = True <NL> "
        "[FIND] v 6 3 0 < [END] (v) (6) (3) (0) (<) (v) (0) (0) (7) (<NL>) "
        // Back at v007: now both operands have values.
        "[FIND] v 0 0 7 := [END] (v) (0) (0) (7) (:=) (v) (6) (3) (0) (or) (v) (0) (4) (5) (<NL>) "
        "v 0 0 7 : or [FIND] v 6 3 0 = [END] (v) (6) (3) (0) (=) (True) (<NL>) True "
        "[FIND] v 0 4 5 = [END] (v) (0) (4) (5) (=) (True) (<NL>) True True <NL> v 0 0 7 = True <NL> "
        // v007 has no link: it is the returned gate.
        "[FIND] v 0 0 7 < [END] [ANS] True <EOS>");
  CHECK(task.check(x, std::vector<tools::token>{task.vocab().id("True")}));
  CHECK(task.describe(x)["returns"] == "v007");
}

TEST_CASE("logic_graph: replaying expert traces through the tool reproduces them and passes check") {
  logic_graph const task;
  rng g(21);
  for (int n : {5, 6, 7, 10, 10, 31, 100, 400, 1000}) {
    auto const x = task.sample_exact(g, n);
    auto const t = task.expert(x);
    agent::replay_policy p(t);
    auto const r = run(p, task, x, static_cast<std::int64_t>(t.size()) + 10);
    REQUIRE(r.end == agent::end_reason::eos);
    CHECK(r.trace == t);
    CHECK(task.check(x, r.output));
    REQUIRE(r.output.size() == 1);
    CHECK(r.output[0] == task.vocab().id(tasks::logic_graph_values(x).back() ? "True" : "False"));
  }
}

TEST_CASE("logic_graph: check is an exact match of the returned value") {
  logic_graph const task;
  rng g(22);
  auto const t = task.vocab().id("True"), f = task.vocab().id("False");
  int true_count = 0;
  for (int i = 0; i < 200; ++i) {
    auto const x = task.sample(g, 12);
    bool const v = tasks::logic_graph_values(x).back();
    true_count += v ? 1 : 0;
    CHECK(task.check(x, std::vector<tools::token>{v ? t : f}));
    CHECK_FALSE(task.check(x, std::vector<tools::token>{v ? f : t}));
    CHECK_FALSE(task.check(x, std::vector<tools::token>{}));
    CHECK_FALSE(task.check(x, std::vector<tools::token>{v ? t : f, v ? t : f}));
  }
  CHECK(true_count > 40);  // both answers occur
  CHECK(true_count < 160);
}

TEST_CASE("logic_graph: invalid actions end the episode with a reason") {
  logic_graph const task;
  auto const x = documented_graph();
  auto t = task.expert(x);
  auto const first = task.prompt(x).size();
  // [END] before any [FIND].
  t.tokens[first] = task.vocab().id("[END]");
  agent::replay_policy p(t);
  auto r = run(p, task, x, 1000);
  CHECK(r.end == agent::end_reason::invalid);
  CHECK(r.why.find("[END]") != std::string::npos);
  // An untrained table answers <PAD>.
  models::lookup_learner<3> untrained;
  r = run(untrained, task, x, 100);
  CHECK(r.end == agent::end_reason::invalid);
  CHECK_FALSE(r.why.empty());
  // A search that never ends runs into the query limit.
  struct searcher {
    int step = 0;
    tools::token find, v;
    void reset() { step = 0; }
    void observe(tools::token) {}
    tools::token act() { return step++ == 0 ? find : v; }
  } s{0, task.vocab().id("[FIND]"), task.vocab().id("v")};
  r = run(s, task, x, 1000);
  CHECK(r.end == agent::end_reason::invalid);
  CHECK(r.why.find("search longer than") != std::string::npos);
  // Malformed graphs are the caller's error.
  auto bad = x;
  bad.labels[1] = bad.labels[0];
  CHECK_THROWS_AS((void)task.prompt(bad), ssmlen::error);
  bad = x;
  bad.gates[0].y = bad.gates[0].x;
  CHECK_THROWS_AS((void)task.expert(bad), ssmlen::error);
  bad = x;
  bad.line_order[0] = 1;
  CHECK_THROWS_AS((void)task.prompt(bad), ssmlen::error);
  rng g(1);
  CHECK_THROWS_AS((void)task.sample(g, 0), ssmlen::error);
  CHECK_THROWS_AS((void)task.sample_exact(g, 1001), ssmlen::error);
  CHECK(task.sample_exact(g, 3).nodes() == 5);  // the smallest graph that reads all three inputs
  CHECK(task.sample(g, 4).nodes() == 5);
}

TEST_CASE("logic_graph: long random token streams never crash the tool and stay within its limits") {
  tools::search_memory_limits lim;
  lim.max_memory = 600;
  lim.max_observation = 200;
  logic_graph const task(lim);
  rng g(23);
  int ended = 0;
  std::int64_t steps = 0;
  for (int episode = 0; episode < 30; ++episode) {
    auto tool = task.make_tool();
    tool.reset(task.prompt(task.sample_exact(g, 20)));
    for (int step = 0; step < 5000; ++step) {
      auto const r = tool.feed(testing::fuzz_token(g, task.vocab().size()));
      CHECK(static_cast<std::int64_t>(tool.memory().size()) <= lim.max_memory);
      if (r.kind == tools::tool_reply_kind::invalid) {
        CHECK_FALSE(r.why.empty());
        ++ended;
        steps += step;
        break;
      }
      CHECK(static_cast<std::int64_t>(r.observation.size()) <= lim.max_observation);
    }
  }
  CHECK(ended == 30);
  CHECK(steps > 30 * 20);
}

TEST_CASE("logic_graph: graphs are deterministic per seed, and every node feeds the returned gate") {
  logic_graph const task;
  rng g1(5), g2(5);
  for (int i = 0; i < 10; ++i) {
    CHECK(task.sample(g1, 30) == task.sample(g2, 30));
  }
  rng g(6);
  std::set<int> sizes;
  for (int i = 0; i < 300; ++i) {
    auto const x = task.sample(g, i % 10 == 0 ? 1000 : 10);
    auto const n = x.nodes();
    sizes.insert(n);
    REQUIRE(static_cast<int>(x.gates.size()) == n - 3);
    CHECK(std::set<int>(x.labels.begin(), x.labels.end()).size() == static_cast<std::size_t>(n));  // distinct
    CHECK(std::set<int>(x.line_order.begin(), x.line_order.end()).size() == static_cast<std::size_t>(n));
    // Walk back from the returned gate: every node is reached.
    std::vector<char> reached(static_cast<std::size_t>(n), 0);
    reached.back() = 1;
    for (int k = n - 1; k >= 3; --k) {
      if (reached[static_cast<std::size_t>(k)]) {
        auto const& gt = x.gates[static_cast<std::size_t>(k - 3)];
        CHECK(gt.x < k);
        CHECK(gt.y < k);
        CHECK(gt.x != gt.y);
        reached[static_cast<std::size_t>(gt.x)] = 1;
        reached[static_cast<std::size_t>(gt.y)] = 1;
      }
    }
    CHECK(std::count(reached.begin(), reached.end(), 1) == n);
  }
  for (int n = 5; n <= 10; ++n) {
    CHECK(sizes.count(n) == 1);  // training sizes: U{5..n}
  }
  CHECK(task.sample_exact(g, 1000).nodes() == 1000);
}

TEST_CASE("logic_graph: sizes, operators, inputs, labels and line order follow the stated distributions") {
  logic_graph const task;
  rng g(26);
  std::vector<std::int64_t> sizes(6), ops(4), inputs(2), hundreds(10), units(10), returned_at(8);
  for (int i = 0; i < 6000; ++i) {
    auto const x = task.sample(g, 10);  // 5..10 nodes, uniformly
    ++sizes[static_cast<std::size_t>(x.nodes() - 5)];
    for (auto const& gt : x.gates) {
      ++ops[static_cast<std::size_t>(gt.op)];
    }
    for (auto b : x.inputs) {
      ++inputs[b ? 1 : 0];
    }
    for (auto l : x.labels) {  // labels uniform over 0..999 (and distinct: checked above)
      ++hundreds[static_cast<std::size_t>(l / 100)];
      ++units[static_cast<std::size_t>(l % 10)];
    }
  }
  for (int i = 0; i < 8000; ++i) {  // lines in uniformly random order: the returned gate's line anywhere
    auto const x = task.sample_exact(g, 8);
    auto const at = std::find(x.line_order.begin(), x.line_order.end(), 7) - x.line_order.begin();
    ++returned_at[static_cast<std::size_t>(at)];
  }
  for (auto const* counts : {&sizes, &ops, &inputs, &hundreds, &units, &returned_at}) {
    testing::check_uniform(*counts);
  }
}

TEST_CASE("logic_graph: traces grow linearly: 130 n - 443 tokens after the prompt, +15 per descent through y") {
  // Each gate is resolved in one visit of 84 tokens (77 for the returned gate, which has no link to find), and every
  // gate but the returned one is first reached by a descent: 46 tokens through its parent's first operand, 61 when
  // the parent's first operand already had a value. The oracle counts those descents with a plain recursive
  // evaluation in the expert's order; the prompt is 15 tokens per gate line, 7 per input line and 6 for `return`.
  logic_graph const task;
  rng g(24);
  std::int64_t through_y = 0;
  for (int n : {5, 6, 7, 10, 10, 31, 250, 1000}) {
    auto const x = task.sample_exact(g, n);
    std::vector<char> known(static_cast<std::size_t>(n), 0);
    known[0] = known[1] = known[2] = 1;
    std::int64_t y_descents = 0;
    auto const evaluate = [&](auto&& self, int u) -> void {
      auto const& gt = x.gates[static_cast<std::size_t>(u - 3)];
      if (!known[static_cast<std::size_t>(gt.x)]) {
        self(self, gt.x);
      }
      if (!known[static_cast<std::size_t>(gt.y)]) {
        ++y_descents;
        self(self, gt.y);
      }
      known[static_cast<std::size_t>(u)] = 1;
    };
    evaluate(evaluate, n - 1);
    auto const prompt = static_cast<std::int64_t>(task.prompt(x).size());
    CHECK(prompt == 15 * n - 18);
    CHECK(static_cast<std::int64_t>(task.expert(x).size()) - prompt == 130 * n - 443 + 15 * y_descents);
    through_y += y_descents;
  }
  CHECK(through_y > 0);  // both kinds of descent occur
}

TEST_CASE("logic_graph: lookup_learner<38> learned from graphs of at most 10 nodes evaluates 1000-node graphs") {
  // W = 38 is the format's longest reach: the value line `u = r` copies the gate's label from its work line, 38
  // tokens back when both operands were looked up (`u : OP`, two searches of 7 tokens with their 7-token answers,
  // the two values, r and <NL>). Labels are copied, so the tree answers them with copies of window positions, and
  // 1000-node graphs, whose labels took other places in other contexts, need nothing more than 10-node ones.
  logic_graph const task;
  models::lookup_learner<38> learner;
  models::lookup_learner<37> short_window;
  rng g(1);
  for (int i = 0; i < 200; ++i) {
    auto const t = task.expert(task.sample(g, 10));
    learner.learn(t);
    short_window.learn(t);
  }
  CHECK(learner.conflicts() == 0);
  rng h(77);
  int solved = 0, total = 0;
  for (int n : {5, 7, 10, 10, 20, 100, 1000, 1000, 1000}) {
    solved += solves(learner, task, task.sample_exact(h, n)) ? 1 : 0;
    ++total;
  }
  CHECK(solved == total);
  CHECK(learner.copies() > 0);    // the labels were copied ...
  CHECK(learner.guesses() == 0);  // ... and every answer came from a leaf

  // One token shorter, the value line cannot see the label it copies: no 10-node graph is evaluated, although no
  // 37-token context was seen with two continuations (a context holding a label rarely repeats).
  CHECK(short_window.conflicts() == 0);
  int short_solved = 0;
  for (int i = 0; i < 4; ++i) {
    short_solved += solves(short_window, task, task.sample_exact(h, 10), 4) ? 1 : 0;
  }
  CHECK(short_solved == 0);
}

TEST_CASE("logic_graph: a window of 24 tokens sees two continuations of one context") {
  logic_graph const task;
  models::lookup_learner<24> too_short;
  rng g(25);
  for (int i = 0; i < 300; ++i) {
    too_short.learn(task.expert(task.sample(g, 10)));
  }
  CHECK(too_short.conflicts() > 0);
}
