// Training: AdamW decays only matrices and embeddings, the schedule's shape, a
// resumed run continues bit-identically, runs are identical on 1 and 2 threads,
// the masked loss ignores input and observation tokens, and packed task batches
// hold the same traces as unpacked ones.
#include <ssmlen/tasks/registry.hpp>
#include <ssmlen/train/checkpoint.hpp>
#include <ssmlen/train/task_batches.hpp>
#include <ssmlen/train/trainer.hpp>

#include <doctest/doctest.h>

#include <filesystem>
#include <omp.h>

using namespace ssmlen;

namespace {
backends::host const be;

models::mamba_config small_config() {
  models::mamba_config c;
  c.vocab = 12;
  c.d_model = 16;
  c.n_layers = 2;
  c.d_state = 4;
  return c;
}

train::batch toy_batch(std::int64_t step) {
  rng g = rng(99).fork(static_cast<std::uint64_t>(step));
  train::batch b;
  for (int i = 0; i < 6; ++i) {
    std::vector<std::int32_t> t;
    std::vector<std::uint8_t> m;
    auto const n = g.uniform_int(2, 9);
    for (std::int64_t j = 0; j < n; ++j) {
      t.push_back(static_cast<std::int32_t>(g.uniform_int(1, 11)));
      m.push_back(j % 3 != 0);
    }
    b.add(t, m);
  }
  b.finish();
  return b;
}

std::vector<float> all_params(models::mamba_lm<float>& m) {
  std::vector<float> out;
  for (auto& p : m.named_params()) {
    out.insert(out.end(), p.p->value.begin(), p.p->value.end());
  }
  return out;
}

train::adamw_config opt_config() {
  train::adamw_config o;
  o.lr = 1e-2;
  return o;
}
}  // namespace

TEST_CASE("adamw: decay applies only to parameters marked for it; clipping bounds the update") {
  models::mamba_lm<float> m(small_config(), 1);
  auto o = opt_config();
  o.weight_decay = 0.5;
  train::adamw<float> opt(o, m.named_params());
  m.zero_grad();  // zero gradients: only weight decay moves anything
  auto const before = all_params(m);
  opt.step(be, 0.1);
  std::size_t i = 0;
  for (auto& p : m.named_params()) {
    bool const moved = std::memcmp(p.p->value.data(), before.data() + i, sizeof(float) * p.p->value.size()) != 0;
    bool const should = p.p->decay && p.name.find("norm") == std::string::npos;
    CAPTURE(p.name);
    CHECK(moved == should);
    CHECK(p.p->decay == (p.name.find("weight") != std::string::npos && p.name.find("norm") == std::string::npos &&
                         p.name.find("dt_proj.bias") == std::string::npos));
    i += static_cast<std::size_t>(p.p->value.size());
  }
  CHECK(opt.grad_norm() == 0.0);
}

TEST_CASE("warmup_cosine: linear warm-up, then cosine down to min_ratio") {
  train::warmup_cosine s{1.0, 10, 110, 0.1};
  CHECK(s(0) == doctest::Approx(0.1));
  CHECK(s(9) == doctest::Approx(1.0));
  CHECK(s(60) == doctest::Approx(0.55));
  CHECK(s(109) == doctest::Approx(0.1).epsilon(1e-3));
  for (int k = 10; k < 109; ++k) {
    CHECK(s(k + 1) <= s(k));
  }
}

TEST_CASE("trainer: the masked loss ignores unmasked targets entirely") {
  models::mamba_lm<float> m(small_config(), 2);
  train::batch b;
  std::vector<std::int32_t> t{1, 2, 3, 4, 5};
  std::vector<std::uint8_t> mask{0, 0, 1, 0, 1};
  b.add(t, mask);
  b.finish();
  auto b2 = b;
  b2.targets[2] = 7;  // an unmasked target (mask for token 3 is 0): must not change anything
  train::trainer tr1(m, opt_config(), {1e-2, 1, 10, 0.1});
  auto const r1 = tr1.step(be, b);
  models::mamba_lm<float> m2(small_config(), 2);
  train::trainer tr2(m2, opt_config(), {1e-2, 1, 10, 0.1});
  auto const r2 = tr2.step(be, b2);
  CHECK(r1.loss == r2.loss);
  CHECK(r1.predicted == 2);
  CHECK(all_params(m) == all_params(m2));
}

TEST_CASE("trainer: a resumed run continues bit-identically; runs agree on 1 and 2 threads") {
  train::warmup_cosine const sched{1e-2, 2, 8, 0.1};
  auto run = [&](int threads, int stop_after, std::filesystem::path const* resume_from,
                 std::filesystem::path const* save_to) {
    omp_set_num_threads(threads);
    models::mamba_lm<float> m(small_config(), 3);
    train::trainer tr(m, opt_config(), sched);
    if (resume_from != nullptr) {
      train::load_training_checkpoint(*resume_from, m, tr.optimizer());
    }
    std::vector<double> losses;
    tr.fit(be, stop_after, toy_batch, [&](train::step_report const& r) {
      losses.push_back(r.loss);
      return true;
    });
    if (save_to != nullptr) {
      train::save_training_checkpoint(*save_to, m, tr.optimizer(), {{"seed", 99}});
    }
    auto params = all_params(m);
    params.insert(params.end(), losses.begin(), losses.end());
    return params;
  };
  int const before = omp_get_max_threads();
  auto const dir = std::filesystem::temp_directory_path() / ("ssmlen_train_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto const ck = dir / "half.safetensors";
  auto const straight = run(2, 8, nullptr, nullptr);
  auto const one_thread = run(1, 8, nullptr, nullptr);
  (void)run(2, 4, nullptr, &ck);
  auto const resumed = run(2, 8, &ck, nullptr);
  omp_set_num_threads(before);
  std::filesystem::remove_all(dir);
  CHECK(straight == one_thread);
  // The resumed run logs only its last 4 losses; its parameters must equal the straight run's.
  REQUIRE(resumed.size() == straight.size() - 4);
  CHECK(std::equal(resumed.begin(), resumed.end() - 4, straight.begin()));
  CHECK(std::equal(resumed.end() - 4, resumed.end(), straight.end() - 4));
}

TEST_CASE("task_batch: traces packed back to back keep every token, and only boundary targets change") {
  auto const task = tasks::make_task("addition");
  for (std::int64_t const k : {2, 3, 7}) {
    CAPTURE(k);
    auto const plain = train::task_batch(task, 5, 11, 10, 5);
    auto const packed = train::task_batch(task, 5, 11, 10, 5, k);
    REQUIRE(plain.seqs.count() == 10);
    CHECK(packed.seqs.count() == (10 + k - 1) / k);  // the last sequence holds the remainder
    // Packing removes nothing but the one-token shift at each boundary: the packed inputs are the traces' tokens
    // with only each sequence's last token dropped, so together they are the plain inputs plus the inner boundaries.
    CHECK(packed.tokens() == plain.tokens() + (10 - packed.seqs.count()));
    std::int64_t p = 0, trace = 0;
    for (std::int64_t s = 0; s < plain.seqs.count(); ++s, ++trace) {
      bool const last_in_sequence = (trace + 1) % k == 0 || trace + 1 == 10;
      for (std::int64_t t = plain.seqs.begin(s); t < plain.seqs.end(s); ++t, ++p) {
        auto const i = static_cast<std::size_t>(t), j = static_cast<std::size_t>(p);
        REQUIRE(packed.inputs[j] == plain.inputs[i]);
        REQUIRE(packed.targets[j] == plain.targets[i]);
        REQUIRE(packed.mask[j] == plain.mask[i]);
      }
      if (!last_in_sequence) {  // the boundary: this trace's last token predicts the next trace's first, untrained
        auto const j = static_cast<std::size_t>(p);
        CHECK(packed.inputs[j] == plain.targets[static_cast<std::size_t>(plain.seqs.end(s) - 1)]);
        CHECK(packed.targets[j] == plain.inputs[static_cast<std::size_t>(plain.seqs.begin(s + 1))]);
        CHECK(packed.mask[j] == 0);
        ++p;
      }
    }
    CHECK(p == packed.tokens());
  }
  CHECK_THROWS_WITH_AS(train::task_batch(task, 5, 11, 10, 5, 0), doctest::Contains("traces_per_sequence"), error);
}
