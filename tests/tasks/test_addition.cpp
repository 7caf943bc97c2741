#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/addition.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "../support/task_testing.hpp"

using namespace ssmlen;
using tasks::addition;
using testing::output_of;
using testing::render;
using testing::replay;
using testing::run;

static_assert(tasks::task_env<addition>);

TEST_CASE("addition: the expert trace of 57 + 68 is the protocol's worked example") {
  addition const task;
  auto const x = task.instance_from_strings("57", "68");
  auto const t = task.expert(x);
  CHECK(render(task, t, 0).rfind("5 7 + 6 8 = [p1.new]", 0) == 0);
  std::string const model_part =
      "[p1.new] [p1.read] (5) [p1.right] [p1.read] (7) [p1.right] [p1.read] (+) [p1.left] "
      "[p2.new] [p3.new] [p2.read] (5) [p2.right] [p3.right] [p2.read] (7) [p2.right] [p3.right] "
      "[p2.read] (+) [p2.right] [p3.right] [p2.read] (6) [p2.right] [p3.right] "
      "[p2.read] (8) [p2.right] [p3.right] [p2.read] (=) [p2.left] "
      "[p1.read] (7) [p2.read] (8) 1 5 [p1.left] [p2.left] [p3.right] [p3.right] "
      "[p1.read] (5) [p2.read] (6) 1 2 [p1.left] [p2.left] [p3.right] [p3.right] "
      "[p1.read] ([NIL]) [p2.read] (+) 0 1 [p3.right] [p3.right] "
      "[p1.read] ([NIL]) [p2.read] (+) [ANS] "
      "[p3.read] (1) 1 [p3.left] [p3.left] [p3.read] (2) 2 [p3.left] [p3.left] "
      "[p3.read] (5) 5 [p3.left] [p3.left] [p3.read] (=) <EOS>";
  CHECK(render(task, t, 6) == model_part);
  // Roles: thoughts are the carry/sum digits and [ANS]; outputs are the read-back digits and <EOS>.
  std::string thoughts, outputs;
  for (std::size_t i = 0; i < t.size(); ++i) {
    auto const& name = task.vocab().name(t.tokens[i]);
    if (t.roles[i] == tools::role::thought) {
      thoughts += name;
    } else if (t.roles[i] == tools::role::output) {
      outputs += name;
    }
  }
  CHECK(thoughts == "151201[ANS]");
  CHECK(outputs == "125<EOS>");
}

TEST_CASE("addition: replaying expert traces through the tool reproduces every observation and passes check") {
  addition const task;
  rng g(2024);
  std::vector<addition::instance> cases;
  for (int n : {1, 2, 3, 4, 5, 8, 13, 40, 100}) {
    for (int i = 0; i < 12; ++i) {
      cases.push_back(task.sample(g, n));
    }
  }
  for (int i = 0; i < 3; ++i) {
    cases.push_back(task.sample_exact(g, 1000));
  }
  cases.push_back(task.instance_from_strings(std::string(1000, '9'), "1"));  // a carry through 1000 columns
  cases.push_back(task.instance_from_strings("0", "0"));
  for (auto const& x : cases) {
    auto const expert = task.expert(x);
    auto const r = replay(task, x, expert);
    REQUIRE(r.end == agent::end_reason::eos);
    CHECK(r.trace == expert);
    CHECK(task.check(x, r.output));
  }
}

TEST_CASE("addition: corrupted output streams fail check") {
  addition const task;
  rng g(7);
  for (int i = 0; i < 50; ++i) {
    auto const x = task.sample(g, 12);
    auto const r = replay(task, x, task.expert(x));
    auto out = r.output;
    REQUIRE(task.check(x, out));
    auto const at = static_cast<std::size_t>(g.uniform_int(0, static_cast<std::int64_t>(out.size()) - 1));
    auto changed = out;
    changed[at] = tasks::addition_tokens::digit((tasks::addition_tokens::value(out[at]) + 1) % 10);
    CHECK_FALSE(task.check(x, changed));
    auto longer = out;
    longer.push_back(tasks::addition_tokens::digit(0));
    CHECK_FALSE(task.check(x, longer));
    CHECK_FALSE(task.check(x, std::span(out).first(out.size() - 1)));
    auto shifted = out;
    shifted.insert(shifted.begin(), tasks::addition_tokens::digit(0));  // a leading zero is wrong too
    CHECK_FALSE(task.check(x, shifted));
  }
}

TEST_CASE("addition: generators are deterministic for a seed; sizes and digits follow the stated distributions") {
  addition const task;
  rng a(99), b(99), c(100);
  int same_as_other_seed = 0;
  for (int i = 0; i < 200; ++i) {
    auto const x = task.sample(a, 30);
    CHECK(x == task.sample(b, 30));
    same_as_other_seed += x == task.sample(c, 30);
  }
  CHECK(same_as_other_seed < 5);

  // sample(g, n): digit counts uniform on 1..n, no leading zeros; first digits uniform on 1..9.
  int constexpr n = 5, draws = 20000;
  std::vector<int> count_a(n + 1), count_b(n + 1), first(10);
  rng g(1);
  for (int i = 0; i < draws; ++i) {
    auto const x = task.sample(g, n);
    REQUIRE(x.a.size() >= 1);
    REQUIRE(x.a.size() <= n);
    REQUIRE(x.b.size() >= 1);
    REQUIRE(x.b.size() <= n);
    ++count_a[x.a.size()];
    ++count_b[x.b.size()];
    if (x.a.size() > 1) {
      REQUIRE(x.a[0] != 0);
      ++first[x.a[0]];
    }
    REQUIRE((x.b.size() == 1 || x.b[0] != 0));
  }
  for (int k = 1; k <= n; ++k) {  // expected draws / n = 4000 each; 5 sigma is about 300
    CHECK(std::abs(count_a[k] - draws / n) < 300);
    CHECK(std::abs(count_b[k] - draws / n) < 300);
  }
  CHECK(first[0] == 0);
  int const multi = draws - count_a[1];
  for (int d = 1; d <= 9; ++d) {
    CHECK(std::abs(first[d] - multi / 9) < 5 * 60);
  }
  // sample_exact(g, n): both operands have exactly n digits.
  for (int i = 0; i < 100; ++i) {
    auto const x = task.sample_exact(g, 17);
    CHECK(x.a.size() == 17);
    CHECK(x.b.size() == 17);
    CHECK(x.a[0] != 0);
    CHECK(x.b[0] != 0);
  }
}

TEST_CASE("addition: the trace is linear in the digit counts: 8 n1 + 5 n2 + 13 max + 21 (+13 on a final carry)") {
  addition const task;
  rng g(3);
  for (int i = 0; i < 300; ++i) {
    auto const x = task.sample(g, i < 250 ? 9 : 300);
    auto const n1 = static_cast<std::int64_t>(x.a.size()), n2 = static_cast<std::int64_t>(x.b.size());
    auto const m = std::max(n1, n2);
    auto const carry = static_cast<std::int64_t>(tasks::add_digits(x.a, x.b).size()) > m ? 1 : 0;
    auto const t = task.expert(x);
    CHECK(static_cast<std::int64_t>(t.size()) - (n1 + n2 + 2) == 8 * n1 + 5 * n2 + 13 * m + 21 + 13 * carry);
  }
}

TEST_CASE("addition: operands from strings are validated") {
  addition const task;
  CHECK(task.instance_from_strings("0", "907").b == tasks::digits{9, 0, 7});
  CHECK_THROWS_AS((void)task.instance_from_strings("", "1"), ssmlen::error);
  CHECK_THROWS_AS((void)task.instance_from_strings("01", "1"), ssmlen::error);
  CHECK_THROWS_AS((void)task.instance_from_strings("1", "-1"), ssmlen::error);
  CHECK_THROWS_AS((void)task.instance_from_strings("12a", "1"), ssmlen::error);
  rng g(1);
  CHECK_THROWS_AS((void)task.sample(g, 0), ssmlen::error);
  CHECK_THROWS_AS((void)task.sample_exact(g, -3), ssmlen::error);
  CHECK(tasks::digits_to_string(tasks::add_digits({9, 9}, {1})) == "100");
}
