// Tower of Hanoi, iterative (1 pointer) and recursive (2 pointers): documented outputs, replays through the tool,
// checks, invalid actions, sampling, trace growth, and locality (lookup tables learned from towers of at most 8
// and 7 disks solve 12 and 10 disks).
#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/lookup_learner.hpp>
#include <ssmlen/tasks/hanoi.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "../support/sampling_checks.hpp"
#include "../support/task_testing.hpp"

using namespace ssmlen;
using tasks::hanoi_instance;
using tasks::hanoi_iterative;
using tasks::hanoi_recursive;
using testing::run;
using testing::solves;

static_assert(tasks::task_env<hanoi_iterative>);
static_assert(tasks::task_env<hanoi_recursive>);

namespace {

template <class Task>
std::string render(Task const& task, std::span<const tools::token> tokens) {
  std::ostringstream s;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    s << (i ? " " : "") << task.vocab().name(tokens[i]);
  }
  return s.str();
}

template <class Task>
std::string render_trace(Task const& task, tools::trace const& t) {
  std::ostringstream s;
  for (std::size_t i = 0; i < t.size(); ++i) {
    auto const& name = task.vocab().name(t.tokens[i]);
    s << (i ? " " : "") << (t.roles[i] == tools::role::observation ? "(" + name + ")" : name);
  }
  return s.str();
}

std::vector<tools::token> output_of(tools::trace const& t) {
  std::vector<tools::token> out;
  for (std::size_t i = 0; i + 1 < t.size(); ++i) {  // the last token is <EOS>
    if (t.roles[i] == tools::role::output) {
      out.push_back(t.tokens[i]);
    }
  }
  return out;
}

template <class Task>
void check_replays(Task const& task, int max_disks, std::uint64_t seed) {
  rng g(seed);
  for (int n = 1; n <= max_disks; ++n) {
    auto const x = task.sample_exact(g, n);
    auto const t = task.expert(x);
    agent::replay_policy p(t);
    auto const r = run(p, task, x, static_cast<std::int64_t>(t.size()) + 10);
    REQUIRE(r.end == agent::end_reason::eos);
    CHECK(r.trace == t);
    CHECK(task.check(x, r.output));
    CHECK(r.output == task.solution(x));
  }
}

template <class Task>
void check_corruptions(Task const& task, std::uint64_t seed) {
  rng g(seed);
  for (int i = 0; i < 30; ++i) {
    auto const x = task.sample(g, 6);
    auto const out = task.solution(x);
    REQUIRE(task.check(x, out));
    auto wrong = out;
    auto const at = static_cast<std::size_t>(g.uniform_int(0, static_cast<std::int64_t>(out.size()) - 1));
    do {
      wrong[at] = static_cast<tools::token>(g.uniform_int(1, task.vocab().size() - 1));
    } while (wrong[at] == out[at]);
    CHECK_FALSE(task.check(x, wrong));
    CHECK_FALSE(task.check(x, std::span(out).first(out.size() - 1)));
  }
}

}  // namespace

TEST_CASE("hanoi: the canonical solution moves 2^n - 1 disks legally onto C") {
  for (int n = 1; n <= 10; ++n) {
    auto const moves = tasks::hanoi_solution(n);
    REQUIRE(moves.size() == (std::size_t{1} << n) - 1);
    std::vector<std::vector<int>> rods(3);
    for (int k = n; k >= 1; --k) {
      rods[0].push_back(k);
    }
    for (auto const& m : moves) {
      REQUIRE(!rods[static_cast<std::size_t>(m.from)].empty());
      CHECK(rods[static_cast<std::size_t>(m.from)].back() == m.rank);
      auto& to = rods[static_cast<std::size_t>(m.to)];
      CHECK((to.empty() || to.back() > m.rank));
      rods[static_cast<std::size_t>(m.from)].pop_back();
      to.push_back(m.rank);
    }
    CHECK(rods[2].size() == static_cast<std::size_t>(n));
  }
}

TEST_CASE("hanoi_iterative: the documented one-disk trace and two-disk output") {
  hanoi_iterative const task;
  CHECK(render_trace(task, task.expert({{9}})) ==
        "(9) = [p1.new] [p1.left] [p1.left] [p1.right] [p1.right] [p1.read] ((9)) [p1.right] [p1.right] "
        "[p1.read] ([NIL]) [ANS] < [p1.new] [p1.read] ((9)) A (9) , [p1.right] [p1.read] (=) | "
        "[p1.right] [p1.right] [p1.read] (<) [p1.right] [p1.read] (A) [p1.right] [p1.read] ((9)) (9) [p1.left] "
        "[p1.read] (A) A [p1.left] [p1.read] (<) C $ < [p1.right] [p1.read] (A) c [p1.right] [p1.read] ((9)) (9) , "
        "[p1.right] [p1.right] [p1.read] (|) | [p1.right] [p1.right] [p1.right] [p1.right] [p1.right] [p1.read] (<) "
        "[p1.right] [p1.read] (c) [p1.right] [p1.right] [p1.right] [p1.read] (|) <EOS>");
  // Two disks (an even count: the smallest cycles A->B->C): the initial state, then each move and the state after it.
  CHECK(
      render(task, output_of(task.expert({{7, 2}}))) ==
      "> A (2) , A (7) , | (2) A B $ > b (2) , a (7) , | (7) A C $ > B (2) , c (7) , | (2) B C $ > c (2) , c (7) , |");
  CHECK(render(task, task.prompt({{7, 2}})) == "(2) (7) =");
}

TEST_CASE("hanoi_recursive: the documented three-disk answer") {
  hanoi_recursive const task;
  hanoi_instance const x{{7, 5, 2}};
  auto const t = task.expert(x);
  CHECK(render(task, output_of(t)) == "(2) A C $ (5) A B $ (2) C B $ (7) A C $ (2) B A $ (5) B C $ (2) A C $ #");
  std::string thoughts;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t.roles[i] == tools::role::thought) {
      thoughts += task.vocab().name(t.tokens[i]) + " ";
    }
  }
  // L0, L1 and L2, each ended by '#', then [ANS] before L3.
  CHECK(thoughts == "# (2) A C $ # (2) A B $ (5) A C $ (2) B C $ # [ANS] ");
}

TEST_CASE("hanoi: replaying expert traces through the tool reproduces them and passes check") {
  check_replays(hanoi_iterative{}, 12, 31);
  check_replays(hanoi_recursive{}, 10, 32);
}

TEST_CASE("hanoi: check is an exact match of the whole answer") {
  check_corruptions(hanoi_iterative{}, 41);
  check_corruptions(hanoi_recursive{}, 42);
}

TEST_CASE("hanoi: invalid actions end the episode with a reason") {
  hanoi_instance const x{{40, 30, 20}};
  for (auto const* which : {"iterative", "recursive"}) {
    auto const run_corrupted = [&](auto const& task) {
      auto t = task.expert(x);
      t.tokens[task.prompt(x).size()] = task.vocab().id("[p1.read]");  // a read before [p1.new]
      agent::replay_policy p(t);
      auto const r = run(p, task, x, 1000);
      CHECK(r.end == agent::end_reason::invalid);
      CHECK(r.why.find("p1") != std::string::npos);
      models::lookup_learner<3> untrained;
      auto const u = run(untrained, task, x, 100);
      CHECK(u.end == agent::end_reason::invalid);
      CHECK_FALSE(u.why.empty());
    };
    if (std::string(which) == "iterative") {
      run_corrupted(hanoi_iterative{});
    } else {
      run_corrupted(hanoi_recursive{});
    }
  }
  // A model that keeps writing hits the memory limit.
  tools::pointer_memory_limits lim;
  lim.max_memory = 50;
  hanoi_recursive const small(lim);
  struct chatter {
    void reset() {}
    void observe(tools::token) {}
    tools::token act() { return tasks::hanoi_common::disk(7); }
  } c;
  auto const r = run(c, small, x, 1000);
  CHECK(r.end == agent::end_reason::invalid);
  CHECK(r.why.find("memory limit") != std::string::npos);
  // Bad towers are the caller's error.
  hanoi_iterative const task;
  CHECK_THROWS_AS((void)task.expert({{}}), ssmlen::error);
  CHECK_THROWS_AS((void)task.expert({{5, 5}}), ssmlen::error);
  CHECK_THROWS_AS((void)task.expert({{2, 5}}), ssmlen::error);
  CHECK_THROWS_AS((void)task.expert({{101}}), ssmlen::error);
  CHECK_THROWS_AS((void)task.solution({{0}}), ssmlen::error);
  rng g(1);
  CHECK_THROWS_AS((void)task.sample(g, 0), ssmlen::error);
  CHECK_THROWS_AS((void)task.sample_exact(g, 17), ssmlen::error);
}

TEST_CASE("hanoi: long random token streams never crash the tools and stay within their limits") {
  tools::pointer_memory_limits lim;
  lim.max_memory = 400;
  lim.max_observations = 1500;
  hanoi_iterative const it(lim);
  hanoi_recursive const rec(lim);
  rng g(12);
  std::int64_t steps = 0;
  auto const fuzz = [&](auto const& task, int pointers) {
    auto tool = task.make_tool();
    tool.reset(task.prompt(task.sample(g, 8)));
    for (int k = 1; k <= pointers; ++k) {
      REQUIRE(tool.feed(task.vocab().id(tools::pointer_command_name(k, "new"))).kind ==
              tools::tool_reply_kind::accepted);
    }
    for (int step = 0; step < 4000; ++step) {
      auto const r = tool.feed(testing::fuzz_token(g, task.vocab().size()));
      CHECK(static_cast<std::int64_t>(tool.memory().size()) <= lim.max_memory);
      if (r.kind == tools::tool_reply_kind::invalid) {
        CHECK_FALSE(r.why.empty());
        steps += step;
        return;
      }
    }
    FAIL("a stream should end at a limit or on a bad token");
  };
  for (int i = 0; i < 20; ++i) {
    fuzz(it, 1);
    fuzz(rec, 2);
  }
  CHECK(steps > 40 * 100);
}

TEST_CASE("hanoi: sampling is deterministic per seed and draws distinct sizes from 1..100") {
  hanoi_iterative const task;
  hanoi_recursive const rec;
  rng g1(7), g2(7);
  for (int i = 0; i < 10; ++i) {
    CHECK(task.sample(g1, 8) == task.sample(g2, 8));
    CHECK(rec.sample(g1, 8) == task.sample(g2, 8));  // both variants draw the same towers
  }
  rng g(8);
  std::vector<std::int64_t> counts(8), sizes(100);
  for (int i = 0; i < 8000; ++i) {
    auto const x = task.sample(g, 8);
    ++counts[x.disks.size() - 1];                                                // n' ~ U{1..8}
    CHECK(std::is_sorted(x.disks.rbegin(), x.disks.rend()));                     // largest first, so bottom first
    CHECK(std::adjacent_find(x.disks.begin(), x.disks.end()) == x.disks.end());  // distinct
    for (auto d : x.disks) {
      REQUIRE((d >= 1 && d <= 100));
      ++sizes[static_cast<std::size_t>(d - 1)];  // every size equally likely
    }
  }
  testing::check_uniform(counts);
  testing::check_uniform(sizes);
  CHECK(task.sample_exact(g, 16).disks.size() == 16);
  CHECK(task.describe({{7, 5, 2}})["moves"] == 7);
}

TEST_CASE("hanoi: iterative traces grow as n 2^n, recursive ones as 2^n (exact lengths)") {
  // Iterative: each of the 2^n - 1 moves copies the whole state, 10 tokens per disk
  // (`[p1.read] (X) X' [p1.right] [p1.read] (d) d , [p1.right] [p1.right]`): (10 n + 38) 2^n - 7 n - 16 - (-1)^n
  // tokens after the prompt, the last term from the parity pass, which reads two disks at a time.
  // Recursive: no state is ever copied; each list L(i-1) is copied twice into Li, 11.5 tokens per token of L(i-1)
  // (4 for the first copy, 6 for the marked second one, 6 per 4-token move for the walk back), and the lists add
  // up to about twice the answer: 46 2^n - 19 n - 33 tokens.
  hanoi_iterative const it;
  hanoi_recursive const rec;
  rng g(9);
  auto const after_prompt = [](auto const& task, hanoi_instance const& x) {
    return static_cast<std::int64_t>(task.expert(x).size() - task.prompt(x).size());
  };
  for (std::int64_t n = 1; n <= 12; ++n) {
    CAPTURE(n);
    auto const x = it.sample_exact(g, static_cast<int>(n));
    auto const two_n = std::int64_t{1} << n;
    CHECK(after_prompt(it, x) == (10 * n + 38) * two_n - 7 * n - 16 - (n % 2 == 0 ? 1 : -1));
    CHECK(after_prompt(rec, x) == 46 * two_n - 19 * n - 33);
  }
}

TEST_CASE("hanoi: lookup tables learned from short towers solve 12 (iterative) and 10 (recursive) disks") {
  // W = 10 and W = 5 are each format's longest reach (9 and 4 have conflicts). A table only answers contexts it
  // has seen whole, so the training towers must show every disk size in every kind of step: full towers of the
  // largest training size, random ones up to it, and many one- and two-disk towers (every size as the top disk).
  auto const learn_and_solve = [](auto& learner, auto const& task, int train_max, std::vector<int> const& sizes) {
    rng g(1);
    for (int i = 0; i < 100; ++i) {
      learner.learn(task.expert(task.sample_exact(g, train_max)));
    }
    for (int i = 0; i < 300; ++i) {
      learner.learn(task.expert(task.sample(g, train_max)));
    }
    for (int i = 0; i < 2000; ++i) {
      learner.learn(task.expert(task.sample(g, 2)));
    }
    CHECK(learner.conflicts() == 0);
    rng h(77);
    int solved = 0, total = 0;
    for (int n : sizes) {
      solved += solves(learner, task, task.sample_exact(h, n)) ? 1 : 0;
      ++total;
    }
    CHECK(solved == total);
  };
  models::lookup_learner<10> iterative;
  learn_and_solve(iterative, hanoi_iterative{}, 8, {1, 2, 3, 5, 8, 9, 10, 11, 12, 12});
  models::lookup_learner<5> recursive;
  learn_and_solve(recursive, hanoi_recursive{}, 7, {1, 2, 3, 5, 7, 8, 9, 10, 10});

  hanoi_iterative const it;
  hanoi_recursive const rec;
  models::lookup_learner<9> short_iterative;
  models::lookup_learner<4> short_recursive;
  rng g(3);
  for (int i = 0; i < 100; ++i) {
    short_iterative.learn(it.expert(it.sample(g, 8)));
    short_recursive.learn(rec.expert(rec.sample(g, 7)));
  }
  CHECK(short_iterative.conflicts() > 0);
  CHECK(short_recursive.conflicts() > 0);
}
