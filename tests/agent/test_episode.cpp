#include <ssmlen/agent/episode.hpp>
#include <ssmlen/tasks/addition.hpp>
#include <ssmlen/tools/pointer_memory.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

using namespace ssmlen;

namespace {

// Emits a fixed script (then repeats its last token) and records everything it observes.
struct scripted {
  explicit scripted(std::vector<tools::token> s) : script(std::move(s)) {}
  std::vector<tools::token> script;
  std::size_t next = 0;
  std::vector<tools::token> seen;
  int resets = 0;
  void reset() {
    next = 0;
    seen.clear();
    ++resets;
  }
  void observe(tools::token t) { seen.push_back(t); }
  tools::token act() { return script[std::min(next++, script.size() - 1)]; }
};
static_assert(agent::policy<scripted>);

// A tool that counts what it is fed and stores everything.
struct counting_tool {
  int fed = 0;
  void reset(std::span<const tools::token>) { fed = 0; }
  tools::tool_reply feed(tools::token) {
    ++fed;
    return {tools::tool_reply_kind::stored};
  }
};

}  // namespace

TEST_CASE("run_episode: roles come from the tool's replies and [ANS]; the policy observes every token") {
  tasks::addition const task;
  auto const& v = task.vocab();
  auto const x = task.instance_from_strings("3", "4");
  auto tool = task.make_tool();
  scripted p{{v.id("[p1.new]"), v.id("[p1.read]"), v.id("9"), v.id("[ANS]"), v.id("7"), v.id("<EOS>")}};
  auto const r = agent::run_episode(p, tool, task.prompt(x), agent::episode_markers::from(v), 100);
  REQUIRE(r.end == agent::end_reason::eos);
  using tools::role;
  std::vector<role> const want{role::input,   role::input,   role::input,       role::input,
                               role::command, role::command, role::observation, role::thought,
                               role::thought, role::output,  role::output};
  CHECK(r.trace.roles == want);
  CHECK(r.trace.tokens[6] == v.id("3"));  // the read of position 0
  CHECK(r.output == std::vector<tools::token>{v.id("7")});
  CHECK(r.model_tokens == 6);
  CHECK(p.resets == 1);
  // The policy saw the whole trace but its own final <EOS>.
  CHECK(p.seen == std::vector<tools::token>(r.trace.tokens.begin(), r.trace.tokens.end() - 1));
}

TEST_CASE("run_episode: an invalid action ends the episode with the tool's reason, without the refused token") {
  tasks::addition const task;
  auto const& v = task.vocab();
  auto const x = task.instance_from_strings("12", "4");
  auto tool = task.make_tool();
  scripted p{{v.id("5"), v.id("[p2.read]")}};
  auto const r = agent::run_episode(p, tool, task.prompt(x), agent::episode_markers::from(v), 100);
  CHECK(r.end == agent::end_reason::invalid);
  CHECK(r.why.find("[p2.new]") != std::string::npos);
  CHECK(r.trace.size() == 5 + 1);
  CHECK(r.trace.roles.back() == tools::role::thought);
  CHECK_FALSE(r.finished());
  scripted pad{{tools::vocab::pad}};
  CHECK(agent::run_episode(pad, tool, task.prompt(x), agent::episode_markers::from(v), 100).end ==
        agent::end_reason::invalid);
}

TEST_CASE("run_episode: the token cap counts model and observation tokens after the prompt") {
  tasks::addition const task;
  auto const& v = task.vocab();
  auto const x = task.instance_from_strings("1", "2");
  auto tool = task.make_tool();
  scripted p{{v.id("[p1.new]"), v.id("[p1.read]")}};  // reads forever
  auto const r = agent::run_episode(p, tool, task.prompt(x), agent::episode_markers::from(v), 9);
  CHECK(r.end == agent::end_reason::token_cap);
  CHECK(r.trace.size() - 4 >= 9);
  CHECK(r.trace.size() - 4 <= 10);  // a read's observation may finish past the cap
  CHECK_THROWS_AS((void)agent::run_episode(p, tool, task.prompt(x), agent::episode_markers::from(v), 0), ssmlen::error);
}

TEST_CASE("run_episode: without [ANS] every stored token is an output; <EOS> is not fed to the tool") {
  tools::vocab const v{"x", "y", "<EOS>"};
  auto const m = agent::episode_markers::from(v);
  CHECK(m.answer == -1);
  counting_tool tool;
  scripted p{{v.id("y"), v.id("x"), v.id("<EOS>")}};
  std::vector<tools::token> const prompt{v.id("x")};
  auto const r = agent::run_episode(p, tool, prompt, m, 50);
  CHECK(r.output == std::vector<tools::token>{v.id("y"), v.id("x")});
  CHECK(tool.fed == 2);
  CHECK(r.trace.roles.back() == tools::role::output);
  CHECK_THROWS_AS((void)agent::episode_markers::from(tools::vocab{"x"}), ssmlen::error);  // no <EOS>
}
