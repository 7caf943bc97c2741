#include <ssmlen/core/rng.hpp>
#include <ssmlen/tools/pointer_memory.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace ssmlen;
using tools::pointer_memory;
using tools::tool_reply_kind;

namespace {

// <PAD>, a, b, [NIL], then the commands of two pointers.
tools::vocab two_pointer_vocab() {
  tools::vocab v{"a", "b", "[NIL]"};
  for (int k = 1; k <= 2; ++k) {
    for (auto op : {"new", "left", "right", "read"}) {
      v.add(tools::pointer_command_name(k, op));
    }
  }
  return v;
}

}  // namespace

static_assert(tools::tool<pointer_memory<3>>);
static_assert(tools::tool<pointer_memory<0>>);

TEST_CASE("pointer_memory: pointers move and read the prompt and stored tokens; outside memory reads [NIL]") {
  auto const v = two_pointer_vocab();
  auto const a = v.id("a"), b = v.id("b"), nil = v.id("[NIL]");
  pointer_memory<2> m(v);
  std::vector<tools::token> const prompt{a, b};
  m.reset(prompt);
  auto feed = [&](char const* name) { return m.feed(v.id(name)); };
  auto read = [&](char const* name) {
    auto const r = feed(name);
    REQUIRE(r.kind == tool_reply_kind::observe);
    REQUIRE(r.observation.size() == 1);
    return r.observation[0];
  };
  CHECK(feed("[p1.new]").kind == tool_reply_kind::accepted);
  CHECK(read("[p1.read]") == a);
  CHECK(feed("[p1.right]").kind == tool_reply_kind::accepted);
  CHECK(read("[p1.read]") == b);
  CHECK(feed("[p1.right]").kind == tool_reply_kind::accepted);
  CHECK(read("[p1.read]") == nil);                   // one past the end
  CHECK(m.feed(b).kind == tool_reply_kind::stored);  // memory is now a b b
  CHECK(m.memory().size() == 3);
  CHECK(read("[p1.read]") == b);
  // p2 is independent of p1; moving left of 0 reads [NIL], moving back reads again.
  CHECK(feed("[p2.new]").kind == tool_reply_kind::accepted);
  CHECK(feed("[p2.left]").kind == tool_reply_kind::accepted);
  CHECK(m.position(1) == -1);
  CHECK(read("[p2.read]") == nil);
  CHECK(feed("[p2.right]").kind == tool_reply_kind::accepted);
  CHECK(read("[p2.read]") == a);
  CHECK(m.position(0) == 2);
  // [pk.new] places the pointer at 0 again; commands and observations are not stored.
  CHECK(feed("[p1.new]").kind == tool_reply_kind::accepted);
  CHECK(read("[p1.read]") == a);
  CHECK(m.memory().size() == 3);
  // reset forgets pointers and stored tokens.
  m.reset(prompt);
  CHECK(m.memory().size() == 2);
  CHECK_FALSE(m.placed(0));
}

TEST_CASE("pointer_memory: invalid actions end the episode with a reason") {
  auto const v = two_pointer_vocab();
  std::vector<tools::token> const prompt{v.id("a")};
  SUBCASE("a pointer used before its [pk.new]") {
    pointer_memory<2> m(v);
    m.reset(prompt);
    for (auto const* cmd : {"[p2.read]", "[p2.left]", "[p2.right]"}) {
      auto const r = m.feed(v.id(cmd));
      CHECK(r.kind == tool_reply_kind::invalid);
      CHECK(std::string(r.why).find("[p2.new]") != std::string::npos);
    }
    CHECK(m.feed(v.id("[p1.new]")).kind == tool_reply_kind::accepted);
    CHECK(m.feed(v.id("[p2.read]")).kind == tool_reply_kind::invalid);  // p1's [new] does not place p2
  }
  SUBCASE("<PAD> and ids outside the vocabulary") {
    pointer_memory<2> m(v);
    m.reset(prompt);
    CHECK(m.feed(tools::vocab::pad).kind == tool_reply_kind::invalid);
    CHECK(m.feed(static_cast<tools::token>(v.size())).kind == tool_reply_kind::invalid);
    CHECK(m.feed(-5).kind == tool_reply_kind::invalid);
    CHECK(m.memory().size() == 1);
  }
  SUBCASE("the memory limit") {
    pointer_memory<2> m(v, {.max_memory = 3, .max_observations = 100});
    m.reset(prompt);
    CHECK(m.feed(v.id("b")).kind == tool_reply_kind::stored);
    CHECK(m.feed(v.id("b")).kind == tool_reply_kind::stored);
    auto const r = m.feed(v.id("b"));
    CHECK(r.kind == tool_reply_kind::invalid);
    CHECK(std::string(r.why).find("memory limit") != std::string::npos);
    CHECK(m.memory().size() == 3);
    std::vector<tools::token> const long_prompt(4, v.id("a"));
    m.reset(long_prompt);
    CHECK(m.feed(v.id("[p1.new]")).kind == tool_reply_kind::invalid);
  }
  SUBCASE("the observation limit") {
    pointer_memory<2> m(v, {.max_memory = 10, .max_observations = 2});
    m.reset(prompt);
    CHECK(m.feed(v.id("[p1.new]")).kind == tool_reply_kind::accepted);
    CHECK(m.feed(v.id("[p1.read]")).kind == tool_reply_kind::observe);
    CHECK(m.feed(v.id("[p1.read]")).kind == tool_reply_kind::observe);
    auto const r = m.feed(v.id("[p1.read]"));
    CHECK(r.kind == tool_reply_kind::invalid);
    CHECK(std::string(r.why).find("observation limit") != std::string::npos);
  }
}

TEST_CASE("pointer_memory: a vocabulary without its commands or bad limits are rejected") {
  tools::vocab const v{"a", "[NIL]"};
  CHECK_THROWS_AS((void)pointer_memory<1>{v}, ssmlen::error);
  CHECK_NOTHROW((void)pointer_memory<0>{v});
  CHECK_THROWS_AS((void)pointer_memory<2>(two_pointer_vocab(), {.max_memory = 0}), ssmlen::error);
}

TEST_CASE("pointer_memory: long random token streams never crash and stay within the limits") {
  auto const v = two_pointer_vocab();
  tools::pointer_memory_limits const limits{.max_memory = 64, .max_observations = 500};
  pointer_memory<2> m(v, limits);
  rng g(11);
  std::int64_t invalid = 0, observed = 0, stored = 0;
  for (int episode = 0; episode < 50; ++episode) {
    std::vector<tools::token> prompt(static_cast<std::size_t>(g.uniform_int(0, 70)));  // sometimes over the limit
    for (auto& t : prompt) {
      t = static_cast<tools::token>(g.uniform_int(1, 2));
    }
    m.reset(prompt);
    for (int step = 0; step < 2000; ++step) {
      // Any id of the vocabulary, and now and then <PAD> or an id outside it. The stream goes on after an
      // invalid action, which a well-behaved episode loop would not do, to check the tool stays sane.
      auto const t = g.uniform() < 0.02f ? static_cast<tools::token>(g.uniform_int(-3, 0)) +
                                               (g.uniform() < 0.5f ? 0 : static_cast<tools::token>(v.size()) + 3)
                                         : static_cast<tools::token>(g.uniform_int(1, v.size() - 1));
      auto const r = m.feed(t);
      REQUIRE(m.memory().size() <= std::max<std::size_t>(static_cast<std::size_t>(limits.max_memory), prompt.size()));
      REQUIRE(m.observations() <= limits.max_observations);
      if (r.kind == tool_reply_kind::observe) {
        REQUIRE(r.observation.size() == 1);
        REQUIRE(v.valid(r.observation[0]));
        ++observed;
      }
      stored += r.kind == tool_reply_kind::stored ? 1 : 0;
      if (r.kind == tool_reply_kind::invalid) {
        REQUIRE(!r.why.empty());
        ++invalid;
      }
    }
  }
  CHECK(invalid > 0);
  CHECK(observed > 1000);
  CHECK(stored > 100);
}
