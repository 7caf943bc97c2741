// The whole Mamba LM: gradients against finite differences (double), step() fed
// token by token against forward(), and determinism across thread counts.
#include <ssmlen/models/mamba_lm.hpp>

#include <doctest/doctest.h>

#include <omp.h>

#include "../support/gradcheck.hpp"
#include "../support/model_testing.hpp"

using namespace ssmlen;

namespace {
backends::host const be;

models::mamba_config tiny_config(bool tied) {
  models::mamba_config c;
  c.vocab = 11;
  c.d_model = 6;
  c.n_layers = 2;
  c.d_state = 3;
  c.d_conv = 4;
  c.expand = 2;
  c.dt_rank = 2;
  c.tie_embeddings = tied;
  return c;
}

using testing::random_tokens;

template <class M>
void randomize_states(M const& m, typename M::state& s, rng& g) {
  (void)m;
  for (auto& l : s.layers) {
    testing::fill_normal(l.conv, g, 0.5);
    testing::fill_normal(l.ssm, g, 0.5);
  }
}
}  // namespace

TEST_CASE("mamba_lm: parameter names and counts follow mamba_ssm") {
  models::mamba_lm<float> m(tiny_config(true), 0);
  auto const names = m.named_params();
  CHECK(names.front().name == "backbone.embedding.weight");
  CHECK(names[1].name == "backbone.layers.0.norm.weight");
  CHECK(names[3].name == "backbone.layers.0.mixer.conv1d.weight");
  CHECK(names[3].file_shape == extents{12, 1, 4});
  CHECK(names.back().name == "backbone.norm_f.weight");
  models::mamba_lm<float> untied(tiny_config(false), 0);
  CHECK(untied.named_params().back().name == "lm_head.weight");
  CHECK(untied.n_params() == m.n_params() + 11 * 6);
}

TEST_CASE("mamba_lm: invalid configurations name the offending field") {
  auto c = tiny_config(true);
  c.d_state = 0;
  CHECK_THROWS_WITH_AS(models::mamba_lm<float>(c, 0), doctest::Contains("d_state = 0"), ssmlen::error);
  c = tiny_config(true);
  c.vocab = -3;
  CHECK_THROWS_WITH_AS(models::mamba_lm<float>(c, 0), doctest::Contains("vocab = -3"), ssmlen::error);
  models::mamba_lm<float> m(tiny_config(true));
  std::vector<std::int32_t> bad{1, 2, 11};
  std::vector<float> logits(3 * 11);
  models::mamba_lm<float>::cache k;
  CHECK_THROWS_WITH_AS(m.forward(be, bad, sequences::uniform(1, 3), logits.data(), k),
                       doctest::Contains("token id = 11"), ssmlen::error);
}

TEST_CASE_TEMPLATE("mamba_lm: gradients of every parameter and the initial states (double)", Scan, scan::recurrent,
                   scan::chunked<4>) {
  for (bool const tied : {true, false}) {
    CAPTURE(tied);
    using model = models::mamba_lm<double, Scan>;
    model m(tiny_config(tied), 7);
    rng g(8);
    auto const seqs = sequences::from_lengths(std::vector<std::int64_t>{5, 9, 2});
    auto const tokens = random_tokens(g, seqs.tokens(), 11);
    std::vector<double> w(seqs.tokens() * 11), logits(w.size());
    testing::fill_normal(w, g);
    auto init = m.make_state(3), fin = m.make_state(3), wf = m.make_state(3), dinit = m.make_state(3);
    randomize_states(m, init, g);
    randomize_states(m, wf, g);
    typename model::cache k;
    auto loss = [&] {
      m.forward(be, tokens, seqs, logits.data(), k, &init, &fin);
      double s = testing::weighted_sum(logits.data(), w);
      for (std::size_t i = 0; i < fin.layers.size(); ++i) {
        s += testing::weighted_sum(fin.layers[i].ssm.data(), {wf.layers[i].ssm.begin(), wf.layers[i].ssm.end()});
        s += testing::weighted_sum(fin.layers[i].conv.data(), {wf.layers[i].conv.begin(), wf.layers[i].conv.end()});
      }
      return s;
    };
    loss();
    m.zero_grad();
    m.backward(be, w.data(), k, &init, &wf, &dinit);
    auto targets = testing::parameter_targets(m);
    for (std::size_t i = 0; i < init.layers.size(); ++i) {
      targets.push_back(
          {"init.conv", init.layers[i].conv.data(), dinit.layers[i].conv.data(), init.layers[i].conv.size()});
      targets.push_back({"init.ssm", init.layers[i].ssm.data(), dinit.layers[i].ssm.data(), init.layers[i].ssm.size()});
    }
    testing::check_gradients(loss, targets, 1e-6, /*max_entries=*/24);  // every tensor, 24 entries spread over it
  }
}

namespace {
template <class T, class Scan>
double step_vs_forward(std::uint64_t seed, double delta_min = 0) {
  auto cfg = tiny_config(true);
  cfg.delta_min = delta_min;
  cfg.d_model = 16;
  cfg.d_state = 8;
  cfg.dt_rank = 0;
  models::mamba_lm<T, Scan> m(cfg, seed);
  rng g(seed + 1);
  std::vector<std::int64_t> const lengths{37, 70, 5};
  auto const seqs = sequences::from_lengths(lengths);
  auto const tokens = random_tokens(g, seqs.tokens(), cfg.vocab);
  std::vector<T> logits(seqs.tokens() * cfg.vocab);
  typename models::mamba_lm<T, Scan>::cache k;
  auto fin = m.make_state(3);
  m.forward(be, tokens, seqs, logits.data(), k, nullptr, &fin);
  // Step all three sequences in lockstep; the shorter ones keep being fed (their results past the end are unused).
  auto s = m.make_state(3);
  typename models::mamba_lm<T, Scan>::step_workspace w;
  std::vector<T> out(3 * cfg.vocab);
  double worst = 0, scale = 0;
  for (std::int64_t t = 0; t < 70; ++t) {
    std::vector<std::int32_t> tok(3);
    for (int b = 0; b < 3; ++b) {
      tok[b] = tokens[seqs.begin(b) + std::min(t, lengths[b] - 1)];
    }
    m.step(be, tok, out.data(), s, w);
    for (int b = 0; b < 3; ++b) {
      if (t < lengths[b]) {
        for (std::int64_t v = 0; v < cfg.vocab; ++v) {
          double const ref = logits[(seqs.begin(b) + t) * cfg.vocab + v];
          worst = std::max(worst, std::abs(double(out[b * cfg.vocab + v]) - ref));
          scale = std::max(scale, std::abs(ref));
        }
      }
    }
    if (t == lengths[0] - 1) {  // the final state forward reported equals the stepped state
      for (std::size_t l = 0; l < fin.layers.size(); ++l) {
        for (std::int64_t i = 0; i < cfg.d_state * cfg.d_model * cfg.expand; ++i) {
          worst = std::max(worst, std::abs(double(s.layers[l].ssm[i] - fin.layers[l].ssm[i])) / std::max(scale, 1.0));
        }
      }
    }
  }
  REQUIRE(scale > 0);
  return worst / scale;
}
}  // namespace

TEST_CASE("mamba_lm: step() token by token equals forward()") {
  CHECK(step_vs_forward<double, scan::recurrent>(1) < 1e-10);
  CHECK(step_vs_forward<double, scan::chunked<16>>(2) < 1e-10);
  CHECK(step_vs_forward<float, scan::recurrent>(3) < 1e-4);
  CHECK(step_vs_forward<float, scan::chunked<16>>(4) < 1e-4);
  CHECK(step_vs_forward<double, scan::recurrent>(5, 0.02) < 1e-10);
}

TEST_CASE("mamba_lm: delta_min is a floor under every step size, and survives a checkpoint") {
  auto cfg = tiny_config(true);
  cfg.delta_min = 0.03;
  models::mamba_lm<double> m(cfg, 3);
  rng g(4);
  auto const seqs = sequences::from_lengths(std::vector<std::int64_t>{40});
  auto const tokens = random_tokens(g, seqs.tokens(), cfg.vocab);
  std::vector<double> logits(seqs.tokens() * cfg.vocab);
  models::mamba_lm<double>::cache k;
  m.forward(be, tokens, seqs, logits.data(), k);
  double lowest = 1;
  for (auto const& block : k.blocks) {
    for (double dt : block.ssm.dt) {
      lowest = std::min(lowest, dt);
    }
  }
  CHECK(lowest >= 0.03);
  CHECK(lowest < 0.03 + 0.01);  // Mamba's initialization puts some Δ at the low end of [1e-3, 1e-1]
  auto const round_trip = models::mamba_config_from_json(models::to_json(cfg));
  CHECK(round_trip == cfg);
  cfg.delta_min = -0.1;
  CHECK_THROWS_WITH_AS(cfg.validate(), doctest::Contains("delta_min"), ssmlen::error);
}

TEST_CASE("mamba_lm: forward and backward are bit-identical across runs and on 1 vs 2 threads") {
  testing::check_bit_identical_across_threads(
      [] {
        auto cfg = tiny_config(true);
        cfg.d_model = 32;
        cfg.d_state = 8;
        cfg.n_layers = 2;
        return models::mamba_lm<float>(cfg, 3);
      },
      sequences::from_lengths(std::vector<std::int64_t>{300, 17, 129, 64, 1}));
}
