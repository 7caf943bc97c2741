#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/registry.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <string>

using namespace ssmlen;

TEST_CASE("registry: the addition family is registered; unknown names throw and list the known ones") {
  auto const names = tasks::task_names();
  for (auto const* want :
       {"addition", "addition_direct", "addition_reversed", "addition_calculator", "addition_notool"}) {
    CHECK(std::find(names.begin(), names.end(), want) != names.end());
  }
  auto sorted = names;
  std::sort(sorted.begin(), sorted.end());
  CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());  // names are unique
  try {
    (void)tasks::make_task("adition");
    FAIL("make_task accepted an unknown name");
  } catch (ssmlen::error const& e) {
    std::string const what = e.what();
    CHECK(what.find("adition") != std::string::npos);
    CHECK(what.find("addition_calculator") != std::string::npos);
  }
}

TEST_CASE("registry: every task's expert episodes replay through its tool and pass its check") {
  for (auto const& entry : tasks::task_entries()) {
    CAPTURE(entry.name);
    auto const task = entry.make();
    CHECK(task.name() == entry.name);
    CHECK(task.vocab().id("<PAD>") == 0);
    rng g(5);
    for (int i = 0; i < 8; ++i) {
      auto const spec = i % 2 ? task.sample(g, 4) : task.sample_exact(g, 3);
      REQUIRE(spec.expert.size() > spec.prompt.size());
      CHECK(std::equal(spec.prompt.begin(), spec.prompt.end(), spec.expert.tokens.begin()));
      agent::replay_policy p(spec.expert);
      auto const r = tasks::run_task_episode(p, task, spec, static_cast<std::int64_t>(spec.expert.size()) + 10);
      REQUIRE(r.end == agent::end_reason::eos);
      CHECK(r.trace == spec.expert);
      CHECK(tasks::solved(r, spec));
      CHECK(spec.check(r.output));
      CHECK(!spec.describe.is_null());
    }
    // The same seed gives the same instance.
    rng a(77), b(77);
    CHECK(task.sample(a, 5).expert == task.sample(b, 5).expert);
  }
}

TEST_CASE("registry: operands from strings, and an episode spec outlives its task") {
  tasks::episode_spec spec;
  {
    auto const task = tasks::make_task("addition");
    REQUIRE(task.has_operands());
    spec = task.from_operands("57", "68");
    CHECK(spec.describe["sum"] == "125");
    CHECK_THROWS_AS((void)task.from_operands("5x", "1"), ssmlen::error);
  }
  tasks::addition const add;
  std::vector<tools::token> const right{add.vocab().id("1"), add.vocab().id("2"), add.vocab().id("5")};
  std::vector<tools::token> const wrong{add.vocab().id("1"), add.vocab().id("2"), add.vocab().id("6")};
  CHECK(spec.check(right));
  CHECK_FALSE(spec.check(wrong));
}
