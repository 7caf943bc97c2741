// Length sweeps: bookkeeping on a real (untrained) model and task, a trained
// model's exact answers, rollouts through a runner, the paper's summary form,
// and the report files.
#include <ssmlen/core/rng.hpp>
#include <ssmlen/eval/report.hpp>
#include <ssmlen/models/checkpoint.hpp>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/tasks/registry.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

using namespace ssmlen;

TEST_CASE("length_sweep: per-size results from rollouts of an untrained model on addition") {
  auto const task = tasks::make_task("addition");
  models::mamba_config c;
  c.vocab = task.vocab().size();
  c.d_model = 16;
  c.n_layers = 1;
  c.d_state = 4;
  models::mamba_lm<float> m(c, 1);
  eval::sweep_config cfg;
  cfg.sizes = {1, 3};
  cfg.per_size = 5;
  cfg.teacher_forced = 2;
  cfg.train_n = 2;
  int seen = 0;
  auto const r = eval::length_sweep(backends::host{}, m, task, cfg, [&](eval::size_result const&) { ++seen; });
  CHECK(seen == 2);
  REQUIRE(r.results.size() == 2);
  for (auto const& s : r.results) {
    CHECK(s.episodes == 5);
    CHECK(s.exact_match == doctest::Approx(s.correct / 5.0));
    CHECK(s.exact_match < 1.0);  // an untrained model does not add
    REQUIRE(s.token_accuracy.has_value());
    CHECK(*s.token_accuracy >= 0.0);
    CHECK(*s.token_accuracy < 1.0);
    CHECK(s.mean_tokens > 0);
    CHECK(s.longest_tokens >= s.mean_tokens);
    CHECK(s.longest_tokens < s.mean_tokens * 5);  // a mean of 5 episodes is at least a fifth of the longest
    int ends = 0;
    for (auto const& [k, v] : s.ends) {
      ends += v;
    }
    CHECK(ends == 5);
    REQUIRE(!s.failures.empty());
    CHECK(s.failures.front().divergence >= 0);  // it leaves the expert trace somewhere
    CHECK(!s.failures.front().expected.empty());
  }
  CHECK(r.results[1].mean_expert_tokens > r.results[0].mean_expert_tokens);
  auto const j = r.to_json();
  CHECK(j["task"] == "addition");
  CHECK(j["results"][0]["n"] == 1);
  CHECK(j["results"][0].contains("failures"));
  // Same seed, same instances, same model: the same result.
  auto const again = eval::length_sweep(backends::host{}, m, task, cfg);
  CHECK(again.to_json()["results"][1]["exact_match"] == j["results"][1]["exact_match"]);
  CHECK(again.results[1].mean_tokens == r.results[1].mean_tokens);
}

TEST_CASE("length_sweep: the trained headline model adds exactly; a runner takes over the rollouts only") {
  auto const task = tasks::make_task("addition");
  auto const trained =
      models::load_model(std::filesystem::path(SSMLEN_TEST_DATA_DIR) / "addition_headline_seed3.safetensors");
  eval::sweep_config cfg;
  cfg.sizes = {7, 40};  // past the training sizes (<= 5 digits)
  cfg.per_size = 4;
  cfg.teacher_forced = 2;
  auto const own = eval::length_sweep(backends::host{}, trained, task, cfg);
  for (auto const& s : own.results) {
    CAPTURE(s.n);
    CHECK(s.correct == 4);
    CHECK(s.token_accuracy == 1.0);
  }
  // A runner that rolls out an untrained model instead: the rollouts are its, the teacher forcing stays the
  // trained model's.
  models::mamba_config c = trained.config();
  models::mamba_lm<float> untrained(c, 5);
  int calls = 0;
  eval::episode_runner const runner = [&](std::span<const agent::episode_input> episodes, tasks::any_task const& t,
                                          agent::rollout_config const& rc) {
    ++calls;
    return agent::rollout(
        backends::host{}, untrained, episodes, [&](std::size_t) { return t.make_tool(); }, t.markers(), rc);
  };
  auto const swapped = eval::length_sweep(backends::host{}, trained, task, cfg, {}, runner);
  CHECK(calls == 2);
  for (auto const& s : swapped.results) {
    CAPTURE(s.n);
    CHECK(s.correct == 0);
    CHECK(s.token_accuracy == 1.0);
  }
}

TEST_CASE("sweep_result: the n->m (p%) summary and the report files") {
  eval::sweep_result s;
  s.task = "addition";
  s.train_n = 5;
  for (auto [n, p] : {std::pair{5, 1.0}, {100, 1.0}, {1000, 0.5}, {2000, 0.03}}) {
    eval::size_result r;
    r.n = n;
    r.episodes = 64;
    r.exact_match = p;
    s.results.push_back(r);
  }
  CHECK(s.summary() == "5->1000 (50%)");
  s.results[2].exact_match = 255.0 / 256;  // 99.61 %: cut to one decimal, never rounded up to 100
  CHECK(s.summary() == "5->1000 (99.6%)");
  s.results[2].exact_match = 0.9999;
  CHECK(s.summary() == "5->1000 (99.9%)");
  s.results[2].exact_match = 0.5;
  // Token accuracy is reported only where teacher forcing scored something: never as a made-up 0 %.
  s.results[0].token_accuracy = 0.75;
  auto const j = s.to_json();
  CHECK(j["results"][0]["token_accuracy"] == 0.75);
  CHECK(j["results"][1]["token_accuracy"].is_null());
  s.results[0].longest_tokens = 1234;
  CHECK(s.to_csv().find("\n5,64,1.000000,0.750000,") != std::string::npos);
  CHECK(s.to_csv().find(",1234\n") != std::string::npos);
  CHECK(j["results"][0]["longest_tokens"] == 0);  // read before the longest was set
  CHECK(eval::table_row(s.results[0]).find(" 1234 ") != std::string::npos);
  CHECK(s.to_csv().find("\n100,64,1.000000,,") != std::string::npos);
  CHECK(eval::table_row(s.results[0]).find("75.000%") != std::string::npos);
  CHECK(eval::table_row(s.results[1]).find(" - ") != std::string::npos);
  // How failures ended: <EOS> with a wrong output, a refused action, the token cap; nothing when all are right.
  s.results[0].correct = 64;
  s.results[0].ends = {{"eos", 64}};
  CHECK(eval::failure_ends(s.results[0]) == "0");
  s.results[2].correct = 53;
  s.results[2].ends = {{"eos", 63}, {"token_cap", 1}};
  CHECK(eval::failure_ends(s.results[2]) == "11: 10 wrong, 1 token cap");
  s.results[3].correct = 2;
  s.results[3].ends = {{"eos", 2}, {"invalid", 40}, {"token_cap", 22}};
  CHECK(eval::failure_ends(s.results[3]) == "62: 40 invalid, 22 token cap");
  CHECK(eval::table_row(s.results[2]).ends_with("  11: 10 wrong, 1 token cap"));
  auto const dir = std::filesystem::temp_directory_path() / ("ssmlen_sweep_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto const files = eval::write_reports(s, dir / "sweep");
  CHECK(files.size() >= 3);
  std::ifstream svg(dir / "sweep.svg");
  std::string const text((std::istreambuf_iterator<char>(svg)), {});
  CHECK(text.find("<svg") == 0);
  CHECK(text.find("<circle") != std::string::npos);
  std::ifstream csv(dir / "sweep.csv");
  std::string header;
  std::getline(csv, header);
  CHECK(header.rfind("n,episodes,exact_match", 0) == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("length_sweep: teacher forcing scores a long trace slice by slice, exactly as in one forward") {
  auto const task = tasks::make_task("addition");
  models::mamba_config c;
  c.vocab = task.vocab().size();
  c.d_model = 16;
  c.n_layers = 2;
  c.d_state = 4;
  models::mamba_lm<double> m(c, 3);
  rng g(5);
  std::vector<tools::trace> traces;
  for (int n : {3, 12, 30}) {
    traces.push_back(task.sample(g, n).expert);
  }
  std::vector<tools::trace const*> ptrs;
  std::int64_t right = 0, total = 0;  // the oracle: one forward over each whole trace
  for (auto const& t : traces) {
    ptrs.push_back(&t);
    auto const mask = t.loss_mask();
    std::int64_t const len = static_cast<std::int64_t>(t.size()) - 1;
    std::vector<double> logits(static_cast<std::size_t>(len * c.vocab));
    models::mamba_lm<double>::cache k;
    m.forward(backends::host{}, std::span<const std::int32_t>(t.tokens.data(), static_cast<std::size_t>(len)),
              sequences::from_lengths(std::vector<std::int64_t>{len}), logits.data(), k);
    for (std::int64_t r = 0; r < len; ++r) {
      if (mask[static_cast<std::size_t>(r + 1)] != 0) {
        auto const* row = logits.data() + r * c.vocab;
        ++total;
        right += std::max_element(row, row + c.vocab) - row == t.tokens[static_cast<std::size_t>(r + 1)];
      }
    }
  }
  REQUIRE(total > 0);
  double const whole = static_cast<double>(right) / static_cast<double>(total);
  CHECK(eval::teacher_forced_accuracy(backends::host{}, m, ptrs) == whole);
  CHECK(eval::teacher_forced_accuracy(backends::host{}, m, ptrs, 13) == whole);  // slices end mid-trace
  CHECK(eval::teacher_forced_accuracy(backends::host{}, m, ptrs, 1) == whole);
}
