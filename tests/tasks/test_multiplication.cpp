// Multiplication (n×1, n×2) with a 4-pointer memory: the documented trace, replays through the tool, checks,
// invalid actions, fuzz, sampling, trace length, and the locality of the format (a lookup table over 7 tokens
// learned from products of at most 10 digits multiplies 1000-digit numbers).
#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/lookup_learner.hpp>
#include <ssmlen/tasks/multiplication.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "../support/sampling_checks.hpp"
#include "../support/task_testing.hpp"

using namespace ssmlen;
using tasks::multiplication;
using testing::output_of;
using testing::render;
using testing::replay;
using testing::run;
using testing::solves;

static_assert(tasks::task_env<multiplication>);

TEST_CASE("multiplication: the expert trace of 907 * 3 is the documented example") {
  multiplication const task;
  auto const x = task.instance_from_strings("907", "3");
  auto const t = task.expert(x);
  CHECK(render(task, t, 0) ==
        "9 0 7 * 3 = [p1.new] [p2.new] [p3.new] "
        "[p1.read] (9) [p1.right] [p2.right] [p3.right] [p1.read] (0) [p1.right] [p2.right] [p3.right] "
        "[p1.read] (7) [p1.right] [p2.right] [p3.right] [p1.read] (*) [p1.left] "
        "[p2.read] (*) [p3.right] [p2.right] [p2.read] (3) [p3.right] [p2.right] [p2.read] (=) [p2.left] "
        "[p1.read] (7) [p2.read] (3) [p3.read] (=) 1 2 [p1.left] [p3.right] [p3.right] "
        "[p1.read] (0) [p2.read] (3) [p3.read] (2) 2 0 [p1.left] [p3.right] [p3.right] "
        "[p1.read] (9) [p2.read] (3) [p3.read] (0) 7 2 [p1.left] [p3.right] [p3.right] "
        "[p1.read] ([NIL]) [p2.read] (3) [p3.read] (2) 2 0 [p3.right] [p3.right] "
        "[p1.read] ([NIL]) [p2.read] (3) [p3.read] (0) + [p3.right] [p2.left] [p2.read] (*) "
        "[p2.right] [p2.right] [p2.read] (=) [ANS] "
        "[p3.left] [p3.read] (0) [p3.left] [p3.read] (2) 2 [p3.left] [p3.read] (2) [p3.left] [p3.read] (7) 7 "
        "[p3.left] [p3.read] (0) [p3.left] [p3.read] (2) 2 [p3.left] [p3.read] (2) [p3.left] [p3.read] (1) 1 "
        "[p3.left] [p3.read] (=) <EOS>");
  std::string thoughts, outputs;
  for (std::size_t i = 0; i < t.size(); ++i) {
    auto const& name = task.vocab().name(t.tokens[i]);
    if (t.roles[i] == tools::role::thought) {
      thoughts += name;
    } else if (t.roles[i] == tools::role::output) {
      outputs += name;
    }
  }
  CHECK(thoughts == "12207220+[ANS]");
  CHECK(outputs == "2721<EOS>");
}

TEST_CASE("multiplication: a 2-digit b writes two rows, the shifted second one, and their sum") {
  multiplication const task;
  auto const t = task.expert(task.instance_from_strings("57", "68"));
  std::string thoughts;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t.roles[i] == tools::role::thought) {
      thoughts += task.vocab().name(t.tokens[i]) + " ";
    }
  }
  // 57*8 = 456 and 57*6*10 = 3420 as (digit, carry) pairs, least significant first; then 3876.
  CHECK(thoughts == "6 5 5 4 4 0 + 0 0 2 4 4 3 3 0 + 6 0 7 0 8 0 3 0 + [ANS] ");
  CHECK(task.check(task.instance_from_strings("57", "68"), output_of(t)));
}

TEST_CASE("multiplication: replaying expert traces through the tool reproduces them and passes check") {
  rng g(5);
  for (auto const& task : {multiplication{}, multiplication{{1, 1}}, multiplication{{2, 2}}}) {
    std::vector<multiplication::instance> cases;
    for (int n : {1, 2, 3, 5, 9, 10, 17, 64, 200}) {
      for (int i = 0; i < 6; ++i) {
        cases.push_back(task.sample(g, n));
      }
    }
    cases.push_back(task.sample_exact(g, 1000));
    cases.push_back(task.instance_from_strings("9999999999", task.options().max_b_digits == 2 ? "99" : "9"));
    cases.push_back(task.instance_from_strings("1", task.options().min_b_digits == 2 ? "10" : "1"));
    for (auto const& x : cases) {
      auto const t = task.expert(x);
      REQUIRE(t.tokens.size() == t.roles.size());
      auto const r = replay(task, x, t);
      REQUIRE(r.end == agent::end_reason::eos);
      CHECK(r.trace == t);
      CHECK(task.check(x, r.output));
      CHECK(r.output == output_of(t));
    }
  }
}

TEST_CASE("multiplication: check is an exact match of the product's digits") {
  multiplication const task;
  rng g(6);
  for (int i = 0; i < 20; ++i) {
    auto const x = task.sample(g, 12);
    auto out = output_of(task.expert(x));
    REQUIRE(task.check(x, out));
    auto wrong = out;
    auto& d = wrong[static_cast<std::size_t>(g.uniform_int(0, static_cast<std::int64_t>(wrong.size()) - 1))];
    d = tasks::addition_tokens::digit((tasks::addition_tokens::value(d) + 1 + static_cast<int>(g.uniform_int(0, 8))) %
                                      10);
    CHECK_FALSE(task.check(x, wrong));
    CHECK_FALSE(task.check(x, std::span(out).first(out.size() - 1)));
    out.push_back(tasks::addition_tokens::digit(0));
    CHECK_FALSE(task.check(x, out));
  }
  CHECK(tasks::multiply_digits({9, 0, 7}, {3}) == tasks::digits{2, 7, 2, 1});
  CHECK(tasks::multiply_digits({5, 7}, {6, 8}) == tasks::digits{3, 8, 7, 6});
  CHECK(tasks::multiply_digits({1}, {1}) == tasks::digits{1});
}

TEST_CASE("multiplication: invalid actions end the episode with a reason") {
  multiplication const task;
  auto const x = task.instance_from_strings("123", "45");
  auto t = task.expert(x);
  // The model uses p4 before placing it.
  std::size_t first_model = task.prompt(x).size();
  t.tokens[first_model] = task.vocab().id("[p4.read]");
  auto r = replay(task, x, t);
  CHECK(r.end == agent::end_reason::invalid);
  CHECK(r.why.find("p4") != std::string::npos);
  // A <PAD> (what an untrained lookup table answers) is refused too.
  models::lookup_learner<4> untrained;
  r = run(untrained, task, x, 100);
  CHECK(r.end == agent::end_reason::invalid);
  CHECK_FALSE(r.why.empty());
  // A model that never stops hits the memory limit of a tool with small limits.
  tools::pointer_memory_limits lim;
  lim.max_memory = 64;
  multiplication const small({1, 2}, lim);
  struct chatter {
    void reset() {}
    void observe(tools::token) {}
    tools::token act() { return tasks::addition_tokens::digit(7); }
  } c;
  auto tool = small.make_tool();
  r = agent::run_episode(c, tool, small.prompt(x), agent::episode_markers::from(small.vocab()), 1000);
  CHECK(r.end == agent::end_reason::invalid);
  CHECK(r.why.find("memory limit") != std::string::npos);
  // Bad operands are the caller's error.
  CHECK_THROWS_AS((void)task.instance_from_strings("012", "3"), ssmlen::error);
  CHECK_THROWS_AS((void)task.instance_from_strings("0", "3"), ssmlen::error);
  CHECK_THROWS_AS((void)task.instance_from_strings("12", "0"), ssmlen::error);
  CHECK_THROWS_AS((void)task.instance_from_strings("12", "345"), ssmlen::error);
  CHECK_THROWS_AS((void)multiplication({1, 1}).instance_from_strings("12", "34"), ssmlen::error);
  CHECK_THROWS_AS((void)multiplication({2, 2}).instance_from_strings("12", "3"), ssmlen::error);
  rng g(1);
  CHECK_THROWS_AS((void)task.sample(g, 0), ssmlen::error);
  CHECK_THROWS_AS(multiplication({0, 2}), ssmlen::error);
  CHECK_THROWS_AS(multiplication({2, 1}), ssmlen::error);
}

TEST_CASE("multiplication: long random token streams never crash the tool and stay within its limits") {
  tools::pointer_memory_limits lim;
  lim.max_memory = 500;
  lim.max_observations = 2000;
  multiplication const task({1, 2}, lim);
  rng g(9);
  int invalid = 0;
  std::int64_t steps = 0;
  for (int episode = 0; episode < 50; ++episode) {
    auto tool = task.make_tool();
    auto const x = task.sample(g, 20);
    tool.reset(task.prompt(x));
    for (int k = 1; k <= 4; ++k) {  // place the pointers, so that most streams run until a limit
      REQUIRE(tool.feed(task.vocab().id(tools::pointer_command_name(k, "new"))).kind ==
              tools::tool_reply_kind::accepted);
    }
    for (int step = 0; step < 5000; ++step) {
      auto const r = tool.feed(testing::fuzz_token(g, task.vocab().size()));
      CHECK(static_cast<std::int64_t>(tool.memory().size()) <= lim.max_memory);
      if (r.kind == tools::tool_reply_kind::invalid) {
        CHECK_FALSE(r.why.empty());
        ++invalid;
        steps += step;
        break;
      }
      if (r.kind == tools::tool_reply_kind::observe) {
        REQUIRE(r.observation.size() == 1);
        CHECK(task.vocab().valid(r.observation[0]));
      }
    }
  }
  CHECK(invalid == 50);
  CHECK(steps > 50 * 300);  // the streams were long: most ended at the memory or observation limit
}

TEST_CASE("multiplication: sampling is deterministic per seed and follows the stated distributions") {
  multiplication const mixed, one({1, 1}), two({2, 2});
  rng g1(42), g2(42);
  for (int i = 0; i < 20; ++i) {
    CHECK(mixed.sample(g1, 10) == mixed.sample(g2, 10));
  }
  rng g(43);
  // n1 ~ U{1..10}, n2 ~ U{1, 2}; the leading digit uniform on 1..9 (positive, no leading zero), the others on 0..9.
  std::vector<std::int64_t> a_sizes(10), b_sizes(2), leading(9), other(10);
  for (int i = 0; i < 6000; ++i) {
    auto const x = mixed.sample(g, 10);
    ++a_sizes[x.a.size() - 1];
    ++b_sizes[x.b.size() - 1];
    for (auto const* d : {&x.a, &x.b}) {
      REQUIRE(d->front() != 0);
      ++leading[static_cast<std::size_t>(d->front() - 1)];
      for (std::size_t k = 1; k < d->size(); ++k) {
        ++other[static_cast<std::size_t>((*d)[k])];
      }
    }
    CHECK(one.sample(g, 10).b.size() == 1);
    CHECK(two.sample(g, 10).b.size() == 2);
  }
  for (auto const* counts : {&a_sizes, &b_sizes, &leading, &other}) {
    testing::check_uniform(*counts);
  }
  auto const x = mixed.sample_exact(g, 37);
  CHECK(x.a.size() == 37);
  CHECK(x.a.front() != 0);
  CHECK(mixed.name() == "multiplication");
  CHECK(one.name() == "multiplication_1");
  CHECK(two.name() == "multiplication_2");
  CHECK(mixed.describe(mixed.instance_from_strings("57", "68"))["product"] == "3876");
}

TEST_CASE("multiplication: traces grow linearly: 23 n + 37 (+17) tokens for n×1, 60 n + 109..156 for n×2") {
  // n×1, per digit of a: 5 tokens to walk to its end, 11 for its column, 7 to read the column back; 17 more when
  // the product has n + 1 digits (a last column without [p1.left], read back). n×2: two rows and their sum, 60
  // tokens per digit of a, plus a constant that depends on which rows end with a carry.
  rng g(8);
  for (int k : {1, 2}) {
    multiplication const task({k, k});
    for (int i = 0; i < 400; ++i) {
      auto const n = i < 390 ? static_cast<int>(g.uniform_int(1, 40)) : 1000;
      auto const x = task.sample_exact(g, n);
      auto const after_prompt = static_cast<std::int64_t>(task.expert(x).size() - task.prompt(x).size());
      if (k == 1) {
        auto const longer = tasks::multiply_digits(x.a, x.b).size() > x.a.size() ? 17 : 0;
        CHECK(after_prompt == 23 * n + 37 + longer);
      } else {
        CHECK(after_prompt - 60 * n >= 109);
        CHECK(after_prompt - 60 * n <= 156);
      }
    }
  }
}

TEST_CASE("multiplication: lookup_learner<7> trained on at most 10 digits multiplies 1000-digit numbers") {
  // W = 7 is the format's longest reach: after "[p1.read] (x) [p2.read] (y) [p3.read] (c) s c'", moving p1 left
  // depends on x, six tokens back. Every operand is read just before it is used.
  multiplication const task;
  models::lookup_learner<7> learner;
  rng g(1);
  for (int i = 0; i < 2000; ++i) {
    learner.learn(task.expert(task.sample(g, 10)));
  }
  CHECK(learner.conflicts() == 0);
  rng h(77);
  int solved = 0, total = 0;
  for (int n : {1, 7, 10, 11, 50, 200, 1000, 1000}) {
    for (int k : {1, 2}) {
      solved += solves(learner, task, multiplication({k, k}).sample_exact(h, n)) ? 1 : 0;
      ++total;
    }
  }
  CHECK(solved == total);
  // A shorter window cannot tell where it is: W = 6 has conflicts.
  models::lookup_learner<6> short_window;
  for (int i = 0; i < 300; ++i) {
    short_window.learn(task.expert(task.sample(g, 10)));
  }
  CHECK(short_window.conflicts() > 0);
}
