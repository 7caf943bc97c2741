// The recurrent baselines as language models (LSTM and GRU): gradients against finite differences (double), step()
// fed token by token against forward(), a forward in slices carrying its state against one forward, determinism
// across thread counts, and a short training run that must learn.
#include <ssmlen/models/recurrent_lm.hpp>
#include <ssmlen/tasks/registry.hpp>
#include <ssmlen/train/task_batches.hpp>
#include <ssmlen/train/trainer.hpp>

#include <doctest/doctest.h>

#include <cstring>
#include <omp.h>
#include <string>

#include "../support/gradcheck.hpp"
#include "../support/model_testing.hpp"

using namespace ssmlen;

namespace {
backends::host const be;

models::recurrent_config tiny_config() { return {.vocab = 11, .hidden = 5, .n_layers = 2}; }

using testing::random_tokens;
}  // namespace

TEST_CASE("recurrent_lm: parameter names and counts follow PyTorch's nn.LSTM and nn.GRU") {
  models::lstm_lm<float> lstm(tiny_config(), 0);
  auto const names = lstm.named_params();
  REQUIRE(names.size() == 1 + 4 * 2 + 2);
  CHECK(names[0].name == "embedding.weight");
  CHECK(names[1].name == "rnn.weight_ih_l0");
  CHECK(names[1].file_shape == extents{20, 5});
  CHECK(names[6].name == "rnn.weight_hh_l1");
  CHECK(names[8].name == "rnn.bias_hh_l1");
  CHECK(names.back().name == "lm_head.bias");
  std::int64_t const v = 11, h = 5;
  CHECK(lstm.n_params() == v * h + 2 * (4 * h * h * 2 + 8 * h) + v * h + v);
  models::gru_lm<float> gru(tiny_config(), 0);
  CHECK(gru.n_params() == v * h + 2 * (3 * h * h * 2 + 6 * h) + v * h + v);
  CHECK(gru.make_state(3).layers[1].size() == 3 * h);  // h only; the LSTM's state is (h, c)
  CHECK(lstm.make_state(3).layers[1].size() == 3 * 2 * h);
}

TEST_CASE("recurrent_lm: invalid configurations and states name the offending field") {
  auto c = tiny_config();
  c.hidden = 0;
  CHECK_THROWS_WITH_AS(models::lstm_lm<float>(c, 0), doctest::Contains("hidden = 0"), ssmlen::error);
  c = tiny_config();
  c.n_layers = -1;
  CHECK_THROWS_WITH_AS(models::gru_lm<float>(c, 0), doctest::Contains("n_layers = -1"), ssmlen::error);
  models::lstm_lm<float> m(tiny_config());
  std::vector<std::int32_t> bad{1, 2, 11};
  std::vector<float> logits(3 * 11);
  models::lstm_lm<float>::cache k;
  CHECK_THROWS_WITH_AS(m.forward(be, bad, sequences::uniform(1, 3), logits.data(), k),
                       doctest::Contains("token id = 11"), ssmlen::error);
  std::vector<std::int32_t> const ok{1, 2, 3};
  auto wrong = m.make_state(2);  // two rows for one sequence
  CHECK_THROWS_WITH_AS(m.forward(be, ok, sequences::uniform(1, 3), logits.data(), k, &wrong),
                       doctest::Contains("make_state(1)"), ssmlen::error);
}

TEST_CASE_TEMPLATE("recurrent_lm: gradients of every parameter and the initial states (double)", Cell,
                   layers::lstm_cell, layers::gru_cell) {
  using model = models::recurrent_lm<double, Cell>;
  model m(tiny_config(), 7);
  rng g(8);
  auto const seqs = sequences::from_lengths(std::vector<std::int64_t>{5, 9, 2});
  auto const tokens = random_tokens(g, seqs.tokens(), 11);
  std::vector<double> w(seqs.tokens() * 11), logits(w.size());
  testing::fill_normal(w, g);
  auto init = m.make_state(3), fin = m.make_state(3), wf = m.make_state(3), dinit = m.make_state(3);
  for (std::size_t i = 0; i < init.layers.size(); ++i) {
    testing::fill_normal(init.layers[i], g, 0.5);
    testing::fill_normal(wf.layers[i], g);
  }
  typename model::cache k;
  auto loss = [&] {
    m.forward(be, tokens, seqs, logits.data(), k, &init, &fin);
    double s = testing::weighted_sum(logits.data(), w);
    for (std::size_t i = 0; i < fin.layers.size(); ++i) {
      s += testing::weighted_sum(fin.layers[i].data(), {wf.layers[i].begin(), wf.layers[i].end()});
    }
    return s;
  };
  loss();
  m.zero_grad();
  m.backward(be, w.data(), k, &init, &wf, &dinit);
  auto targets = testing::parameter_targets(m);
  for (std::size_t i = 0; i < init.layers.size(); ++i) {
    targets.push_back({"init", init.layers[i].data(), dinit.layers[i].data(), init.layers[i].size()});
  }
  testing::check_gradients(loss, targets, 1e-6, /*max_entries=*/24);
}

namespace {
template <class T, class Cell>
double step_vs_forward(std::uint64_t seed) {
  auto cfg = tiny_config();
  cfg.hidden = 16;
  return testing::step_vs_forward(models::recurrent_lm<T, Cell>(cfg, seed), {37, 70, 5}, seed + 1);
}
}  // namespace

TEST_CASE("recurrent_lm: step() token by token equals forward()") {
  CHECK(step_vs_forward<double, layers::lstm_cell>(1) < 1e-12);
  CHECK(step_vs_forward<double, layers::gru_cell>(2) < 1e-12);
  CHECK(step_vs_forward<float, layers::lstm_cell>(3) < 1e-5);
  CHECK(step_vs_forward<float, layers::gru_cell>(4) < 1e-5);
}

TEST_CASE_TEMPLATE("recurrent_lm: a forward in slices, carrying the state, equals one forward", Cell, layers::lstm_cell,
                   layers::gru_cell) {
  using model = models::recurrent_lm<double, Cell>;
  model m(tiny_config(), 3);
  rng g(4);
  auto const tokens = random_tokens(g, 50, 11);
  std::vector<double> whole(50 * 11), part(50 * 11);
  typename model::cache k;
  auto fin = m.make_state(1);
  m.forward(be, tokens, sequences::uniform(1, 50), whole.data(), k, nullptr, &fin);
  auto carried = m.make_state(1), next = m.make_state(1);
  for (std::int64_t from : {0, 17, 30}) {  // slices of 17, 13 and 20 tokens
    std::int64_t const len = from == 30 ? 20 : (from == 0 ? 17 : 13);
    m.forward(be, std::span<const std::int32_t>(tokens.data() + from, static_cast<std::size_t>(len)),
              sequences::uniform(1, len), part.data() + from * 11, k, from == 0 ? nullptr : &carried, &next);
    std::swap(carried, next);
  }
  for (std::size_t i = 0; i < whole.size(); ++i) {
    CHECK(part[i] == doctest::Approx(whole[i]).epsilon(1e-13));
  }
  for (std::size_t l = 0; l < fin.layers.size(); ++l) {
    for (std::int64_t i = 0; i < fin.layers[l].size(); ++i) {
      CHECK(carried.layers[l][i] == doctest::Approx(fin.layers[l][i]).epsilon(1e-13));
    }
  }
}

TEST_CASE("recurrent_lm: forward and backward are bit-identical across runs and on 1 vs 2 threads") {
  testing::check_bit_identical_across_threads(
      [] { return models::lstm_lm<float>({.vocab = 11, .hidden = 32, .n_layers = 2}, 3); },
      sequences::from_lengths(std::vector<std::int64_t>{300, 17, 129, 64, 1}));
}

TEST_CASE_TEMPLATE("recurrent_lm: the trainer takes it, and a short run on 1-digit additions learns", Cell,
                   layers::lstm_cell, layers::gru_cell) {
  auto const task = tasks::make_task("addition");
  models::recurrent_lm<float, Cell> m({.vocab = task.vocab().size(), .hidden = 32, .n_layers = 1}, 1);
  auto const [first, last] = testing::short_training_losses(m, 1e-2);
  MESSAGE(std::string(Cell::name), ": loss ", first, " -> ", last);
  CHECK(last < 0.25 * first);
}
