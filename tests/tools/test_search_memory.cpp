// The search-memory tool: grep semantics over complete lines, the multi-token command protocol, invalid actions
// with reasons, limits, and a fuzz test against a plain reference grep.
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tools/search_memory.hpp>

#include <doctest/doctest.h>

#include <string>
#include <vector>

using namespace ssmlen;
using tools::token;
using tools::tool_reply_kind;

namespace {

tools::vocab test_vocab() { return {"[FIND]", "[END]", "<NL>", "a", "b", "c", "=", "x", "y"}; }

struct fixture {
  tools::vocab v = test_vocab();
  token find = v.id("[FIND]"), end = v.id("[END]"), nl = v.id("<NL>");
  token a = v.id("a"), b = v.id("b"), c = v.id("c"), eq = v.id("="), x = v.id("x"), y = v.id("y");

  //! Feeds `[FIND] q.. [END]` and returns the final reply's observation (copied).
  static std::vector<token> search(tools::search_memory& m, token find, token end, std::vector<token> const& q) {
    REQUIRE(m.feed(find).kind == tool_reply_kind::pending);
    for (auto t : q) {
      REQUIRE(m.feed(t).kind == tool_reply_kind::pending);
    }
    auto const r = m.feed(end);
    REQUIRE(r.kind == tool_reply_kind::observe);
    return {r.observation.begin(), r.observation.end()};
  }
};

}  // namespace

TEST_CASE("search_memory: a search observes every complete line holding the query, in order") {
  fixture f;
  tools::search_memory m(f.v);
  // Lines: "a = b", "c = a", "b = c", then an unterminated "a =".
  std::vector<token> prompt{f.a, f.eq, f.b, f.nl, f.c, f.eq, f.a, f.nl, f.b, f.eq, f.c, f.nl, f.a, f.eq};
  m.reset(prompt);
  CHECK(m.lines() == 3);
  CHECK(fixture::search(m, f.find, f.end, {f.a}) == std::vector<token>{f.a, f.eq, f.b, f.nl, f.c, f.eq, f.a, f.nl});
  CHECK(fixture::search(m, f.find, f.end, {f.a, f.eq}) == std::vector<token>{f.a, f.eq, f.b, f.nl});
  CHECK(fixture::search(m, f.find, f.end, {f.eq, f.c}) == std::vector<token>{f.b, f.eq, f.c, f.nl});
  // A newline in the query anchors at line ends.
  CHECK(fixture::search(m, f.find, f.end, {f.a, f.nl}) == std::vector<token>{f.c, f.eq, f.a, f.nl});
  // No match: an empty observation.
  CHECK(fixture::search(m, f.find, f.end, {f.x}).empty());
  CHECK(fixture::search(m, f.find, f.end, {f.c, f.b}).empty());
  // The unterminated line becomes searchable once the model ends it; queries and observations are not stored.
  auto const before = m.memory().size();
  CHECK(m.feed(f.y).kind == tool_reply_kind::stored);
  CHECK(fixture::search(m, f.find, f.end, {f.eq, f.y}).empty());
  CHECK(m.feed(f.nl).kind == tool_reply_kind::stored);
  CHECK(m.memory().size() == before + 2);
  CHECK(fixture::search(m, f.find, f.end, {f.eq, f.y}) == std::vector<token>{f.a, f.eq, f.y, f.nl});
  CHECK(m.lines() == 4);
  CHECK(m.observations() == 8 + 4 + 4 + 4 + 4);
}

TEST_CASE("search_memory: reset starts a fresh episode") {
  fixture f;
  tools::search_memory m(f.v);
  m.reset(std::vector<token>{f.a, f.nl});
  REQUIRE(m.feed(f.b).kind == tool_reply_kind::stored);
  REQUIRE(m.feed(f.nl).kind == tool_reply_kind::stored);
  REQUIRE(m.feed(f.find).kind == tool_reply_kind::pending);
  m.reset(std::vector<token>{f.c, f.nl});
  CHECK_FALSE(m.pending());
  CHECK(m.lines() == 1);
  CHECK(m.observations() == 0);
  CHECK(fixture::search(m, f.find, f.end, {f.b}).empty());
  CHECK(fixture::search(m, f.find, f.end, {f.c}) == std::vector<token>{f.c, f.nl});
}

TEST_CASE("search_memory: invalid actions end the episode with a reason") {
  fixture f;
  tools::search_memory_limits lim;
  lim.max_query = 3;
  lim.max_memory = 8;
  tools::search_memory m(f.v, lim);
  auto const expect_invalid = [](tools::tool_reply r, std::string const& part) {
    REQUIRE(r.kind == tool_reply_kind::invalid);
    CHECK(std::string(r.why).find(part) != std::string::npos);
  };
  std::vector<token> const prompt{f.a, f.eq, f.b, f.nl};

  m.reset(prompt);
  expect_invalid(m.feed(f.end), "[END] outside a search");
  m.reset(prompt);
  m.feed(f.find);
  expect_invalid(m.feed(f.find), "[FIND] inside a search");
  m.reset(prompt);
  m.feed(f.find);
  expect_invalid(m.feed(f.end), "empty search");
  m.reset(prompt);
  m.feed(f.find);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(m.feed(f.a).kind == tool_reply_kind::pending);
  }
  expect_invalid(m.feed(f.a), "search longer than 3 tokens");
  m.reset(prompt);
  expect_invalid(m.feed(tools::vocab::pad), "<PAD>");
  expect_invalid(m.feed(static_cast<token>(f.v.size())), "outside the vocabulary");
  expect_invalid(m.feed(-3), "outside the vocabulary");
  m.reset(prompt);
  for (int i = 0; i < 4; ++i) {
    REQUIRE(m.feed(f.x).kind == tool_reply_kind::stored);
  }
  expect_invalid(m.feed(f.x), "memory limit");
  // A prompt over the memory limit: every action is refused.
  m.reset(std::vector<token>(9, f.a));
  expect_invalid(m.feed(f.x), "prompt longer than the memory limit");
  // A bad prompt is the caller's error, not the model's.
  CHECK_THROWS_AS(m.reset(std::vector<token>{f.a, tools::vocab::pad}), ssmlen::error);
  // The tool needs its command tokens.
  CHECK_THROWS_AS(tools::search_memory(tools::vocab{"[FIND]", "<NL>"}), ssmlen::error);
}

TEST_CASE("search_memory: observation limits per search and per episode") {
  fixture f;
  std::vector<token> prompt;
  for (int i = 0; i < 10; ++i) {
    prompt.insert(prompt.end(), {f.a, f.b, f.nl});
  }
  tools::search_memory_limits lim;
  lim.max_observation = 12;
  tools::search_memory one(f.v, lim);
  one.reset(prompt);
  one.feed(f.find);
  one.feed(f.b);
  auto r = one.feed(f.end);
  REQUIRE(r.kind == tool_reply_kind::invalid);
  CHECK(std::string(r.why).find("observation limit") != std::string::npos);

  lim.max_observation = 1 << 10;
  lim.max_observations = 50;
  tools::search_memory total(f.v, lim);
  total.reset(prompt);
  CHECK(fixture::search(total, f.find, f.end, {f.a}).size() == 30);
  total.feed(f.find);
  total.feed(f.a);
  r = total.feed(f.end);
  REQUIRE(r.kind == tool_reply_kind::invalid);
  CHECK(std::string(r.why).find("observation limit reached") != std::string::npos);
  CHECK(total.observations() == 30);
}

TEST_CASE("search_memory: long random token streams never crash and match a plain grep") {
  fixture f;
  tools::search_memory_limits lim;
  lim.max_memory = 4000;
  lim.max_query = 8;
  lim.max_observation = 3000;
  lim.max_observations = 40000;  // reached by some episodes
  tools::search_memory m(f.v, lim);
  rng g(11);
  std::int64_t searches = 0, invalids = 0;
  for (int episode = 0; episode < 40; ++episode) {
    std::vector<token> prompt;
    for (int i = 0, n = static_cast<int>(g.uniform_int(0, 60)); i < n; ++i) {
      prompt.push_back(static_cast<token>(g.uniform_int(4, f.v.size() - 1)));  // data tokens and newlines
      if (g.uniform() < 0.2f) {
        prompt.push_back(f.nl);
      }
    }
    m.reset(prompt);
    std::vector<token> mirror = prompt;  // what the memory should hold
    std::vector<token> query;
    bool pending = false;
    for (int step = 0; step < 3000; ++step) {
      // Mostly data, some newlines and commands, and now and then a token the tool must refuse.
      auto const u = g.uniform();
      token t = u < 0.002f   ? static_cast<token>(g.uniform_int(-2, f.v.size() + 2))
                : u < 0.004f ? (pending ? f.find : f.end)
                : u < (pending ? (query.empty() ? 0.0f : 0.3f) : 0.1f) ? (pending ? f.end : f.find)
                : u < 0.4f                                             ? f.nl
                           : static_cast<token>(g.uniform_int(4, f.v.size() - 1));
      auto const r = m.feed(t);
      CHECK(static_cast<std::int64_t>(m.memory().size()) <= lim.max_memory);
      CHECK(static_cast<std::int64_t>(r.observation.size()) <= lim.max_observation);
      CHECK(m.observations() <= lim.max_observations);
      if (r.kind == tool_reply_kind::invalid) {
        ++invalids;
        CHECK_FALSE(r.why.empty());
        break;
      }
      if (t == f.find) {
        CHECK(r.kind == tool_reply_kind::pending);
        pending = true;
        query.clear();
      } else if (pending && t != f.end) {
        CHECK(r.kind == tool_reply_kind::pending);
        query.push_back(t);
      } else if (t == f.end) {
        REQUIRE(r.kind == tool_reply_kind::observe);
        ++searches;
        pending = false;
        auto const want = tools::search_memory::grep(mirror, query, f.nl);
        CHECK(std::vector<token>(r.observation.begin(), r.observation.end()) == want);
      } else {
        CHECK(r.kind == tool_reply_kind::stored);
        mirror.push_back(t);
      }
      CHECK(m.pending() == pending);
    }
    CHECK(std::vector<token>(m.memory().begin(), m.memory().end()) == mirror);
  }
  CHECK(searches > 100);
  CHECK(invalids > 10);
}
