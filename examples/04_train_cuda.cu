// SPDX-License-Identifier: Apache-2.0
// The addition headline trained on a CUDA device, then swept like the CPU-trained model. The training step and the
// rollouts (validation and sweep) run on the GPU; the rest is the CPU run's (train::train_run): the defaults of
// train::run_config (4 layers x d_model 64, batches of 128 traces of <= 5-digit additions packed 4 to a sequence,
// AdamW, warm-up then cosine over 800 steps), the same batches for the same seed, validation every 100 steps, the best
// validated model kept. The kept model is then swept at 5 ... 1000 digits. Rollouts give the same tokens on the GPU
// as on the host (tests/cuda/test_rollout.cu); --host-rollouts runs them on the host instead (OpenMP threads:
// OMP_NUM_THREADS). Teacher-forced token accuracy is always scored on the host.
//   04_train_cuda [--task addition] [--config run.json] [--seed 1] [--steps 800] [--batch 128] [--lr 3e-3]
//                 [--adam-eps 1e-8] [--delta-min 0] [--traces-per-sequence 4] [--precision fp32|tf32|bf16]
//                 [--sizes 5,10,...,1000] [--per-size 32] [--teacher-forced 8] [--host-rollouts]
//                 [--out runs/cuda_seed1]
// --task starts from that task's preset (train::preset_for: training budget, validation, sweep sizes and episodes), as
// `ssmlen train --task` does; give it first, as later flags override it.
// --config reads any train::run_config keys from a JSON file (as `ssmlen train --config`); later flags override it.
// --precision picks the GEMMs' (training and rollouts; fp32 by default). --teacher-forced sets how many expert traces
// per size are scored under teacher forcing on the host (0 skips it: for large models the host forward is slow).
// --out writes <out>/model.safetensors with the run's metadata (`ssmlen eval` reads it) and <out>/sweep.{json,csv,svg}.
// --smoke runs 3 steps on small batches and a tiny sweep (a test that the example keeps compiling and running).
#include <ssmlen/agent/cuda/rollout.cuh>
#include <ssmlen/models/cuda/mamba_lm.cuh>
#include <ssmlen/ssmlen.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <system_error>

namespace sl = ssmlen;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string device_name() {
  int device = 0;
  cudaDeviceProp prop{};
  sl::backends::cuda_check(cudaGetDevice(&device), "cudaGetDevice");
  sl::backends::cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return prop.name;
}

// The whole of `text` as a T, or an error that names the flag.
template <class T>
T parse_number(std::string const& flag, std::string const& text) {
  T value{};
  auto const [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  sl::check(ec == std::errc{} && end == text.data() + text.size(), flag + ": give a number, not '" + text + "'");
  return value;
}

int run(int argc, char** argv) {
  auto const program_start = std::chrono::steady_clock::now();
  sl::train::run_config cfg;  // the headline's defaults
  std::string out;
  sl::eval::sweep_config sweep{.per_size = 32, .batch = 256, .train_n = cfg.max_n};
  auto precision = sl::backends::gemm_precision::fp32;
  bool host_rollouts = false;
  for (int i = 1; i < argc; ++i) {
    std::string const arg = argv[i];
    auto value = [&] {
      sl::check(i + 1 < argc, arg + ": give a value");
      return std::string(argv[++i]);
    };
    auto number = [&]<class T>(T& into) { into = parse_number<T>(arg, value()); };
    if (arg == "--task") {
      auto const preset = sl::train::preset_for(value());
      cfg = preset.run;
      sweep.sizes = preset.sweep_sizes, sweep.per_size = preset.sweep_episodes;
    } else if (arg == "--config") {
      std::ifstream in(value());
      sl::check(in.good(), "--config: cannot open " + std::string(argv[i]));
      cfg.update_from_json(nlohmann::json::parse(in));
    } else if (arg == "--seed") {
      number(cfg.seed);
    } else if (arg == "--steps") {
      number(cfg.steps);
    } else if (arg == "--lr") {  // the schedule's peak
      number(cfg.lr);
    } else if (arg == "--adam-eps") {
      number(cfg.adam_eps);
    } else if (arg == "--delta-min") {
      number(cfg.delta_min);
    } else if (arg == "--batch") {
      number(cfg.batch);
    } else if (arg == "--traces-per-sequence") {
      number(cfg.traces_per_sequence);
    } else if (arg == "--sizes") {  // comma-separated
      sweep.sizes.clear();
      std::string const list = value();
      for (std::size_t at = 0; at < list.size();) {
        std::size_t const comma = std::min(list.find(',', at), list.size());
        sweep.sizes.push_back(parse_number<int>(arg, list.substr(at, comma - at)));
        at = comma + 1;
      }
    } else if (arg == "--per-size") {
      number(sweep.per_size);
    } else if (arg == "--teacher-forced") {
      number(sweep.teacher_forced);
    } else if (arg == "--precision") {
      std::string const p = value();
      sl::check(p == "fp32" || p == "tf32" || p == "bf16", "--precision: give fp32, tf32 or bf16, not '" + p + "'");
      precision = p == "fp32"   ? sl::backends::gemm_precision::fp32
                  : p == "tf32" ? sl::backends::gemm_precision::tf32
                                : sl::backends::gemm_precision::bf16;
    } else if (arg == "--host-rollouts") {
      host_rollouts = true;
    } else if (arg == "--out") {
      out = value();
    } else if (arg == "--smoke") {
      cfg.steps = 3, cfg.batch = 8, cfg.eval_every = 2, cfg.val_n = 3, cfg.val_episodes = 2;
      sweep.sizes = {2, 4}, sweep.per_size = 2, sweep.teacher_forced = 1;
    } else {
      std::fprintf(
          stderr,
          "usage: %s [--task T] [--config FILE] [--seed N] [--steps N] [--batch B] [--lr LR] [--adam-eps E] "
          "[--delta-min D] "
          "[--traces-per-sequence K] "
          "[--precision fp32|tf32|bf16] [--sizes 5,100,1000] [--per-size N] [--teacher-forced N] [--host-rollouts] "
          "[--out DIR] "
          "[--smoke]\n",
          argv[0]);
      return 2;
    }
  }
  if (!out.empty()) {
    cfg.out = out;
  }
  cfg.validate();
  sweep.train_n = cfg.max_n;  // for the "n->m (p%)" summary, after --task and --config

  auto const task = sl::tasks::make_task(cfg.task);
  sl::models::mamba_lm<float> host(cfg.model_config(task.vocab().size()), cfg.seed);  // the CPU run's initial model
  sl::models::cuda::mamba_lm<> dev(host, {.precision = precision, .optimizer = cfg.optimizer()});
  // Validation and sweep rollouts on the device model's current parameters (empty: on the host model).
  sl::eval::episode_runner gpu_rollouts;
  if (!host_rollouts) {
    gpu_rollouts = [&dev](std::span<const sl::agent::episode_input> episodes, sl::tasks::any_task const& t,
                          sl::agent::rollout_config const& rc) {
      return sl::agent::cuda::rollout(
          dev, episodes, [&t](std::size_t) { return t.make_tool(); }, t.markers(), rc);
    };
  }
  sl::train::warmup_cosine const schedule = cfg.schedule();
  sl::backends::host const be;
  std::printf("%s on %s: %lld parameters, %lld steps of %lld traces, seed %llu, rollouts on the %s (%d host threads)\n",
              cfg.task.c_str(), device_name().c_str(), static_cast<long long>(dev.n_params()),
              static_cast<long long>(cfg.steps), static_cast<long long>(cfg.batch),
              static_cast<unsigned long long>(cfg.seed), host_rollouts ? "host" : "GPU", be.threads());

  // The next batch is sampled on another thread while the device takes the current step.
  auto sample = [&](std::int64_t step) {
    return std::async(std::launch::async, [&, step] {
      return sl::train::task_batch(task, cfg.seed, step, cfg.batch, cfg.max_n, cfg.traces_per_sequence);
    });
  };
  auto best = host;
  double best_exact = -1, step_seconds = 0, validation_seconds = 0, tokens = 0;
  std::int64_t best_step = 0, steps_run = cfg.steps;
  int perfect_in_a_row = 0;
  auto const t0 = std::chrono::steady_clock::now();
  auto next = sample(0);
  for (std::int64_t s = 0; s < cfg.steps; ++s) {
    auto const b = next.get();
    if (s + 1 < cfg.steps) {
      next = sample(s + 1);
    }
    auto const ts = std::chrono::steady_clock::now();
    auto const r = dev.train_step(b, schedule(s));
    step_seconds += seconds_since(ts);
    tokens += static_cast<double>(r.tokens);
    std::int64_t const done = s + 1;
    if ((cfg.eval_every > 0 && done % cfg.eval_every == 0) || done == cfg.steps) {
      auto const tv = std::chrono::steady_clock::now();
      dev.params().download(host.named_params(), false, dev.backend().stream);
      double const exact = sl::train::validation_exact(be, host, task, cfg, gpu_rollouts);
      validation_seconds += seconds_since(tv);
      bool const kept = exact >= best_exact;  // ties go to the later model, as in train_run
      if (kept) {
        best = host, best_exact = exact, best_step = done;
      }
      perfect_in_a_row = exact == 1.0 ? perfect_in_a_row + 1 : 0;
      std::printf("step %4lld  loss %.4f  lr %.2e  |g| %.3f  validation %5.1f%%%s  (%.1f s)\n",
                  static_cast<long long>(done), r.loss, r.lr, r.grad_norm, 100 * exact, kept ? " kept" : "",
                  seconds_since(t0));
      std::fflush(stdout);
      if (cfg.patience > 0 && perfect_in_a_row >= cfg.patience) {  // train_run's early stop
        steps_run = done;
        std::printf("stopped early: %d perfect validations in a row\n", perfect_in_a_row);
        break;
      }
    }
  }
  double const train_seconds = seconds_since(t0);
  std::printf("trained %lld steps in %.1f s (steps %.1f s, validation %.1f s): %.2f M tokens, %.0f tokens/s in the "
              "steps; kept step %lld (validation %.1f%%)\n",
              static_cast<long long>(steps_run), train_seconds, step_seconds, validation_seconds, tokens / 1e6,
              tokens / step_seconds, static_cast<long long>(best_step), 100 * best_exact);
  if (!out.empty()) {
    std::filesystem::create_directories(out);
    auto meta = sl::train::run_metadata(cfg, task);
    meta["ssmlen.trained_on"] = "cuda " + device_name();
    sl::models::save_model(std::filesystem::path(out) / "model.safetensors", best, sl::io::st_dtype::f32, meta);
  }

  auto const ts = std::chrono::steady_clock::now();
  std::printf("%s\n", sl::eval::table_header().c_str());
  dev.upload(best);  // the kept model, for the device rollouts
  auto const result = sl::eval::length_sweep(
      be, best, task, sweep,
      [](sl::eval::size_result const& r) {
        std::printf("%s\n", sl::eval::table_row(r).c_str());
        std::fflush(stdout);
      },
      gpu_rollouts);
  std::printf("summary: %s; sweep %.1f s; the whole run %.1f s\n", result.summary().c_str(), seconds_since(ts),
              seconds_since(program_start));
  if (!out.empty()) {
    sl::eval::write_reports(result, std::filesystem::path(out) / "sweep");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (std::exception const& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
