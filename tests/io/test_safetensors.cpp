#include <ssmlen/io/safetensors.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

namespace fs = std::filesystem;
namespace io = ssmlen::io;
using io::st_dtype;

namespace {

//! A fresh directory under the system temp dir, removed with its contents at scope exit.
struct temp_dir {
  fs::path path;
  temp_dir() {
    static int counter = 0;
    path =
        fs::temp_directory_path() / ("ssmlen_test_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  temp_dir(temp_dir const&) = delete;
  temp_dir& operator=(temp_dir const&) = delete;
  [[nodiscard]] fs::path operator/(std::string const& name) const { return path / name; }
};

std::vector<std::byte> read_bytes(fs::path const& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(c.size());
  std::memcpy(out.data(), c.data(), c.size());
  return out;
}

void write_bytes(fs::path const& p, std::vector<std::byte> const& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<char const*>(b.data()), static_cast<std::streamsize>(b.size()));
}

//! A file with an explicit header length field, header text and `data_bytes` bytes of data.
void write_raw(fs::path const& p, std::uint64_t header_len, std::string const& header, std::size_t data_bytes) {
  std::vector<std::byte> b(8 + header.size() + data_bytes, std::byte{0x5A});
  std::memcpy(b.data(), &header_len, 8);
  std::memcpy(b.data() + 8, header.data(), header.size());
  write_bytes(p, b);
}

void write_raw(fs::path const& p, std::string const& header, std::size_t data_bytes) {
  write_raw(p, header.size(), header, data_bytes);
}

//! The message of the error `load_safetensors(p)` throws; fails the test when it loads.
std::string load_error(fs::path const& p) {
  try {
    (void)io::load_safetensors(p);
  } catch (ssmlen::error const& e) {
    return e.what();
  }
  FAIL("load_safetensors accepted a corrupt file: " << p);
  return {};
}

#define CHECK_REFUSED(path, problem)                                                                                   \
  do {                                                                                                                 \
    auto const msg_ = load_error(path);                                                                                \
    CHECK_MESSAGE(msg_.find(problem) != std::string::npos, msg_);                                                      \
    CHECK_MESSAGE(msg_.find((path).filename().string()) != std::string::npos, msg_);                                   \
  } while (false)

std::vector<float> ramp(std::size_t n, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = scale * std::sin(0.7f * static_cast<float>(i) + 0.3f) * static_cast<float>(i + 1);
  }
  return v;
}

}  // namespace

TEST_CASE("safetensors: round trip of F32, BF16, F64, metadata, empty and odd-shaped tensors") {
  temp_dir dir;
  io::st_file f;
  auto const a = ramp(3 * 5 * 7, 0.37f);
  f.tensors["backbone.layers.0.mixer.in_proj.weight"] = io::from_floats({3, 5, 7}, a);
  f.tensors["bf"] = io::from_floats({2, 9}, ramp(18, -1.3f), st_dtype::bf16);
  std::vector<double> const d{1.0 / 3.0, -2.5e-300, 7.0, 1e300, -0.0};
  f.tensors["f64"] = io::from_doubles({5}, d);
  f.tensors["empty"] = io::from_floats({0}, {});
  f.tensors["empty2d"] = io::from_floats({3, 0}, {}, st_dtype::bf16);
  f.tensors["scalar"] = io::from_floats({}, std::vector<float>{42.5f});
  f.tensors["odd_bf16"] = io::from_floats({1, 1, 3}, ramp(3, 2.f), st_dtype::bf16);  // 6 bytes: breaks alignment
  f.metadata = {{"format", "pt"}, {"ssmlen.step", "1500"}, {"note", "utf-8 \xc3\xa9 \"quoted\""}};

  auto const path = dir / "model.safetensors";
  io::save_safetensors(path, f);
  auto const g = io::load_safetensors(path);
  CHECK(g == f);
  CHECK(io::to_floats(g.tensors.at("backbone.layers.0.mixer.in_proj.weight")) == a);
  CHECK(io::to_doubles(g.tensors.at("f64")) == d);
  CHECK(std::signbit(io::to_doubles(g.tensors.at("f64"))[4]));
  CHECK(io::to_floats(g.tensors.at("scalar")) == std::vector<float>{42.5f});
  CHECK(g.tensors.at("empty2d").numel() == 0);

  // Header length is a multiple of 8, and every tensor starts aligned to its element size.
  auto const bytes = read_bytes(path);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  auto const header = nlohmann::json::parse(std::string(reinterpret_cast<char const*>(bytes.data()) + 8, n));
  for (auto const& item : header.items()) {
    auto const& v = item.value();
    if (item.key() != "__metadata__") {
      auto const t = io::parse_st_dtype(v["dtype"].get<std::string>());
      REQUIRE(t.has_value());
      CHECK_MESSAGE(v["data_offsets"][0].get<std::int64_t>() % io::st_dtype_size(*t) == 0, item.key());
    }
  }
  // No temporary file is left behind.
  int files = 0;
  for ([[maybe_unused]] auto const& e : fs::directory_iterator(dir.path)) {
    ++files;
  }
  CHECK(files == 1);

  // Saving again over an existing file replaces it.
  io::st_file small;
  small.tensors["x"] = io::from_floats({2}, std::vector<float>{1.f, 2.f});
  io::save_safetensors(path, small);
  CHECK(io::load_safetensors(path) == small);
  CHECK(io::load_safetensors(path).metadata.empty());
}

TEST_CASE("safetensors: BF16 stores round to nearest even; F16 and BF16 load exactly") {
  float const one = 1.0f;
  float const tie_down = 1.0f + std::ldexp(1.0f, -8);    // halfway between 1 and 1+2^-7: even is 1
  float const tie_up = 1.0f + 3 * std::ldexp(1.0f, -8);  // halfway between 1+2^-7 and 1+2^-6: even is 1+2^-6
  float const above = 1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20);  // just above the tie: rounds up
  float const big = 3.0e38f;
  std::vector<float> const in{one, tie_down, tie_up, above, -tie_up, big, 0.0f};
  auto const t = io::from_floats({7}, in, st_dtype::bf16);
  CHECK(t.bytes.size() == 14);
  auto const out = io::to_floats(t);
  CHECK(out[0] == 1.0f);
  CHECK(out[1] == 1.0f);
  CHECK(out[2] == 1.0f + std::ldexp(1.0f, -6));
  CHECK(out[3] == 1.0f + std::ldexp(1.0f, -7));
  CHECK(out[4] == -(1.0f + std::ldexp(1.0f, -6)));
  CHECK(std::abs(out[5] - big) <= std::ldexp(big, -8));
  CHECK(out[6] == 0.0f);
  for (float v : out) {  // every stored value is exactly a bfloat16: low 16 bits zero
    std::uint32_t u = 0;
    std::memcpy(&u, &v, 4);
    CHECK((u & 0xFFFFu) == 0);
  }

  // F16 bit patterns and their exact values: 1, -2, 65504 (largest), 2^-24 (smallest subnormal), 2^-14, +inf, NaN.
  std::vector<std::uint16_t> const halves{0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x7C00, 0x7E00, 0x03FF};
  io::st_tensor h{st_dtype::f16, {8}, std::vector<std::byte>(16)};
  std::memcpy(h.bytes.data(), halves.data(), 16);
  auto const hv = io::to_floats(h);
  CHECK(hv[0] == 1.0f);
  CHECK(hv[1] == -2.0f);
  CHECK(hv[2] == 65504.0f);
  CHECK(hv[3] == std::ldexp(1.0f, -24));
  CHECK(hv[4] == std::ldexp(1.0f, -14));
  CHECK(std::isinf(hv[5]));
  CHECK(std::isnan(hv[6]));
  CHECK(hv[7] == std::ldexp(1023.0f, -24));

  // Integer tensors load, but are not floating data.
  io::st_tensor const ints{st_dtype::i64, {2}, std::vector<std::byte>(16)};
  CHECK_THROWS_WITH_AS((void)io::to_floats(ints), doctest::Contains("not a floating type"), ssmlen::error);
}

TEST_CASE("safetensors: conversions to and from library tensors") {
  ssmlen::tensor<float> x(ssmlen::extents{2, 3, 4});
  auto const v = ramp(24, 0.5f);
  std::copy(v.begin(), v.end(), x.begin());
  auto const t = io::from_tensor(x);
  CHECK(t.shape == std::vector<std::int64_t>{2, 3, 4});
  auto const y = io::to_tensor(t);
  CHECK(y.shape() == x.shape());
  CHECK(std::equal(y.begin(), y.end(), x.begin()));
  io::st_tensor const r5{st_dtype::f32, {1, 1, 1, 1, 2}, std::vector<std::byte>(8)};
  CHECK_THROWS_WITH_AS((void)io::to_tensor(r5), doctest::Contains("rank at most 4"), ssmlen::error);

  io::st_file f;
  f.tensors["w"] = t;
  CHECK(&io::expect_tensor(f, "w", {2, 3, 4}) == &f.tensors.at("w"));
  CHECK_THROWS_WITH_AS((void)io::expect_tensor(f, "w", {2, 12}), doctest::Contains("expected [2, 12]"), ssmlen::error);
  CHECK_THROWS_WITH_AS((void)io::expect_tensor(f, "v", {2}), doctest::Contains("no tensor 'v'"), ssmlen::error);
}

TEST_CASE("safetensors: save refuses inconsistent tensors and unwritable places, leaving nothing behind") {
  temp_dir dir;
  io::st_file f;
  f.tensors["x"] = io::st_tensor{st_dtype::f32, {2, 3}, std::vector<std::byte>(20)};  // needs 24
  CHECK_THROWS_WITH_AS(io::save_safetensors(dir / "a.safetensors", f), doctest::Contains("x' bytes = 20"),
                       ssmlen::error);
  f.tensors.clear();
  f.tensors["__metadata__"] = io::from_floats({1}, std::vector<float>{1.f});
  CHECK_THROWS_AS(io::save_safetensors(dir / "a.safetensors", f), ssmlen::error);
  f.tensors.clear();
  f.tensors["x"] = io::from_floats({1}, std::vector<float>{1.f});
  CHECK_THROWS_WITH_AS(io::save_safetensors(dir / "missing_dir" / "a.safetensors", f),
                       doctest::Contains("cannot create the temporary file"), ssmlen::error);
  CHECK_THROWS_AS((void)io::from_floats({2, 2}, std::vector<float>{1.f}), ssmlen::error);
  CHECK_THROWS_AS((void)io::from_floats({-1}, {}), ssmlen::error);
  CHECK_THROWS_AS((void)io::from_floats({1}, std::vector<float>{1.f}, st_dtype::i32), ssmlen::error);

  // A directory in the way of the rename: the write fails and the temporary file is removed.
  fs::create_directories(dir / "taken.safetensors" / "child");
  CHECK_THROWS_WITH_AS(io::save_safetensors(dir / "taken.safetensors", f), doctest::Contains("cannot rename"),
                       ssmlen::error);
  int files = 0;
  for ([[maybe_unused]] auto const& e : fs::directory_iterator(dir.path)) {
    ++files;
  }
  CHECK(files == 1);  // only the directory that blocked it
}

TEST_CASE("safetensors: corrupt files are refused with the file and the problem named") {
  temp_dir dir;
  auto const p = dir / "bad.safetensors";
  std::string const ok_entry = R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";

  SUBCASE("missing file") { CHECK_REFUSED(p, "cannot open"); }
  SUBCASE("shorter than 8 bytes") {
    write_bytes(p, std::vector<std::byte>(5));
    CHECK_REFUSED(p, "shorter than the 8-byte header length");
  }
  SUBCASE("header length larger than the file") {
    write_raw(p, 1000, "{" + ok_entry + "}", 24);
    CHECK_REFUSED(p, "larger than the file");
  }
  SUBCASE("absurd header length") {
    write_raw(p, std::uint64_t{1} << 40, "{}", 0);
    CHECK_REFUSED(p, "absurd");
  }
  SUBCASE("header not JSON") {
    write_raw(p, "{\"w\": {\"dtype\": \"F32\",", 0);
    CHECK_REFUSED(p, "not valid JSON");
  }
  SUBCASE("header not an object") {
    write_raw(p, "[1, 2, 3]", 0);
    CHECK_REFUSED(p, "not a JSON object");
  }
  SUBCASE("entry not an object") {
    write_raw(p, R"({"w": [1, 2]})", 0);
    CHECK_REFUSED(p, "tensor 'w': header entry is not a JSON object");
  }
  SUBCASE("missing fields") {
    write_raw(p, R"({"w":{"shape":[2,3],"data_offsets":[0,24]}})", 24);
    CHECK_REFUSED(p, "missing field 'dtype'");
    write_raw(p, R"({"w":{"dtype":"F32","data_offsets":[0,24]}})", 24);
    CHECK_REFUSED(p, "missing field 'shape'");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[2,3]}})", 24);
    CHECK_REFUSED(p, "missing field 'data_offsets'");
  }
  SUBCASE("unknown dtype") {
    write_raw(p, R"({"w":{"dtype":"F24","shape":[2,3],"data_offsets":[0,24]}})", 24);
    CHECK_REFUSED(p, "unknown dtype \"F24\"");
    write_raw(p, R"({"w":{"dtype":4,"shape":[2,3],"data_offsets":[0,24]}})", 24);
    CHECK_REFUSED(p, "dtype must be a string");
  }
  SUBCASE("negative or non-integer shape") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[-2,-3],"data_offsets":[0,24]}})", 24);
    CHECK_REFUSED(p, "negative entry -2");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[2,3.5],"data_offsets":[0,24]}})", 24);
    CHECK_REFUSED(p, "non-negative integers");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,24]}})", 24);
    CHECK_REFUSED(p, "too large");
  }
  SUBCASE("data_offsets not matching dtype size x element count") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}})", 12);
    CHECK_REFUSED(p, "do not match dtype F32 x shape [2, 3] = 24 bytes");
    write_raw(p, R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,24]}})", 24);
    CHECK_REFUSED(p, "= 12 bytes");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[24,0]}})", 24);
    CHECK_REFUSED(p, "do not match");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0]}})", 24);
    CHECK_REFUSED(p, "data_offsets must be a list [begin, end]");
  }
  SUBCASE("offsets out of the data section") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}})", 24);
    CHECK_REFUSED(p, "out of the data section (24 bytes)");
  }
  SUBCASE("overlapping tensors") {
    write_raw(p,
              R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
              R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
              24);
    CHECK_REFUSED(p, "tensors 'a' and 'b' overlap");
  }
  SUBCASE("gap between tensors") {
    write_raw(p,
              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
              20);
    CHECK_REFUSED(p, "gap of 4 bytes");
    write_raw(p, R"({"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
    CHECK_REFUSED(p, "gap of 4 bytes in the data section before tensor 'b'");
  }
  SUBCASE("trailing bytes") {
    write_raw(p, "{" + ok_entry + "}", 30);
    CHECK_REFUSED(p, "6 trailing bytes");
    write_raw(p, "{}", 1);
    CHECK_REFUSED(p, "1 trailing bytes");
  }
  SUBCASE("metadata that is not a map of strings") {
    write_raw(p, R"({"__metadata__":{"step":3}})", 0);
    CHECK_REFUSED(p, "__metadata__ value for 'step' is not a string");
    write_raw(p, R"({"__metadata__":"pt"})", 0);
    CHECK_REFUSED(p, "__metadata__ must be a JSON object");
  }
  SUBCASE("well-formed edge cases load") {
    write_raw(p, "{}      ", 0);  // no tensors, header padded with spaces
    CHECK(io::load_safetensors(p).tensors.empty());
    write_raw(p, R"({"e":{"dtype":"F32","shape":[0,7],"data_offsets":[24,24]},)" + ok_entry + "}  ", 24);
    auto const f = io::load_safetensors(p);
    CHECK(f.tensors.size() == 2);
    CHECK(f.tensors.at("e").bytes.empty());
    CHECK(f.tensors.at("w").bytes.size() == 24);
  }
}

TEST_CASE("safetensors: every truncation or header-length corruption of a valid file is refused") {
  temp_dir dir;
  io::st_file f;
  f.tensors["a"] = io::from_floats({3}, ramp(3, 1.f));
  f.tensors["b"] = io::from_floats({2, 2}, ramp(4, 2.f), st_dtype::bf16);
  f.metadata["format"] = "pt";
  auto const good = dir / "good.safetensors";
  io::save_safetensors(good, f);
  auto const bytes = read_bytes(good);
  auto const p = dir / "cut.safetensors";
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(p, std::vector<std::byte>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
    CHECK_THROWS_AS((void)io::load_safetensors(p), ssmlen::error);
  }
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  for (std::uint64_t wrong : {n - 8, n - 1, n + 1, n + 8, std::uint64_t{0}}) {
    auto b = bytes;
    std::memcpy(b.data(), &wrong, 8);
    write_bytes(p, b);
    CHECK_THROWS_AS((void)io::load_safetensors(p), ssmlen::error);
  }
}

namespace {

//! The parameter names and shapes of mamba_ssm's MambaLMHeadModel for a fixture's config.
std::map<std::string, std::vector<std::int64_t>> mamba_layout(nlohmann::json const& c) {
  std::int64_t const V = c["vocab_size"], D = c["d_model"], N = c["d_state"], K = c["d_conv"], R = c["dt_rank"];
  std::int64_t const ED = c["expand"].get<std::int64_t>() * D;
  REQUIRE(ED == c["d_inner"].get<std::int64_t>());
  std::map<std::string, std::vector<std::int64_t>> m;
  m["backbone.embedding.weight"] = {V, D};
  for (int i = 0; i < c["n_layer"].get<int>(); ++i) {
    auto const l = "backbone.layers." + std::to_string(i) + ".";
    m[l + "norm.weight"] = {D};
    m[l + "mixer.in_proj.weight"] = {2 * ED, D};
    m[l + "mixer.conv1d.weight"] = {ED, 1, K};
    m[l + "mixer.conv1d.bias"] = {ED};
    m[l + "mixer.x_proj.weight"] = {R + 2 * N, ED};
    m[l + "mixer.dt_proj.weight"] = {ED, R};
    m[l + "mixer.dt_proj.bias"] = {ED};
    m[l + "mixer.A_log"] = {ED, N};
    m[l + "mixer.D"] = {ED};
    m[l + "mixer.out_proj.weight"] = {D, ED};
  }
  m["backbone.norm_f.weight"] = {D};
  if (!c["tie_embeddings"].get<bool>()) {
    m["lm_head.weight"] = {V, D};
  }
  return m;
}

}  // namespace

TEST_CASE("safetensors: the PyTorch-written Mamba fixtures load with mamba_ssm names, shapes and F32 dtype") {
  temp_dir dir;
  for (char const* name : {"tiny_mamba", "tiny_mamba_untied", "tiny_mamba_r3"}) {
    CAPTURE(name);
    fs::path const fixtures = SSMLEN_TEST_DATA_DIR;
    std::ifstream in(fixtures / (std::string(name) + ".logits.json"));
    REQUIRE(in.good());
    auto const ref = nlohmann::json::parse(in);
    auto const& cfg = ref["config"];
    auto const f = io::load_safetensors(fixtures / cfg["safetensors"].get<std::string>());

    // Like a PyTorch export: no library metadata.
    CHECK((f.metadata.empty() || f.metadata == std::map<std::string, std::string>{{"format", "pt"}}));
    auto const layout = mamba_layout(cfg);
    std::set<std::string> names, expected;
    for (auto const& [k, t] : f.tensors) {
      names.insert(k);
    }
    for (auto const& [k, s] : layout) {
      expected.insert(k);
    }
    CHECK(names == expected);
    for (auto const& entry : layout) {
      auto const& [k, shape] = entry;
      CAPTURE(entry.first);
      auto const& t = io::expect_tensor(f, k, shape);
      CHECK(t.type == st_dtype::f32);
      auto const v = io::to_floats(t);
      CHECK(std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); }));
      CHECK(std::any_of(v.begin(), v.end(), [&](float x) { return x != v[0]; }));  // random, not constant
    }
    // The reference output matches the config.
    auto const L = static_cast<std::int64_t>(ref["tokens"].size());
    CHECK(L == 23);
    CHECK(static_cast<std::int64_t>(ref["logits"].size()) == L);
    CHECK(ref["logits"][0].size() == cfg["vocab_size"].get<std::size_t>());
    for (auto const& tok : ref["tokens"]) {
      CHECK(tok.get<std::int64_t>() >= 0);
      CHECK(tok.get<std::int64_t>() < cfg["vocab_size"].get<std::int64_t>());
    }
    // Written back by ssmlen, the file loads identically.
    io::save_safetensors(dir / "copy.safetensors", f);
    CHECK(io::load_safetensors(dir / "copy.safetensors") == f);
  }
}

TEST_CASE("safetensors: a file from the format's reference writer (safetensors.torch.save_file) loads exactly") {
  // Written by tests/make_mamba_fixture.py --reference-writer; the values follow the formulas documented there.
  auto const f = io::load_safetensors(fs::path(SSMLEN_TEST_DATA_DIR) / "reference_writer.safetensors");
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"writer", "safetensors.torch.save_file"}});
  CHECK(f.tensors.size() == 8);
  auto check_values = [&](std::string const& name, st_dtype type, std::vector<std::int64_t> const& shape, auto value) {
    CAPTURE(name);
    auto const& t = io::expect_tensor(f, name, shape);
    CHECK(t.type == type);
    auto const v = io::to_doubles(t);
    REQUIRE(static_cast<std::int64_t>(v.size()) == t.numel());
    for (std::size_t i = 0; i < v.size(); ++i) {
      CHECK(v[i] == value(static_cast<double>(i)));
    }
  };
  check_values("f32", st_dtype::f32, {3, 4}, [](double i) { return i / 4 - 1; });
  check_values("bf16", st_dtype::bf16, {10}, [](double i) { return i / 2 - 2; });
  check_values("f16", st_dtype::f16, {2, 3}, [](double i) { return i / 8 - 0.25; });
  check_values("f64", st_dtype::f64, {5}, [](double i) { return i / 3; });
  check_values("empty", st_dtype::f32, {0, 3}, [](double) { return 0.0; });
  check_values("scalar", st_dtype::f32, {}, [](double) { return 2.5; });

  auto const& i64 = io::expect_tensor(f, "i64", {7});
  REQUIRE(i64.type == st_dtype::i64);
  for (std::int64_t i = 0; i < 7; ++i) {
    std::int64_t v = 0;
    std::memcpy(&v, i64.bytes.data() + 8 * i, 8);
    CHECK(v == i - 3);
  }
  auto const& u8 = io::expect_tensor(f, "u8", {5});
  REQUIRE(u8.type == st_dtype::u8);
  for (int i = 0; i < 5; ++i) {
    CHECK(std::to_integer<int>(u8.bytes[static_cast<std::size_t>(i)]) == 250 + i);
  }
}
