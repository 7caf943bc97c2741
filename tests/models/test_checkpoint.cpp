// Checkpoints: an independent PyTorch implementation's logits are reproduced from
// its safetensors file; ssmlen's own files round-trip; bad files are refused by name.
#include <ssmlen/models/checkpoint.hpp>

#include <doctest/doctest.h>

#include <fstream>

#include "../support/gradcheck.hpp"

using namespace ssmlen;

namespace {
backends::host const be;
std::filesystem::path const data_dir = SSMLEN_TEST_DATA_DIR;

std::filesystem::path temp_dir() {
  auto const d = std::filesystem::temp_directory_path() / ("ssmlen_ckpt_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return d;
}

template <class M>
std::vector<double> logits_of(M const& m, std::vector<std::int32_t> const& tokens) {
  std::vector<typename M::value_type> out(tokens.size() * m.config().vocab);
  typename M::cache k;
  m.forward(be, tokens, sequences::uniform(1, static_cast<std::int64_t>(tokens.size())), out.data(), k);
  return {out.begin(), out.end()};
}
}  // namespace

TEST_CASE("checkpoint: logits of the PyTorch reference fixtures, configuration inferred from shapes") {
  for (char const* name : {"tiny_mamba", "tiny_mamba_untied", "tiny_mamba_r3"}) {
    CAPTURE(name);
    std::ifstream in(data_dir / (std::string(name) + ".logits.json"));
    REQUIRE(in.good());
    auto const ref = nlohmann::json::parse(in);
    auto const m = models::load_model<float>(data_dir / (std::string(name) + ".safetensors"));
    CHECK(m.config().vocab == ref["config"]["vocab_size"].get<std::int64_t>());
    CHECK(m.config().n_layers == ref["config"]["n_layer"].get<std::int64_t>());
    CHECK(m.config().dt_rank == ref["config"]["dt_rank"].get<std::int64_t>());
    CHECK(m.config().tie_embeddings == ref["config"]["tie_embeddings"].get<bool>());
    auto const tokens = ref["tokens"].get<std::vector<std::int32_t>>();
    auto const got = logits_of(m, tokens);
    double diff2 = 0, ref2 = 0;
    std::size_t i = 0;
    for (auto const& row : ref["logits"]) {
      for (auto const& v : row) {
        diff2 += (got[i] - v.get<double>()) * (got[i] - v.get<double>());
        ref2 += v.get<double>() * v.get<double>();
        ++i;
      }
    }
    REQUIRE(i == got.size());
    CHECK(std::sqrt(diff2 / ref2) < 1e-5);
  }
}

TEST_CASE("checkpoint: save and load round-trip in F32 (exact) and BF16 (rounded), HF spelling accepted") {
  models::mamba_config c;
  c.vocab = 9;
  c.d_model = 8;
  c.n_layers = 2;
  c.d_state = 4;
  models::mamba_lm<float> m(c, 5);
  auto const dir = temp_dir();
  models::save_model(dir / "m.safetensors", m);
  auto back = models::load_model<float>(dir / "m.safetensors");
  CHECK(back.config() == m.config());
  std::vector<std::int32_t> const tokens{1, 2, 3, 4, 5, 6, 7, 8};
  CHECK(logits_of(back, tokens) == logits_of(m, tokens));

  models::save_model(dir / "b.safetensors", m, io::st_dtype::bf16);
  auto const bf = models::load_model<float>(dir / "b.safetensors");
  auto const a = logits_of(m, tokens), b = logits_of(bf, tokens);
  for (std::size_t i = 0; i < a.size(); ++i) {
    CHECK(std::abs(a[i] - b[i]) < 0.05 * (1 + std::abs(a[i])));
  }

  auto f = io::load_safetensors(dir / "m.safetensors");
  f.tensors["backbone.embeddings.weight"] = f.tensors["backbone.embedding.weight"];
  f.tensors.erase("backbone.embedding.weight");
  f.metadata.clear();
  io::save_safetensors(dir / "hf.safetensors", f);
  CHECK(logits_of(models::load_model<float>(dir / "hf.safetensors"), tokens) == logits_of(m, tokens));
  std::filesystem::remove_all(dir);
}

TEST_CASE("checkpoint: mismatched files are refused with the tensor named") {
  models::mamba_config c;
  c.vocab = 9;
  c.d_model = 8;
  c.n_layers = 1;
  c.d_state = 4;
  models::mamba_lm<float> m(c, 5);
  auto const dir = temp_dir();
  auto const good = models::to_safetensors(m);
  auto expect_refused = [&](io::st_file const& f, std::string const& needle) {
    io::save_safetensors(dir / "bad.safetensors", f);
    CHECK_THROWS_WITH_AS(models::load_model<float>(dir / "bad.safetensors"), doctest::Contains(needle.c_str()),
                         ssmlen::error);
  };
  auto missing = good;
  missing.tensors.erase("backbone.layers.0.mixer.D");
  expect_refused(missing, "missing tensor 'backbone.layers.0.mixer.D'");
  auto extra = good;
  extra.tensors["backbone.layers.0.mixer.bogus"] = good.tensors.at("backbone.norm_f.weight");
  expect_refused(extra, "unexpected tensor 'backbone.layers.0.mixer.bogus'");
  auto shape = good;
  shape.tensors["backbone.layers.0.mixer.A_log"].shape = {4, 16};
  expect_refused(shape, "'backbone.layers.0.mixer.A_log' has shape [4, 16]");
  auto dtype = good;
  auto& d = dtype.tensors["backbone.layers.0.mixer.D"];
  d.type = io::st_dtype::i32;
  expect_refused(dtype, "not a floating type");
  auto meta = good;
  meta.metadata[models::config_metadata_key] = "{\"d_model\": 8, \"vocab\": 9, \"n_layers\": 1, \"d_state\": 0}";
  expect_refused(meta, "d_state = 0");
  std::filesystem::remove_all(dir);
}
