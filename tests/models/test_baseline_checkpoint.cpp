// The baselines' checkpoints: LSTM, GRU and Transformer models round-trip through safetensors bit for bit, and a
// file of another architecture, an unknown configuration key or a truncated file is refused with a clear error.
#include <ssmlen/models/checkpoint.hpp>
#include <ssmlen/models/recurrent_lm.hpp>
#include <ssmlen/models/transformer_lm.hpp>

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <unistd.h>

using namespace ssmlen;

namespace {
backends::host const be;

std::filesystem::path temp_dir() {
  auto const d = std::filesystem::temp_directory_path() / ("ssmlen_baseline_ckpt_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

template <class M>
std::vector<float> logits_of(M const& m) {
  std::vector<std::int32_t> const tokens{1, 4, 2, 8, 5, 7, 0, 3};
  std::vector<float> out(tokens.size() * 9);
  typename M::cache k;
  m.forward(be, tokens, sequences::uniform(1, 8), out.data(), k);
  return out;
}

models::lstm_lm<float> lstm() { return models::lstm_lm<float>({.vocab = 9, .hidden = 6, .n_layers = 2}, 3); }
models::transformer_lm<float> transformer() {
  return models::transformer_lm<float>({.vocab = 9, .d_model = 8, .n_layers = 2, .heads = 2, .d_ff = 12, .window = 5},
                                       4);
}
}  // namespace

TEST_CASE_TEMPLATE("baseline checkpoints: save, load, the same logits bit for bit", M, models::lstm_lm<float>,
                   models::gru_lm<float>, models::transformer_lm<float>) {
  auto const dir = temp_dir();
  M m = [] {
    if constexpr (std::is_same_v<M, models::transformer_lm<float>>) {
      return transformer();
    } else {
      return M({.vocab = 9, .hidden = 6, .n_layers = 2}, 3);
    }
  }();
  models::save_model(dir / "m.safetensors", m);
  auto const back = models::load_model_as<M>(dir / "m.safetensors");
  CHECK(models::checkpoint_architecture(models::to_safetensors(m)) == m.config_json()["architecture"]);
  CHECK(back.config_json() == m.config_json());
  CHECK(logits_of(back) == logits_of(m));
  std::filesystem::remove_all(dir);
}

TEST_CASE("baseline checkpoints: another architecture, a bad configuration or a truncated file is refused") {
  auto const dir = temp_dir();
  auto m = lstm();
  models::save_model(dir / "lstm.safetensors", m);
  CHECK_THROWS_WITH_AS(models::load_model_as<models::gru_lm<float>>(dir / "lstm.safetensors"),
                       doctest::Contains("architecture = \"lstm\": this model type is \"gru\""), ssmlen::error);
  CHECK_THROWS_WITH_AS(models::load_model_as<models::transformer_lm<float>>(dir / "lstm.safetensors"),
                       doctest::Contains("this model type is \"transformer\""), ssmlen::error);

  auto f = models::to_safetensors(m);
  CHECK(models::checkpoint_architecture(io::st_file{}) == "mamba");  // a state dict without ssmlen's metadata
  f.metadata[models::config_metadata_key] = R"({"architecture": "lstm", "vocab": 9, "hidden": 6, "depth": 2})";
  io::save_safetensors(dir / "key.safetensors", f);
  CHECK_THROWS_WITH_AS(models::load_model_as<models::lstm_lm<float>>(dir / "key.safetensors"),
                       doctest::Contains("unknown model config key 'depth'"), ssmlen::error);
  f.metadata[models::config_metadata_key] = R"({"vocab": 9, "hidden": 6, "n_layers": 2})";
  io::save_safetensors(dir / "arch.safetensors", f);
  CHECK_THROWS_WITH_AS(models::load_model_as<models::lstm_lm<float>>(dir / "arch.safetensors"),
                       doctest::Contains("names no 'architecture'"), ssmlen::error);
  f.metadata[models::config_metadata_key] = R"({"architecture": "lstm", "vocab": 9, "hidden": 5, "n_layers": 2})";
  io::save_safetensors(dir / "shape.safetensors", f);
  CHECK_THROWS_WITH_AS(models::load_model_as<models::lstm_lm<float>>(dir / "shape.safetensors"),
                       doctest::Contains("tensor 'rnn.weight_ih_l0' has shape [24, 6], expected [20, 5]"),
                       ssmlen::error);

  auto const size = std::filesystem::file_size(dir / "lstm.safetensors");
  std::filesystem::copy_file(dir / "lstm.safetensors", dir / "cut.safetensors");
  std::filesystem::resize_file(dir / "cut.safetensors", size - 10);
  CHECK_THROWS_AS(models::load_model_as<models::lstm_lm<float>>(dir / "cut.safetensors"), ssmlen::error);
  std::filesystem::remove_all(dir);
}
