// The README's "In code" example: train a Mamba on short additions, then sweep lengths.
// --smoke runs 3 steps and tiny sizes (a test that the example keeps compiling and running).
#include <ssmlen/ssmlen.hpp>

#include <cstdio>
#include <cstring>

namespace sl = ssmlen;

int main(int argc, char** argv) {
  bool const smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  std::int64_t const steps = smoke ? 3 : 400;

  auto task = sl::tasks::make_task("addition");  // pointer-memory tool, 3 pointers
  sl::models::mamba_config cfg{.vocab = task.vocab().size(), .d_model = 64, .n_layers = 4};
  sl::models::mamba_lm<float, sl::scan::recurrent> model(cfg, /*seed=*/1);
  sl::train::trainer trainer(model, {.lr = 3e-3}, {.peak = 3e-3, .warmup = 100, .total = steps});
  sl::backends::host be;
  trainer.fit(
      be, steps, [&](std::int64_t step) { return sl::train::task_batch(task, 1, step, smoke ? 8 : 128, 5); },
      [](sl::train::step_report const& r) {
        if (r.step % 50 == 0) {
          std::printf("step %4ld  loss %.4f\n", static_cast<long>(r.step), r.loss);
        }
        return true;
      });
  auto sweep = sl::eval::length_sweep(
      be, model, task,
      {.sizes = smoke ? std::vector<int>{2, 4} : std::vector<int>{5, 100, 1000}, .per_size = smoke ? 2 : 16});
  std::puts(sl::eval::table(sweep).c_str());
}
