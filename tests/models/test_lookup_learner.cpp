#include <ssmlen/agent/episode.hpp>
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/lookup_learner.hpp>
#include <ssmlen/tasks/addition.hpp>

#include <doctest/doctest.h>

using namespace ssmlen;

static_assert(agent::policy<models::lookup_learner<4>>);

namespace {

template <int W>
bool solves(models::lookup_learner<W>& learner, tasks::addition const& task, tasks::addition_instance const& x) {
  auto tool = task.make_tool();
  auto const expert = task.expert(x);
  auto const r = agent::run_episode(learner, tool, task.prompt(x), agent::episode_markers::from(task.vocab()),
                                    2 * static_cast<std::int64_t>(expert.size()));
  return r.finished() && task.check(x, r.output) && r.trace == expert;
}

}  // namespace

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
