// The Transformer baseline's layers: causal rotary attention over a sliding window and the GELU MLP, backward against
// central finite differences in double precision; the attention's recurrent step (a ring of the last W keys and
// values) and a forward continuing a starting state against one forward over the whole sequence.
#include <ssmlen/layers/attention.hpp>
#include <ssmlen/layers/mlp.hpp>

#include <doctest/doctest.h>

#include <cmath>

#include "../support/gradcheck.hpp"

using namespace ssmlen;
using testing::fill_normal;
using testing::weighted_sum;

namespace {
backends::host const be;
}  // namespace

TEST_CASE("attention: gradients of the projections and the input, windows shorter and longer than the sequences") {
  for (std::int64_t const window : {3, 4, 64}) {
    CAPTURE(window);
    rng g(21);
    auto const seqs = sequences::from_lengths(std::vector<std::int64_t>{6, 1, 0, 9});
    std::int64_t const d = 8, rows = seqs.tokens();
    layers::causal_attention<double> att(d, 2, window);
    att.init_default(g);
    for (auto& v : att.qkv.weight.value) {  // sharper attention than the default: the softmax is exercised
      v *= 3;
    }
    std::vector<double> x(rows * d), w(rows * d), y(rows * d), dx(rows * d);
    std::vector<std::int64_t> const first(4, 0);
    fill_normal(x, g);
    fill_normal(w, g);
    layers::causal_attention<double>::cache k;
    auto loss = [&] {
      att.forward(be, seqs, x.data(), y.data(), k, first);
      return weighted_sum(y.data(), w);
    };
    loss();
    att.qkv.weight.zero_grad();
    att.out.weight.zero_grad();
    att.backward(be, seqs, x.data(), w.data(), dx.data(), false, k);
    testing::check_gradients(loss, {{"qkv", att.qkv.weight.value.data(), att.qkv.weight.grad.data(), 3 * d * d},
                                    {"out", att.out.weight.value.data(), att.out.weight.grad.data(), d * d},
                                    {"x", x.data(), dx.data(), rows * d}});
  }
}

TEST_CASE("mlp: gradients of both layers and the input") {
  rng g(22);
  layers::mlp<double> ff(5, 7);
  ff.init_default(g);
  std::int64_t const rows = 6;
  std::vector<double> x(rows * 5), w(rows * 5), y(rows * 5), dx(rows * 5);
  fill_normal(x, g, 2.0);
  fill_normal(w, g);
  layers::mlp<double>::cache k;
  auto loss = [&] {
    ff.forward(be, x.data(), y.data(), k, rows);
    return weighted_sum(y.data(), w);
  };
  loss();
  for (auto* p : {&ff.fc1.weight, &ff.fc1.bias, &ff.fc2.weight, &ff.fc2.bias}) {
    p->zero_grad();
  }
  ff.backward(be, x.data(), w.data(), dx.data(), false, k, rows);
  testing::check_gradients(loss, {{"fc1.weight", ff.fc1.weight.value.data(), ff.fc1.weight.grad.data(), 35},
                                  {"fc1.bias", ff.fc1.bias.value.data(), ff.fc1.bias.grad.data(), 7},
                                  {"fc2.weight", ff.fc2.weight.value.data(), ff.fc2.weight.grad.data(), 35},
                                  {"fc2.bias", ff.fc2.bias.value.data(), ff.fc2.bias.grad.data(), 5},
                                  {"x", x.data(), dx.data(), rows * 5}});
  double const v = 0.7, h = 1e-6;  // GELU's slope against its own central difference
  CHECK(layers::mlp<double>::gelu_slope(v) ==
        doctest::Approx((layers::mlp<double>::gelu(v + h) - layers::mlp<double>::gelu(v - h)) / (2 * h)).epsilon(1e-8));
}

TEST_CASE("attention: step_row token by token, and a forward continuing a state, equal one forward") {
  rng g(23);
  std::int64_t const d = 8, len = 30, window = 7;
  layers::causal_attention<double> att(d, 2, window);
  att.init_default(g);
  std::vector<double> x(len * d), y(len * d);
  fill_normal(x, g);
  layers::causal_attention<double>::cache k;
  std::vector<std::int64_t> const zero{0};
  att.forward(be, sequences::uniform(1, len), x.data(), y.data(), k, zero);

  auto state = att.make_state(1);
  std::vector<double> scratch(att.step_scratch_size()), out(d);
  double worst = 0;
  for (std::int64_t t = 0; t < len; ++t) {
    att.step_row(x.data() + t * d, out.data(), t, state.k.data(), state.v.data(), scratch.data());
    for (std::int64_t j = 0; j < d; ++j) {
      worst = std::max(worst, std::abs(out[j] - y[t * d + j]));
    }
  }
  CHECK(worst < 1e-12);

  // The same sequence in slices of 11, 2 and 17 tokens, each continuing the state the last one returned.
  auto carried = att.make_state(1), next = att.make_state(1);
  std::vector<double> part(len * d);
  std::int64_t from = 0;
  for (std::int64_t const n : {11, 2, 17}) {
    std::vector<std::int64_t> const first{from};
    att.forward(be, sequences::uniform(1, n), x.data() + from * d, part.data() + from * d, k, first,
                from == 0 ? nullptr : &carried, &next);
    std::swap(carried, next);
    from += n;
  }
  worst = 0;
  for (std::int64_t i = 0; i < len * d; ++i) {
    worst = std::max(worst, std::abs(part[i] - y[i]));
  }
  CHECK(worst < 1e-12);
  for (std::int64_t i = 0; i < window * d; ++i) {  // the rings agree slot for slot
    CHECK(carried.k[i] == doctest::Approx(state.k[i]).epsilon(1e-12));
    CHECK(carried.v[i] == doctest::Approx(state.v[i]).epsilon(1e-12));
  }
}

TEST_CASE("attention: invalid shapes and positions name the offending field") {
  CHECK_THROWS_WITH_AS(layers::causal_attention<float>(10, 3, 8), doctest::Contains("attention heads = 3"),
                       ssmlen::error);
  CHECK_THROWS_WITH_AS(layers::causal_attention<float>(6, 2, 8), doctest::Contains("attention head size = 3"),
                       ssmlen::error);
  CHECK_THROWS_WITH_AS(layers::causal_attention<float>(8, 2, 0), doctest::Contains("attention window = 0"),
                       ssmlen::error);
  layers::causal_attention<float> att(8, 2, 4);
  std::vector<float> x(8 * 2), y(8 * 2);
  layers::causal_attention<float>::cache k;
  std::vector<std::int64_t> const first{5};
  CHECK_THROWS_WITH_AS(att.forward(be, sequences::uniform(1, 2), x.data(), y.data(), k, first),
                       doctest::Contains("continue a starting state"), ssmlen::error);
}
