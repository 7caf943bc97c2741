#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/tasks/addition_ablations.hpp>

#include <doctest/doctest.h>

#include <vector>

#include "../support/task_testing.hpp"

using namespace ssmlen;
using testing::output_of;
using testing::render;
using testing::replay;
using testing::run;
using namespace ssmlen::tasks;

namespace {

// Every ablation: expert traces replay through its tool unchanged and pass check; a changed output fails.
template <class Task>
void check_replays(Task const& task) {
  rng g(31);
  std::vector<addition_instance> cases;
  for (int n : {1, 2, 5, 9, 30}) {
    for (int i = 0; i < 10; ++i) {
      cases.push_back(task.sample(g, n));
    }
  }
  cases.push_back(task.sample_exact(g, 1000));
  cases.push_back(task.instance_from_strings("999", "1"));
  for (auto const& x : cases) {
    auto const expert = task.expert(x);
    auto const r = replay(task, x, expert);
    REQUIRE(r.end == agent::end_reason::eos);
    CHECK(r.trace == expert);
    CHECK(task.check(x, r.output));
    REQUIRE(!r.output.empty());
    auto bad = r.output;
    auto const sum = add_digits(x.a, x.b);
    auto const at = static_cast<std::size_t>(g.uniform_int(0, static_cast<std::int64_t>(bad.size()) - 1));
    bad[at] = bad[at] == addition_tokens::digit(3) ? addition_tokens::digit(4) : addition_tokens::digit(3);
    CHECK_FALSE(task.check(x, bad));
    bad = r.output;
    bad.pop_back();
    CHECK_FALSE(task.check(x, bad));
  }
}

}  // namespace

TEST_CASE("addition_direct: prompt, then the sum most significant digit first, then <EOS>") {
  addition_direct const task;
  auto const x = task.instance_from_strings("57", "68");
  auto const t = task.expert(x);
  std::vector<tools::token> const want_out{addition_tokens::digit(1), addition_tokens::digit(2),
                                           addition_tokens::digit(5), addition_tokens::eos};
  CHECK(std::vector<tools::token>(t.tokens.begin() + 6, t.tokens.end()) == want_out);
  CHECK(std::count(t.roles.begin(), t.roles.end(), tools::role::output) == 4);
  CHECK_FALSE(task.vocab().contains("[ANS]"));
  check_replays(task);
}

TEST_CASE("addition_reversed: the sum least significant digit first") {
  addition_reversed const task;
  auto const x = task.instance_from_strings("57", "68");
  auto const t = task.expert(x);
  std::vector<tools::token> const want_out{addition_tokens::digit(5), addition_tokens::digit(2),
                                           addition_tokens::digit(1), addition_tokens::eos};
  CHECK(std::vector<tools::token>(t.tokens.begin() + 6, t.tokens.end()) == want_out);
  std::vector<tools::token> const msd_first{addition_tokens::digit(1), addition_tokens::digit(2),
                                            addition_tokens::digit(5)};
  CHECK_FALSE(task.check(x, msd_first));
  check_replays(task);
}

TEST_CASE("addition_calculator: one [add] command observes the sum, which the model copies") {
  addition_calculator const task;
  auto const x = task.instance_from_strings("57", "68");
  auto const t = task.expert(x);
  REQUIRE(t.size() == 6 + 1 + 3 + 3 + 1);
  CHECK(t.tokens[6] == task.vocab().id("[add]"));
  CHECK(t.roles[6] == tools::role::command);
  for (std::size_t i = 7; i < 10; ++i) {
    CHECK(t.roles[i] == tools::role::observation);
    CHECK(t.tokens[i] == t.tokens[i + 3]);
    CHECK(t.roles[i + 3] == tools::role::output);
  }
  check_replays(task);
}

TEST_CASE("addition_notool: the addition trace with every command and observation predicted") {
  addition_notool const task;
  addition const with_tool;
  rng g(8);
  for (int i = 0; i < 20; ++i) {
    auto const x = task.sample(g, 8);
    auto const a = task.expert(x), b = with_tool.expert(x);
    CHECK(a.tokens == b.tokens);                  // same tokens ...
    for (std::size_t k = 0; k < a.size(); ++k) {  // ... but nothing is an observation or a command any more
      CHECK((a.roles[k] == tools::role::input) == (b.roles[k] == tools::role::input));
      CHECK(a.roles[k] != tools::role::observation);
      CHECK(a.roles[k] != tools::role::command);
    }
    CHECK(a.loss_mask() != b.loss_mask());
  }
  check_replays(task);
}
