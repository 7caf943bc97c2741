// SPDX-License-Identifier: Apache-2.0
//! @file safetensors.hpp
//! Reading and writing the safetensors checkpoint format, so that parameters travel between ssmlen and PyTorch /
//! Hugging Face unchanged. Layout: an 8-byte little-endian header length N, N bytes of JSON
//! (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`), then the raw,
//! tightly packed, little-endian tensor data; offsets count from the start of the data section.
//! Loading refuses any malformed or truncated file with a message naming the file and the problem; saving is
//! atomic (a temporary file in the same directory, flushed and synced, then renamed over the target).
#pragma once

#include <ssmlen/core/bfloat16.hpp>
#include <ssmlen/core/error.hpp>
#include <ssmlen/core/tensor.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <unistd.h>  // getpid, fsync
#include <utility>
#include <vector>

namespace ssmlen::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; only such hosts");

//! Element types of the safetensors format (the common set; 8-bit floats and complex types are not read).
enum class st_dtype { boolean, u8, i8, u16, i16, f16, bf16, u32, i32, f32, u64, i64, f64 };

namespace detail {
struct st_dtype_info {
  st_dtype type;
  std::string_view name;
  std::int64_t size;
};
// Indexed by the enumerator's value.
inline constexpr std::array<st_dtype_info, 13> st_dtypes{{{st_dtype::boolean, "BOOL", 1},
                                                          {st_dtype::u8, "U8", 1},
                                                          {st_dtype::i8, "I8", 1},
                                                          {st_dtype::u16, "U16", 2},
                                                          {st_dtype::i16, "I16", 2},
                                                          {st_dtype::f16, "F16", 2},
                                                          {st_dtype::bf16, "BF16", 2},
                                                          {st_dtype::u32, "U32", 4},
                                                          {st_dtype::i32, "I32", 4},
                                                          {st_dtype::f32, "F32", 4},
                                                          {st_dtype::u64, "U64", 8},
                                                          {st_dtype::i64, "I64", 8},
                                                          {st_dtype::f64, "F64", 8}}};
static_assert(st_dtypes[static_cast<std::size_t>(st_dtype::f64)].type == st_dtype::f64);
}  // namespace detail

//! The format's name of a dtype ("F32", "BF16", ...).
[[nodiscard]] inline std::string_view st_dtype_name(st_dtype t) {
  return detail::st_dtypes.at(static_cast<std::size_t>(t)).name;
}

//! Bytes per element.
[[nodiscard]] inline std::int64_t st_dtype_size(st_dtype t) {
  return detail::st_dtypes.at(static_cast<std::size_t>(t)).size;
}

//! The dtype with the format's name `name`, or nothing when the name is not one of the supported set.
[[nodiscard]] inline std::optional<st_dtype> parse_st_dtype(std::string_view name) {
  for (auto const& d : detail::st_dtypes) {
    if (d.name == name) {
      return d.type;
    }
  }
  return std::nullopt;
}

//! The storage type a library dtype is written as.
[[nodiscard]] inline st_dtype to_st_dtype(dtype t) {
  switch (t) {
  case dtype::bf16:
    return st_dtype::bf16;
  case dtype::f64:
    return st_dtype::f64;
  default:
    return st_dtype::f32;
  }
}

namespace detail {

inline std::string shape_str(std::span<std::int64_t const> shape) {
  std::ostringstream s;
  s << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) {
    s << (i ? ", " : "") << shape[i];
  }
  s << ']';
  return s.str();
}

//! Elements in `shape`, or nothing when an extent is negative or the count would exceed 2^62.
inline std::optional<std::int64_t> checked_numel(std::span<std::int64_t const> shape) {
  constexpr std::int64_t limit = std::int64_t{1} << 62;
  if (std::ranges::any_of(shape, [](std::int64_t d) { return d < 0; })) {
    return std::nullopt;
  }
  if (std::ranges::find(shape, std::int64_t{0}) != shape.end()) {
    return 0;
  }
  std::int64_t n = 1;
  for (auto d : shape) {
    if (n > limit / d) {
      return std::nullopt;
    }
    n *= d;
  }
  return n;
}

//! IEEE binary16 to float, exact (subnormals, infinities and NaN included).
inline float half_to_float(std::uint16_t h) {
  std::uint32_t const sign = std::uint32_t{h & 0x8000u} << 16;
  std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t man = h & 0x3FFu;
  std::uint32_t u = 0;
  if (exp == 0x1Fu) {
    u = sign | 0x7F800000u | (man << 13);
  } else if (exp != 0) {
    u = sign | ((exp + 112u) << 23) | (man << 13);
  } else if (man != 0) {  // subnormal: normalize into float's range
    exp = 113u;
    while ((man & 0x400u) == 0) {
      man <<= 1;
      --exp;
    }
    u = sign | (exp << 23) | ((man & 0x3FFu) << 13);
  } else {
    u = sign;
  }
  return std::bit_cast<float>(u);
}

}  // namespace detail

//! One tensor as stored: dtype, row-major extents and the raw little-endian bytes.
struct st_tensor {
  st_dtype type = st_dtype::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;

  //! Elements (1 for a scalar of shape []).
  [[nodiscard]] std::int64_t numel() const {
    auto const n = detail::checked_numel(shape);
    check(n.has_value(), "tensor shape " + detail::shape_str(shape) + " is negative or too large");
    return *n;
  }

  friend bool operator==(st_tensor const&, st_tensor const&) = default;
};

//! A whole file: tensors by name and the free-form string metadata.
struct st_file {
  std::map<std::string, st_tensor> tensors;
  std::map<std::string, std::string> metadata;

  friend bool operator==(st_file const&, st_file const&) = default;
};

namespace detail {

template <class Out>
std::vector<Out> to_values(st_tensor const& t) {
  auto const n = static_cast<std::size_t>(t.numel());
  check(t.bytes.size() == n * static_cast<std::size_t>(st_dtype_size(t.type)),
        "tensor holds " + std::to_string(t.bytes.size()) + " bytes, which does not match dtype " +
            std::string(st_dtype_name(t.type)) + " x shape " + shape_str(t.shape));
  std::vector<Out> out(n);
  std::byte const* p = t.bytes.data();
  switch (t.type) {
  case st_dtype::f32:
    for (std::size_t i = 0; i < n; ++i) {
      float v = 0;
      std::memcpy(&v, p + 4 * i, 4);
      out[i] = static_cast<Out>(v);
    }
    break;
  case st_dtype::f64:
    for (std::size_t i = 0; i < n; ++i) {
      double v = 0;
      std::memcpy(&v, p + 8 * i, 8);
      out[i] = static_cast<Out>(v);
    }
    break;
  case st_dtype::bf16:
  case st_dtype::f16:
    for (std::size_t i = 0; i < n; ++i) {
      std::uint16_t b = 0;
      std::memcpy(&b, p + 2 * i, 2);
      out[i] = static_cast<Out>(t.type == st_dtype::bf16 ? bfloat16::to_float(b) : half_to_float(b));
    }
    break;
  default:
    throw error("tensor dtype " + std::string(st_dtype_name(t.type)) + " is not a floating type (F32, F64, BF16, F16)");
  }
  return out;
}

}  // namespace detail

//! The values of a floating tensor (F32, BF16, F16 exactly; F64 rounded to float).
[[nodiscard]] inline std::vector<float> to_floats(st_tensor const& t) { return detail::to_values<float>(t); }

//! The values of a floating tensor, widened to double (exact for every floating dtype).
[[nodiscard]] inline std::vector<double> to_doubles(st_tensor const& t) { return detail::to_values<double>(t); }

//! A tensor of dtype `type` (F32, BF16 rounded to nearest even, or F64) holding `values` with extents `shape`.
template <class T>
  requires std::same_as<T, float> || std::same_as<T, double>
[[nodiscard]] st_tensor from_values(std::vector<std::int64_t> shape, std::span<T const> values,
                                    st_dtype type = st_dtype::f32) {
  auto const n = detail::checked_numel(shape);
  check_arg(n.has_value(), "shape", detail::shape_str(shape), "extents must be non-negative and not overflow");
  check_arg(static_cast<std::int64_t>(values.size()) == *n, "values.size()", values.size(),
            "must equal the element count of shape " + detail::shape_str(shape));
  check_arg(type == st_dtype::f32 || type == st_dtype::bf16 || type == st_dtype::f64, "type", st_dtype_name(type),
            "values can be stored as F32, BF16 or F64");
  st_tensor t{type, std::move(shape), std::vector<std::byte>(values.size() * st_dtype_size(type))};
  std::byte* p = t.bytes.data();
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (type == st_dtype::f32) {
      auto const v = static_cast<float>(values[i]);
      std::memcpy(p + 4 * i, &v, 4);
    } else if (type == st_dtype::f64) {
      auto const v = static_cast<double>(values[i]);
      std::memcpy(p + 8 * i, &v, 8);
    } else {
      auto const b = bfloat16::from_float(static_cast<float>(values[i]));
      std::memcpy(p + 2 * i, &b, 2);
    }
  }
  return t;
}

//! `from_values` for float data (the usual case: parameters).
[[nodiscard]] inline st_tensor from_floats(std::vector<std::int64_t> shape, std::span<float const> values,
                                           st_dtype type = st_dtype::f32) {
  return from_values<float>(std::move(shape), values, type);
}

//! `from_values` for double data.
[[nodiscard]] inline st_tensor from_doubles(std::vector<std::int64_t> shape, std::span<double const> values,
                                            st_dtype type = st_dtype::f64) {
  return from_values<double>(std::move(shape), values, type);
}

//! A library tensor stored as `type`.
[[nodiscard]] inline st_tensor from_tensor(tensor<float> const& x, st_dtype type = st_dtype::f32) {
  std::vector<std::int64_t> shape(static_cast<std::size_t>(x.shape().rank()));
  for (int i = 0; i < x.shape().rank(); ++i) {
    shape[static_cast<std::size_t>(i)] = x.shape()[i];
  }
  return from_floats(std::move(shape), std::span<float const>(x.data(), static_cast<std::size_t>(x.size())), type);
}

//! A stored floating tensor of rank 1..4 as a library tensor of floats.
[[nodiscard]] inline tensor<float> to_tensor(st_tensor const& t) {
  check_arg(t.shape.size() <= static_cast<std::size_t>(extents::max_rank), "shape", detail::shape_str(t.shape),
            "library tensors have rank at most 4");
  extents e;
  switch (t.shape.size()) {
  case 0:
    e = extents{};
    break;
  case 1:
    e = extents{t.shape[0]};
    break;
  case 2:
    e = extents{t.shape[0], t.shape[1]};
    break;
  case 3:
    e = extents{t.shape[0], t.shape[1], t.shape[2]};
    break;
  default:
    e = extents{t.shape[0], t.shape[1], t.shape[2], t.shape[3]};
    break;
  }
  auto const values = to_floats(t);
  tensor<float> out(e);
  std::copy(values.begin(), values.end(), out.begin());
  return out;
}

//! The tensor `name` of `f`, checked to have extents `shape`; throws naming the tensor when it is absent or differs.
[[nodiscard]] inline st_tensor const& expect_tensor(st_file const& f, std::string const& name,
                                                    std::span<std::int64_t const> shape) {
  auto const it = f.tensors.find(name);
  check(it != f.tensors.end(), "checkpoint has no tensor '" + name + "'");
  check(std::ranges::equal(it->second.shape, shape), "tensor '" + name + "' has shape " +
                                                         detail::shape_str(it->second.shape) + ", expected " +
                                                         detail::shape_str(shape));
  return it->second;
}

//! `expect_tensor` with the extents written inline: `expect_tensor(f, "backbone.norm_f.weight", {d_model})`.
[[nodiscard]] inline st_tensor const& expect_tensor(st_file const& f, std::string const& name,
                                                    std::initializer_list<std::int64_t> shape) {
  return expect_tensor(f, name, std::span<std::int64_t const>(shape.begin(), shape.size()));
}

//! Largest header accepted on load: more is a corrupt length field, not a real checkpoint.
inline constexpr std::uint64_t st_max_header_bytes = 100'000'000;

namespace detail {

//! Throws `error("<file>: <problem>")`.
[[noreturn]] inline void st_fail(std::filesystem::path const& file, std::string const& problem) {
  throw error(file.string() + ": " + problem);
}

inline std::int64_t st_nonneg_int(nlohmann::json const& v, std::filesystem::path const& file, std::string const& what) {
  if (v.is_number_unsigned() && v.get<std::uint64_t>() <= std::uint64_t{std::numeric_limits<std::int64_t>::max()}) {
    return static_cast<std::int64_t>(v.get<std::uint64_t>());
  }
  if (v.is_number_integer() && !v.is_number_unsigned()) {
    auto const i = v.get<std::int64_t>();
    if (i < 0) {
      st_fail(file, what + " has negative entry " + std::to_string(i));
    }
    return i;
  }
  st_fail(file, what + " must hold non-negative integers, found " + v.dump());
}

struct st_entry {
  std::string name;
  st_dtype type;
  std::vector<std::int64_t> shape;
  std::int64_t begin;
  std::int64_t end;
};

inline st_entry st_parse_entry(std::string const& name, nlohmann::json const& v, std::filesystem::path const& file) {
  std::string const where = "tensor '" + name + "'";
  if (!v.is_object()) {
    st_fail(file, where + ": header entry is not a JSON object");
  }
  for (char const* field : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(field)) {
      st_fail(file, where + ": missing field '" + field + "'");
    }
  }
  auto const& d = v["dtype"];
  if (!d.is_string()) {
    st_fail(file, where + ": dtype must be a string, found " + d.dump());
  }
  auto const type = parse_st_dtype(d.get<std::string>());
  if (!type) {
    st_fail(file, where + ": unknown dtype " + d.dump());
  }
  auto const& s = v["shape"];
  if (!s.is_array()) {
    st_fail(file, where + ": shape must be a list, found " + s.dump());
  }
  std::vector<std::int64_t> shape;
  for (auto const& e : s) {
    shape.push_back(st_nonneg_int(e, file, where + ": shape"));
  }
  auto const& o = v["data_offsets"];
  if (!o.is_array() || o.size() != 2) {
    st_fail(file, where + ": data_offsets must be a list [begin, end], found " + o.dump());
  }
  auto const begin = st_nonneg_int(o[0], file, where + ": data_offsets");
  auto const end = st_nonneg_int(o[1], file, where + ": data_offsets");
  return {name, *type, std::move(shape), begin, end};
}

}  // namespace detail

//! Reads and validates a safetensors file; every problem throws `ssmlen::error` naming the file.
[[nodiscard]] inline st_file load_safetensors(std::filesystem::path const& file) {
  using detail::st_fail;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> fp(std::fopen(file.c_str(), "rb"), &std::fclose);
  if (!fp) {
    st_fail(file, std::string("cannot open for reading: ") + std::strerror(errno));
  }
  std::error_code ec;
  auto const file_size = std::filesystem::file_size(file, ec);
  if (ec) {
    st_fail(file, "cannot read the file size: " + ec.message());
  }
  if (file_size < 8) {
    st_fail(file, "file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  }
  std::uint64_t header_len = 0;
  if (std::fread(&header_len, 8, 1, fp.get()) != 1) {
    st_fail(file, "cannot read the header length");
  }
  if (header_len > st_max_header_bytes) {
    st_fail(file, "header length " + std::to_string(header_len) + " is absurd (more than 100 MB)");
  }
  if (header_len > file_size - 8) {
    st_fail(file, "header length " + std::to_string(header_len) + " is larger than the file (" +
                      std::to_string(file_size) + " bytes)");
  }
  std::string text(header_len, '\0');
  if (header_len != 0 && std::fread(text.data(), 1, header_len, fp.get()) != header_len) {
    st_fail(file, "cannot read the header (file truncated while reading?)");
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (nlohmann::json::exception const& e) {
    st_fail(file, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) {
    st_fail(file, "header is not a JSON object");
  }

  auto const data_size = static_cast<std::int64_t>(file_size - 8 - header_len);
  st_file out;
  std::vector<detail::st_entry> entries;
  for (auto const& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) {
        st_fail(file, "__metadata__ must be a JSON object of strings");
      }
      for (auto const& [k, s] : v.items()) {
        if (!s.is_string()) {
          st_fail(file, "__metadata__ value for '" + k + "' is not a string");
        }
        out.metadata.emplace(k, s.get<std::string>());
      }
      continue;
    }
    auto e = detail::st_parse_entry(name, v, file);
    std::string const where = "tensor '" + name + "'";
    auto const numel = detail::checked_numel(e.shape);
    if (!numel || *numel > data_size) {
      st_fail(file, where + ": shape " + detail::shape_str(e.shape) + " is too large for the data section (" +
                        std::to_string(data_size) + " bytes)");
    }
    auto const need = *numel * st_dtype_size(e.type);
    if (e.begin > e.end || e.end - e.begin != need) {
      st_fail(file, where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                        "] do not match dtype " + std::string(st_dtype_name(e.type)) + " x shape " +
                        detail::shape_str(e.shape) + " = " + std::to_string(need) + " bytes");
    }
    if (e.end > data_size) {
      st_fail(file, where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                        "] are out of the data section (" + std::to_string(data_size) + " bytes)");
    }
    entries.push_back(std::move(e));
  }

  // The format requires the tensors to cover the data section exactly: no overlap, no gap, nothing after.
  std::sort(entries.begin(), entries.end(),
            [](auto const& a, auto const& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  std::int64_t cursor = 0;
  std::string previous;
  for (auto const& e : entries) {
    if (e.begin < cursor) {
      st_fail(file, "tensors '" + previous + "' and '" + e.name + "' overlap in the data section");
    }
    if (e.begin > cursor) {
      st_fail(file, "gap of " + std::to_string(e.begin - cursor) + " bytes in the data section before tensor '" +
                        e.name + "' (offset " + std::to_string(e.begin) + ")");
    }
    if (e.end > e.begin) {
      previous = e.name;
    }
    cursor = e.end;
  }
  if (cursor != data_size) {
    st_fail(file, std::to_string(data_size - cursor) + " trailing bytes beyond the last tensor (data section is " +
                      std::to_string(data_size) + " bytes, tensors cover " + std::to_string(cursor) + ")");
  }

  // Tensors are contiguous and sorted by offset now, so one sequential pass reads them.
  for (auto& e : entries) {
    std::vector<std::byte> bytes(static_cast<std::size_t>(e.end - e.begin));
    if (!bytes.empty() && std::fread(bytes.data(), 1, bytes.size(), fp.get()) != bytes.size()) {
      st_fail(file, "cannot read tensor '" + e.name + "' (file truncated while reading?)");
    }
    out.tensors.emplace(e.name, st_tensor{e.type, std::move(e.shape), std::move(bytes)});
  }
  return out;
}

//! Writes `f` to `file` atomically: `<file>.tmp-<pid>` in the same directory, flushed and synced, then renamed.
//! Tensors are laid out by decreasing element size, then name, so every tensor is aligned to its element size.
inline void save_safetensors(std::filesystem::path const& file, st_file const& f) {
  check_arg(file.has_filename(), "file", file.string(), "must name a file");
  std::vector<std::pair<std::string const*, st_tensor const*>> order;
  for (auto const& [name, t] : f.tensors) {
    check_arg(!name.empty() && name != "__metadata__", "tensor name", "'" + name + "'",
              "must be non-empty and not __metadata__");
    auto const numel = detail::checked_numel(t.shape);
    check_arg(numel.has_value(), "tensor '" + name + "' shape", detail::shape_str(t.shape),
              "extents must be non-negative and not overflow");
    auto const need = static_cast<std::size_t>(*numel * st_dtype_size(t.type));
    check_arg(t.bytes.size() == need, "tensor '" + name + "' bytes", t.bytes.size(),
              "must equal dtype " + std::string(st_dtype_name(t.type)) + " x shape " + detail::shape_str(t.shape) +
                  " = " + std::to_string(need));
    order.emplace_back(&name, &t);
  }
  std::stable_sort(order.begin(), order.end(), [](auto const& a, auto const& b) {
    return st_dtype_size(a.second->type) > st_dtype_size(b.second->type);
  });

  nlohmann::json header = nlohmann::json::object();
  if (!f.metadata.empty()) {
    header["__metadata__"] = f.metadata;
  }
  std::int64_t offset = 0;
  for (auto const& [name, t] : order) {
    auto const n = static_cast<std::int64_t>(t->bytes.size());
    header[*name] = {
        {"dtype", std::string(st_dtype_name(t->type))}, {"shape", t->shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  std::uint64_t const header_len = text.size();

  auto const tmp = file.parent_path() / (file.filename().string() + ".tmp-" + std::to_string(::getpid()));
  struct remove_guard {
    std::filesystem::path const& p;
    bool armed = true;
    ~remove_guard() {
      if (armed) {
        std::error_code ignored;
        std::filesystem::remove(p, ignored);
      }
    }
  } guard{tmp};
  auto fail = [&](char const* what, int err) {
    throw error(file.string() + ": " + what + " " + tmp.string() + ": " + std::strerror(err));
  };

  std::FILE* fp = std::fopen(tmp.c_str(), "wb");
  if (fp == nullptr) {
    fail("cannot create the temporary file", errno);
  }
  int err = 0;  // the first failure's errno
  auto write = [&](void const* p, std::size_t n) {
    if (err == 0 && n != 0 && std::fwrite(p, 1, n, fp) != n) {
      err = errno != 0 ? errno : EIO;
    }
  };
  write(&header_len, 8);
  write(text.data(), text.size());
  for (auto const& [name, t] : order) {
    write(t->bytes.data(), t->bytes.size());
  }
  if (err == 0 && (std::fflush(fp) != 0 || ::fsync(::fileno(fp)) != 0)) {
    err = errno != 0 ? errno : EIO;
  }
  if (std::fclose(fp) != 0 && err == 0) {
    err = errno != 0 ? errno : EIO;
  }
  if (err != 0) {
    fail("cannot write the temporary file", err);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) {
    throw error(file.string() + ": cannot rename " + tmp.string() + " into place: " + ec.message());
  }
  guard.armed = false;
}

}  // namespace ssmlen::io
