// Trains a small Mamba to reverse a string of digits and prints its loss falling.
//   prompt:  d1 d2 ... dk =        (k ~ U{1..8}, masked out of the loss)
//   answer:  dk ... d2 d1 <EOS>    (trained on)
// Reversal needs memory of the whole prompt, so the loss only falls once the
// selective scan has learned to store and recall it.
#include <ssmlen/core/rng.hpp>
#include <ssmlen/models/mamba_lm.hpp>
#include <ssmlen/train/trainer.hpp>

#include <CLI/CLI.hpp>

#include <cstdio>

namespace sl = ssmlen;

namespace {
constexpr std::int32_t equals_token = 10, eos_token = 11, vocab = 12;

sl::train::batch reversal_batch(std::uint64_t seed, std::int64_t step, int batch_size, int max_digits) {
  sl::rng g = sl::rng(seed).fork(static_cast<std::uint64_t>(step));
  sl::train::batch b;
  for (int i = 0; i < batch_size; ++i) {
    auto const k = g.uniform_int(1, max_digits);
    std::vector<std::int32_t> tokens;
    std::vector<std::uint8_t> predict;
    for (std::int64_t j = 0; j < k; ++j) {
      tokens.push_back(static_cast<std::int32_t>(g.uniform_int(0, 9)));
      predict.push_back(0);
    }
    tokens.push_back(equals_token);
    predict.push_back(0);
    for (std::int64_t j = k; j-- > 0;) {
      tokens.push_back(tokens[static_cast<std::size_t>(j)]);
      predict.push_back(1);
    }
    tokens.push_back(eos_token);
    predict.push_back(1);
    b.add(tokens, predict);
  }
  b.finish();
  return b;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train a small Mamba to reverse digit strings (a demo of the training loop)"};
  int steps = 400, batch_size = 64, layers = 2, d_model = 48, log_every = 25;
  std::uint64_t seed = 1;
  bool smoke = false;
  app.add_option("--steps", steps, "Optimizer steps")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch_size, "Sequences per batch")->check(CLI::PositiveNumber);
  app.add_option("--layers", layers, "Mamba layers")->check(CLI::PositiveNumber);
  app.add_option("--d-model", d_model, "Model width")->check(CLI::PositiveNumber);
  app.add_option("--seed", seed, "Random seed");
  app.add_flag("--smoke", smoke, "A few steps only (for tests)");
  CLI11_PARSE(app, argc, argv);
  if (smoke) {
    steps = 6;
    log_every = 2;
  }

  sl::models::mamba_config cfg;
  cfg.vocab = vocab;
  cfg.d_model = d_model;
  cfg.n_layers = layers;
  sl::models::mamba_lm<float> model(cfg, seed);
  sl::train::adamw_config opt;
  opt.lr = 3e-3;
  sl::train::warmup_cosine schedule{opt.lr, std::min(50, steps / 4), steps, 0.1};
  sl::train::trainer trainer(model, opt, schedule);
  std::printf("reversal demo: %d layers x d_model %d (%ld parameters), batch %d, %d steps\n", layers, d_model,
              static_cast<long>(model.n_params()), batch_size, steps);
  std::printf("%6s %9s %9s %10s\n", "step", "loss", "lr", "tokens/s");
  double tokens = 0, seconds = 0;
  sl::backends::host const be;
  trainer.fit(
      be, steps, [&](std::int64_t s) { return reversal_batch(seed, s, batch_size, 8); },
      [&](sl::train::step_report const& r) {
        tokens += static_cast<double>(r.tokens);
        seconds += r.seconds;
        if ((r.step + 1) % log_every == 0 || r.step == 0) {
          std::printf("%6ld %9.4f %9.2e %10.0f\n", static_cast<long>(r.step + 1), r.loss, r.lr, tokens / seconds);
          std::fflush(stdout);
        }
        return true;
      });
  return 0;
}
