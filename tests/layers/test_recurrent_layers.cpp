// The LSTM and GRU layers (the paper's recurrent baselines): backward against central finite differences in double
// precision through initial and final states, the recurrent step against forward, and the cells against their
// closed forms on hand-picked values.
#include <ssmlen/layers/gru.hpp>
#include <ssmlen/layers/lstm.hpp>
#include <ssmlen/layers/recurrent.hpp>

#include <doctest/doctest.h>

#include <cmath>

#include "../support/gradcheck.hpp"

using namespace ssmlen;
using testing::fill_normal;
using testing::weighted_sum;

namespace {
backends::host const be;
}  // namespace

TEST_CASE_TEMPLATE("recurrent layer: gradients of weights, biases, input and initial state, through the final state",
                   Cell, layers::lstm_cell, layers::gru_cell) {
  rng g(11);
  auto const seqs = sequences::from_lengths(std::vector<std::int64_t>{6, 1, 0, 9});
  std::int64_t const in = 5, h = 3, rows = seqs.tokens();
  layers::recurrent<double, Cell> rnn(in, h);
  rnn.init_default(g);
  for (auto* p :
       {&rnn.ih.weight, &rnn.hh.weight}) {  // larger weights than the default: saturating gates are checked too
    for (auto& v : p->value) {
      v *= 3;
    }
  }
  std::int64_t const st = seqs.count() * rnn.state_size();
  std::vector<double> x(rows * in), w(rows * h), y(rows * h), dx(rows * in);
  std::vector<double> init(st), fin(st), wf(st), dinit(st);
  fill_normal(x, g);
  fill_normal(w, g);
  fill_normal(init, g, 0.5);
  fill_normal(wf, g);
  typename layers::recurrent<double, Cell>::cache k;
  auto loss = [&] {
    rnn.forward(be, seqs, x.data(), y.data(), k, init.data(), fin.data());
    return weighted_sum(y.data(), w) + weighted_sum(fin.data(), wf);
  };
  loss();
  for (auto* p : {&rnn.ih.weight, &rnn.hh.weight, &rnn.ih.bias, &rnn.hh.bias}) {
    p->zero_grad();
  }
  rnn.backward(be, seqs, x.data(), w.data(), dx.data(), false, k, init.data(), wf.data(), dinit.data());
  testing::check_gradients(loss,
                           {{"w_ih", rnn.ih.weight.value.data(), rnn.ih.weight.grad.data(), rnn.ih.weight.value.size()},
                            {"w_hh", rnn.hh.weight.value.data(), rnn.hh.weight.grad.data(), rnn.hh.weight.value.size()},
                            {"b_ih", rnn.ih.bias.value.data(), rnn.ih.bias.grad.data(), rnn.ih.bias.value.size()},
                            {"b_hh", rnn.hh.bias.value.data(), rnn.hh.bias.grad.data(), rnn.hh.bias.value.size()},
                            {"x", x.data(), dx.data(), rows * in},
                            {"init", init.data(), dinit.data(), st}});
  // The empty sequence passes its initial state through unchanged, and its gradient back.
  std::int64_t const s2 = 2 * rnn.state_size();
  for (std::int64_t i = 0; i < rnn.state_size(); ++i) {
    CHECK(fin[s2 + i] == init[s2 + i]);
    CHECK(dinit[s2 + i] == wf[s2 + i]);
  }
}

TEST_CASE_TEMPLATE("recurrent layer: step_row token by token equals forward", Cell, layers::lstm_cell,
                   layers::gru_cell) {
  rng g(12);
  auto const seqs = sequences::from_lengths(std::vector<std::int64_t>{23, 40});
  std::int64_t const in = 7, h = 9;
  layers::recurrent<double, Cell> rnn(in, h);
  rnn.init_default(g);
  std::vector<double> x(seqs.tokens() * in), y(seqs.tokens() * h), init(2 * rnn.state_size()),
      fin(2 * rnn.state_size());
  fill_normal(x, g);
  fill_normal(init, g, 0.5);
  typename layers::recurrent<double, Cell>::cache k;
  rnn.forward(be, seqs, x.data(), y.data(), k, init.data(), fin.data());
  std::vector<double> scratch(rnn.step_scratch_size()), out(h);
  double worst = 0;
  for (std::int64_t s = 0; s < 2; ++s) {
    std::vector<double> state(init.begin() + s * rnn.state_size(), init.begin() + (s + 1) * rnn.state_size());
    for (std::int64_t t = seqs.begin(s); t < seqs.end(s); ++t) {
      rnn.step_row(x.data() + t * in, out.data(), state.data(), scratch.data());
      for (std::int64_t j = 0; j < h; ++j) {
        worst = std::max(worst, std::abs(out[j] - y[t * h + j]));
      }
    }
    for (std::int64_t j = 0; j < rnn.state_size(); ++j) {
      worst = std::max(worst, std::abs(state[j] - fin[s * rnn.state_size() + j]));
    }
  }
  CHECK(worst < 1e-12);
}

TEST_CASE("lstm_cell and gru_cell: the closed forms on one unit") {
  auto sig = [](double v) { return 1 / (1 + std::exp(-v)); };
  // One hidden unit: gx and gh in gate order, previous state (h, c).
  double const gx[4] = {0.3, -0.2, 0.5, 1.1}, gh[4] = {0.1, 0.4, -0.7, 0.2}, prev[2] = {0.6, -0.9};
  double next[2], saved[5];
  layers::lstm_cell::forward(1, gx, gh, prev, next, saved);
  double const c = sig(0.2) * -0.9 + sig(0.4) * std::tanh(-0.2);
  CHECK(next[1] == doctest::Approx(c).epsilon(1e-14));
  CHECK(next[0] == doctest::Approx(sig(1.3) * std::tanh(c)).epsilon(1e-14));
  double gnext[1], gsaved[4];
  layers::gru_cell::forward(1, gx, gh, prev, gnext, gsaved);
  double const r = sig(0.4), z = sig(0.2), n = std::tanh(0.5 + r * -0.7);
  CHECK(gnext[0] == doctest::Approx((1 - z) * n + z * 0.6).epsilon(1e-14));
}

TEST_CASE("recurrent layer: invalid sizes name the offending field") {
  CHECK_THROWS_WITH_AS((layers::recurrent<float, layers::lstm_cell>(0, 4)), doctest::Contains("lstm input size = 0"),
                       ssmlen::error);
  CHECK_THROWS_WITH_AS((layers::recurrent<float, layers::gru_cell>(3, -2)), doctest::Contains("gru hidden size = -2"),
                       ssmlen::error);
}
