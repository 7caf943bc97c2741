#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tasks/addition_ablations.hpp>
#include <ssmlen/tools/calculator.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace ssmlen;
using tools::calculator;
using tools::calculator_limits;
using tools::tool_reply_kind;

static_assert(tools::tool<calculator>);

namespace {
std::vector<tools::token> observation_of(calculator& c, tools::token add) {
  auto const r = c.feed(add);
  REQUIRE(r.kind == tool_reply_kind::observe);
  return {r.observation.begin(), r.observation.end()};
}
}  // namespace

TEST_CASE("calculator: [add] observes the digits of a + b, for operands of every size") {
  auto const v = tasks::addition_calculator::make_vocab();
  auto const add = v.id("[add]");
  calculator c(v);
  rng g(5);
  for (int n : {1, 2, 3, 9, 10, 57, 400}) {
    for (int i = 0; i < 10; ++i) {
      auto const x = tasks::addition_operands::sample(g, n);
      c.reset(tasks::addition_tokens::prompt(x));
      auto const obs = observation_of(c, add);
      CHECK(tasks::addition_tokens::equals_digits(tasks::add_digits(x.a, x.b), obs));
      CHECK(c.feed(v.id("7")).kind == tool_reply_kind::stored);  // anything else is stored
    }
  }
  c.reset(tasks::addition_tokens::prompt(tasks::addition_operands::from_strings("0", "0")));
  CHECK(observation_of(c, add) == std::vector<tools::token>{v.id("0")});
  c.reset(tasks::addition_tokens::prompt(tasks::addition_operands::from_strings("999", "1")));
  CHECK(observation_of(c, add) == std::vector<tools::token>{v.id("1"), v.id("0"), v.id("0"), v.id("0")});
}

TEST_CASE("calculator: malformed prompts, <PAD>, unknown ids and exhausted limits are invalid with a reason") {
  auto const v = tasks::addition_calculator::make_vocab();
  auto const add = v.id("[add]");
  auto const d = [&](char ch) { return v.id(std::string(1, ch)); };
  auto const plus = v.id("+"), eq = v.id("=");
  calculator c(v, {.max_calls = 2, .max_stored = 3});
  for (auto const& bad : std::vector<std::vector<tools::token>>{{},
                                                                {d('1'), plus, eq},
                                                                {plus, d('1'), eq},
                                                                {d('1'), plus, d('2')},
                                                                {d('1'), d('2'), eq},
                                                                {d('1'), plus, d('2'), plus, d('3'), eq},
                                                                {d('1'), add, plus, d('2'), eq}}) {
    c.reset(bad);
    auto const r = c.feed(add);
    CHECK(r.kind == tool_reply_kind::invalid);
    CHECK(std::string(r.why).find("a + b =") != std::string::npos);
  }
  c.reset(std::vector<tools::token>{d('4'), plus, d('5'), eq});
  CHECK(c.feed(tools::vocab::pad).kind == tool_reply_kind::invalid);
  CHECK(c.feed(static_cast<tools::token>(v.size())).kind == tool_reply_kind::invalid);
  CHECK(c.feed(add).kind == tool_reply_kind::observe);
  CHECK(c.feed(add).kind == tool_reply_kind::observe);
  CHECK(c.feed(add).kind == tool_reply_kind::invalid);  // call limit
  for (int i = 0; i < 3; ++i) {
    CHECK(c.feed(d('9')).kind == tool_reply_kind::stored);
  }
  CHECK(c.feed(d('9')).kind == tool_reply_kind::invalid);                            // memory limit
  CHECK_THROWS_AS(calculator(tasks::addition_tokens::base_vocab()), ssmlen::error);  // no [add] in the vocabulary
}

TEST_CASE("calculator: long random token streams and prompts never crash and stay within the limits") {
  auto const v = tasks::addition_calculator::make_vocab();
  calculator_limits const limits{.max_calls = 8, .max_stored = 1000};
  calculator c(v, limits);
  rng g(17);
  std::int64_t observed = 0, invalid = 0, full = 0;
  for (int episode = 0; episode < 200; ++episode) {
    std::vector<tools::token> prompt(static_cast<std::size_t>(g.uniform_int(0, 12)));
    for (auto& t : prompt) {
      t = static_cast<tools::token>(g.uniform_int(0, v.size()));
    }
    if (episode % 2 == 0) {  // half the prompts are well formed
      prompt = tasks::addition_tokens::prompt(tasks::addition_operands::sample(g, 20));
    }
    c.reset(prompt);
    std::int64_t stored = 0;
    for (int step = 0; step < 3000; ++step) {  // goes on after invalid actions: the tool must stay sane
      auto const r = c.feed(static_cast<tools::token>(g.uniform_int(-1, v.size())));
      REQUIRE(c.calls() <= limits.max_calls);
      stored += r.kind == tool_reply_kind::stored ? 1 : 0;
      REQUIRE(stored <= limits.max_stored);
      if (r.kind == tool_reply_kind::invalid) {
        REQUIRE(!r.why.empty());
        ++invalid;
      }
      REQUIRE(r.observation.size() <= 21);  // the digits of a sum of two numbers of at most 20 digits
      for (auto o : r.observation) {
        REQUIRE(tasks::addition_tokens::is_digit(o));
      }
      observed += r.kind == tool_reply_kind::observe ? 1 : 0;
    }
    full += stored == limits.max_stored ? 1 : 0;
  }
  CHECK(observed > 100);
  CHECK(invalid > 100);
  CHECK(full > 50);  // the streams were long enough to fill the memory
}
