// The paper's baselines on the addition headline: trains an LSTM, a GRU or a Transformer language model on the same
// batches, schedule and validation as the Mamba headline (`ssmlen train`'s defaults: traces of <= 5-digit operands
// packed four to a sequence, AdamW, warm-up then cosine, the best validated model kept), then sweeps lengths with the
// same tool-driven rollouts.
//   05_baselines                                   LSTM, 2 layers x 128, 800 steps, sweep 5..1000 digits
//   05_baselines --model gru --hidden 96           a GRU of another width
//   05_baselines --model transformer --window 512  4 layers x d_model 64, rotary attention over 512 tokens
//   05_baselines --model lstm --out runs/lstm      also writes runs/lstm/model.safetensors and sweep.{json,csv,svg}
// Progress: a line every 50 steps (loss, tokens/s) and every validation. --smoke: 3 steps, tiny sizes.
#include <ssmlen/ssmlen.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

namespace sl = ssmlen;

namespace {

struct options {
  std::string model = "lstm";
  std::int64_t hidden = 128, layers = 0, steps = 0;                // layers: 2 for LSTM and GRU, 4 for the Transformer
  std::int64_t d_model = 64, heads = 4, d_ff = 256, window = 512;  // the Transformer's
  std::uint64_t seed = 1;
  std::vector<int> sizes{5, 10, 20, 50, 100, 200, 500, 1000};
  int per_size = 32;
  std::string out;
  bool smoke = false;
};

template <class Model>
int run(options const& o) {
  sl::backends::host be;
  auto const task = sl::tasks::make_task("addition");
  auto cfg = sl::train::preset_for("addition").run;  // the Mamba headline's training and validation settings
  cfg.seed = o.seed;
  if (o.steps > 0) {
    cfg.steps = o.steps;
  }
  if (o.smoke) {
    cfg.steps = 3;
    cfg.batch = 4;
    cfg.val_n = 3;
    cfg.val_episodes = 2;
  }
  std::int64_t const vocab = task.vocab().size();
  Model model = [&] {
    if constexpr (std::is_same_v<Model, sl::models::transformer_lm<float>>) {
      return Model({.vocab = vocab,
                    .d_model = o.d_model,
                    .n_layers = o.layers,
                    .heads = o.heads,
                    .d_ff = o.d_ff,
                    .window = o.window},
                   cfg.seed);
    } else {
      return Model({.vocab = vocab, .hidden = o.hidden, .n_layers = o.layers}, cfg.seed);
    }
  }();
  std::string const shape = o.model == "transformer"
                                ? std::to_string(o.layers) + " layers x d_model " + std::to_string(o.d_model) + ", " +
                                      std::to_string(o.heads) + " heads, window " + std::to_string(o.window)
                                : std::to_string(o.layers) + " layers x " + std::to_string(o.hidden) + " hidden";
  std::printf("%s: %s, %ld parameters; %ld steps of %ld traces (<= %d digits, %ld a sequence), "
              "validation on %d additions of %d digits every %ld steps\n",
              o.model.c_str(), shape.c_str(), static_cast<long>(model.n_params()), static_cast<long>(cfg.steps),
              static_cast<long>(cfg.batch), cfg.max_n, static_cast<long>(cfg.traces_per_sequence), cfg.val_episodes,
              cfg.val_n, static_cast<long>(cfg.eval_every));
  std::fflush(stdout);

  sl::train::trainer<Model> tr(model, cfg.optimizer(), cfg.schedule());
  std::vector<std::vector<float>> best;  // the best validated parameters, later steps winning ties (as train_run)
  double best_exact = -1, tokens = 0;
  std::int64_t best_step = 0;
  auto const t0 = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  tr.fit(
      be, cfg.steps,
      [&](std::int64_t s) {
        return sl::train::task_batch(task, cfg.seed, s, cfg.batch, cfg.max_n, cfg.traces_per_sequence);
      },
      [&](sl::train::step_report const& r) {
        tokens += static_cast<double>(r.tokens);
        std::int64_t const done = r.step + 1;
        if (done % 50 == 0 || done == cfg.steps) {
          std::printf("  step %5ld  loss %.4f  %.1f k tokens/s\n", static_cast<long>(done), r.loss,
                      tokens / seconds() / 1e3);
        }
        if ((cfg.eval_every > 0 && done % cfg.eval_every == 0) || done == cfg.steps) {
          double const exact = sl::train::validation_exact(be, model, task, cfg);
          bool const kept = exact >= best_exact;
          if (kept) {
            best_exact = exact;
            best_step = done;
            best.clear();
            for (auto& p : model.named_params()) {
              best.emplace_back(p.p->value.begin(), p.p->value.end());
            }
          }
          std::printf("  step %5ld: validation %5.1f%%%s\n", static_cast<long>(done), 100 * exact,
                      kept ? " (kept)" : "");
        }
        std::fflush(stdout);
        return true;
      });
  double const train_seconds = seconds();
  auto params = model.named_params();
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::copy(best[i].begin(), best[i].end(), params[i].p->value.begin());
  }
  std::printf("trained %ld steps in %.0f s (%.1f k tokens/s); kept step %ld (validation %.1f%%)\n",
              static_cast<long>(cfg.steps), train_seconds, tokens / train_seconds / 1e3, static_cast<long>(best_step),
              100 * best_exact);

  sl::eval::sweep_config sweep;
  sweep.sizes = o.smoke ? std::vector<int>{2, 4} : o.sizes;
  sweep.per_size = o.smoke ? 2 : o.per_size;
  sweep.train_n = cfg.max_n;
  std::puts(sl::eval::table_header().c_str());
  auto const result = sl::eval::length_sweep(be, model, task, sweep, [](sl::eval::size_result const& r) {
    std::puts(sl::eval::table_row(r).c_str());
    std::fflush(stdout);
  });
  if (!o.out.empty()) {
    std::filesystem::path const dir(o.out);
    std::filesystem::create_directories(dir);
    // The kept model, with the task and training size as `ssmlen train` stores them: `ssmlen eval --checkpoint` and
    // models::load_model_as<Model> read it.
    sl::models::save_model(dir / "model.safetensors", model, sl::io::st_dtype::f32, sl::train::run_metadata(cfg, task));
    std::printf("wrote %s\n", (dir / "model.safetensors").string().c_str());
    for (auto const& f : sl::eval::write_reports(result, dir / "sweep")) {
      std::printf("wrote %s\n", f.string().c_str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Train the paper's LSTM or GRU baseline on the addition headline and sweep lengths");
  options o;
  app.add_option("--model", o.model, "lstm, gru or transformer")
      ->check(CLI::IsMember({"lstm", "gru", "transformer"}))
      ->capture_default_str();
  app.add_option("--hidden", o.hidden, "LSTM and GRU: hidden width (and embedding width)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--layers", o.layers, "Layers (default: 2 for LSTM and GRU, 4 for the Transformer)")
      ->check(CLI::Range(1, 64));
  app.add_option("--d-model", o.d_model, "Transformer: model width")->check(CLI::Range(2, 4096))->capture_default_str();
  app.add_option("--heads", o.heads, "Transformer: attention heads")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--d-ff", o.d_ff, "Transformer: MLP width")->check(CLI::Range(1, 65536))->capture_default_str();
  app.add_option("--window", o.window,
                 "Transformer: positions a query attends to (longer than an episode: full "
                 "attention)")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  app.add_option("--steps", o.steps, "Training steps (default: the headline's 800)")->check(CLI::Range(1, 1000000));
  app.add_option("--seed", o.seed, "Seed of the initialization and the batches")->capture_default_str();
  app.add_option("--sizes", o.sizes, "Digit counts to sweep")->delimiter(',')->check(CLI::Range(1, 100000));
  app.add_option("--per-size", o.per_size, "Additions per size")->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--out", o.out, "Directory for model.safetensors and sweep.{json,csv,svg} (none by default)");
  app.add_flag("--smoke", o.smoke, "3 steps and tiny sizes (a test that the example keeps running)");
  CLI11_PARSE(app, argc, argv);
  if (o.layers == 0) {
    o.layers = o.model == "transformer" ? 4 : 2;
  }
  try {
    if (o.model == "transformer") {
      return run<sl::models::transformer_lm<float>>(o);
    }
    return o.model == "lstm" ? run<sl::models::lstm_lm<float>>(o) : run<sl::models::gru_lm<float>>(o);
  } catch (sl::error const& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
