// The Transformer baseline as a language model: gradients against finite differences (double), step() fed token by
// token against forward(), a forward in slices carrying its window against one forward, and refusals of what it
// does not do (gradients through states).
#include <ssmlen/models/transformer_lm.hpp>
#include <ssmlen/tasks/registry.hpp>
#include <ssmlen/train/task_batches.hpp>
#include <ssmlen/train/trainer.hpp>

#include <doctest/doctest.h>

#include "../support/gradcheck.hpp"
#include "../support/model_testing.hpp"

using namespace ssmlen;

namespace {
backends::host const be;

models::transformer_config tiny_config(std::int64_t window) {
  return {.vocab = 11, .d_model = 8, .n_layers = 2, .heads = 2, .d_ff = 12, .window = window};
}

using testing::random_tokens;
}  // namespace

TEST_CASE("transformer_lm: parameter names, counts and invalid configurations") {
  models::transformer_lm<float> m(tiny_config(16), 0);
  auto const names = m.named_params();
  REQUIRE(names.size() == 1 + 8 * 2 + 2);
  CHECK(names[0].name == "gpt_neox.embed_in.weight");
  CHECK(names[2].name == "gpt_neox.layers.0.attention.query_key_value.weight");
  CHECK(names[2].file_shape == extents{24, 8});
  CHECK(names.back().name == "embed_out.weight");
  std::int64_t const v = 11, d = 8, f = 12;
  CHECK(m.n_params() == v * d + 2 * (d + 3 * d * d + d * d + d + f * d + f + d * f + d) + d + v * d);
  auto c = tiny_config(16);
  c.heads = 3;
  CHECK_THROWS_WITH_AS(models::transformer_lm<float>(c, 0), doctest::Contains("heads = 3"), ssmlen::error);
  c = tiny_config(0);
  CHECK_THROWS_WITH_AS(models::transformer_lm<float>(c, 0), doctest::Contains("window = 0"), ssmlen::error);
}

TEST_CASE("transformer_lm: gradients of every parameter (double), full and sliding windows") {
  for (std::int64_t const window : {4, 32}) {
    CAPTURE(window);
    models::transformer_lm<double> m(tiny_config(window), 7);
    rng g(8);
    auto const seqs = sequences::from_lengths(std::vector<std::int64_t>{5, 9, 2});
    auto const tokens = random_tokens(g, seqs.tokens(), 11);
    std::vector<double> w(seqs.tokens() * 11), logits(w.size());
    testing::fill_normal(w, g);
    models::transformer_lm<double>::cache k;
    auto loss = [&] {
      m.forward(be, tokens, seqs, logits.data(), k);
      return testing::weighted_sum(logits.data(), w);
    };
    loss();
    m.zero_grad();
    m.backward(be, w.data(), k);
    auto targets = testing::parameter_targets(m);
    testing::check_gradients(loss, targets, 1e-6, /*max_entries=*/24);
    auto init = m.make_state(3);
    CHECK_THROWS_WITH_AS(m.backward(be, w.data(), k, &init), doctest::Contains("not supported"), ssmlen::error);
  }
}

TEST_CASE("transformer_lm: step() token by token and a forward in slices equal one forward") {
  models::transformer_lm<double> m(tiny_config(6), 3);  // a window shorter than the sequences: the ring wraps
  rng g(4);
  std::vector<std::int64_t> const lengths{37, 20};
  auto const seqs = sequences::from_lengths(lengths);
  auto const tokens = random_tokens(g, seqs.tokens(), 11);
  std::vector<double> logits(seqs.tokens() * 11);
  models::transformer_lm<double>::cache k;
  m.forward(be, tokens, seqs, logits.data(), k);

  CHECK(testing::step_vs_forward(m, lengths, 4) < 1e-12);

  // Both sequences in slices (the second empty in the last slice), each continuing the returned states.
  auto carried = m.make_state(2), next = m.make_state(2);
  std::int64_t from = 0;
  double worst = 0;
  for (std::int64_t const n : {9, 4, 24}) {
    std::vector<std::int64_t> lens;
    std::vector<std::int32_t> packed;
    for (int b = 0; b < 2; ++b) {
      std::int64_t const lo = std::min(from, lengths[b]), hi = std::min(from + n, lengths[b]);
      lens.push_back(hi - lo);
      packed.insert(packed.end(), tokens.begin() + seqs.begin(b) + lo, tokens.begin() + seqs.begin(b) + hi);
    }
    auto const part = sequences::from_lengths(lens);
    std::vector<double> got(packed.size() * 11);
    m.forward(be, packed, part, got.data(), k, from == 0 ? nullptr : &carried, &next);
    for (int b = 0; b < 2; ++b) {
      for (std::int64_t t = 0; t < part.length(b); ++t) {
        for (std::int64_t v = 0; v < 11; ++v) {
          worst = std::max(worst,
                           std::abs(got[(part.begin(b) + t) * 11 + v] - logits[(seqs.begin(b) + from + t) * 11 + v]));
        }
      }
    }
    std::swap(carried, next);
    from += n;
  }
  CHECK(worst < 1e-12);
  CHECK(carried.pos[0] == 37);
  CHECK(carried.pos[1] == 20);
}

TEST_CASE("transformer_lm: forward and backward are bit-identical across runs and on 1 vs 2 threads") {
  testing::check_bit_identical_across_threads(
      [] {
        return models::transformer_lm<float>(
            {.vocab = 11, .d_model = 16, .n_layers = 2, .heads = 2, .d_ff = 24, .window = 64}, 3);
      },
      sequences::from_lengths(std::vector<std::int64_t>{300, 17, 129, 64, 1}));
}

TEST_CASE("transformer_lm: the trainer takes it, and a short run on 1-digit additions learns") {
  auto const task = tasks::make_task("addition");
  models::transformer_lm<float> m(
      {.vocab = task.vocab().size(), .d_model = 32, .n_layers = 2, .heads = 4, .d_ff = 64, .window = 256}, 1);
  auto const [first, last] = testing::short_training_losses(m, 3e-3);
  MESSAGE("transformer: loss ", first, " -> ", last);
  CHECK(last < 0.25 * first);
}
