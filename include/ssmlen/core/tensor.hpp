// SPDX-License-Identifier: Apache-2.0
//! @file tensor.hpp
//! Dense row-major tensors of rank 1..4: `tensor<T>` owns its elements,
//! `tensor_view<T>` borrows them. Shapes are checked on construction and on
//! every checked access; hot loops take `data()` and index themselves.
#pragma once

#include <ssmlen/core/error.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

namespace ssmlen {

//! The shape of a tensor: up to four non-negative extents.
class extents {
public:
  static constexpr int max_rank = 4;

  extents() = default;
  extents(std::initializer_list<std::int64_t> dims) {
    check_arg(dims.size() <= max_rank, "rank", dims.size(), "tensors have rank at most 4");
    for (auto d : dims) {
      check_arg(d >= 0, "extent", d, "must be non-negative");
      dims_[rank_++] = d;
    }
  }

  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] std::int64_t operator[](int i) const { return dims_[i]; }
  [[nodiscard]] std::int64_t size() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank_; ++i) {
      n *= dims_[i];
    }
    return n;
  }
  [[nodiscard]] std::string str() const {
    std::ostringstream s;
    s << '[';
    for (int i = 0; i < rank_; ++i) {
      s << (i ? ", " : "") << dims_[i];
    }
    s << ']';
    return s.str();
  }
  friend bool operator==(extents const& a, extents const& b) {
    if (a.rank_ != b.rank_) {
      return false;
    }
    for (int i = 0; i < a.rank_; ++i) {
      if (a.dims_[i] != b.dims_[i]) {
        return false;
      }
    }
    return true;
  }

private:
  std::array<std::int64_t, max_rank> dims_{};
  int rank_ = 0;
};

namespace detail {
template <class... I>
std::int64_t checked_offset(extents const& e, I... idx) {
  std::array<std::int64_t, sizeof...(I)> const ix{static_cast<std::int64_t>(idx)...};
  check_arg(static_cast<int>(ix.size()) == e.rank(), "index rank", ix.size(), "must equal tensor rank " + e.str());
  std::int64_t off = 0;
  for (int i = 0; i < e.rank(); ++i) {
    if (ix[i] < 0 || ix[i] >= e[i]) {
      std::ostringstream s;
      s << "index " << ix[i] << " out of range for dimension " << i << " of shape " << e.str();
      throw error(s.str());
    }
    off = off * e[i] + ix[i];
  }
  return off;
}
}  // namespace detail

//! A non-owning view of a dense row-major tensor.
template <class T>
class tensor_view {
public:
  tensor_view() = default;
  tensor_view(T* data, extents shape) : data_(data), shape_(shape) {}

  [[nodiscard]] T* data() const { return data_; }
  [[nodiscard]] extents const& shape() const { return shape_; }
  [[nodiscard]] std::int64_t size() const { return shape_.size(); }
  [[nodiscard]] std::int64_t dim(int i) const { return shape_[i]; }
  template <class... I>
  T& at(I... idx) const {
    return data_[detail::checked_offset(shape_, idx...)];
  }

private:
  T* data_ = nullptr;
  extents shape_;
};

//! An owning dense row-major tensor, zero-initialized.
template <class T>
class tensor {
public:
  tensor() = default;
  explicit tensor(extents shape, T fill = T{}) : data_(static_cast<std::size_t>(shape.size()), fill), shape_(shape) {}

  [[nodiscard]] T* data() { return data_.data(); }
  [[nodiscard]] T const* data() const { return data_.data(); }
  [[nodiscard]] extents const& shape() const { return shape_; }
  [[nodiscard]] std::int64_t size() const { return shape_.size(); }
  [[nodiscard]] std::int64_t dim(int i) const { return shape_[i]; }
  [[nodiscard]] T* begin() { return data_.data(); }
  [[nodiscard]] T* end() { return data_.data() + data_.size(); }
  [[nodiscard]] T const* begin() const { return data_.data(); }
  [[nodiscard]] T const* end() const { return data_.data() + data_.size(); }
  T& operator[](std::int64_t i) { return data_[static_cast<std::size_t>(i)]; }
  T const& operator[](std::int64_t i) const { return data_[static_cast<std::size_t>(i)]; }
  template <class... I>
  T& at(I... idx) {
    return data_[static_cast<std::size_t>(detail::checked_offset(shape_, idx...))];
  }
  template <class... I>
  T const& at(I... idx) const {
    return data_[static_cast<std::size_t>(detail::checked_offset(shape_, idx...))];
  }
  [[nodiscard]] tensor_view<T> view() { return {data(), shape_}; }
  [[nodiscard]] tensor_view<T const> view() const { return {data(), shape_}; }

  //! Changes the shape, keeping the storage when the size allows; contents are unspecified.
  void resize(extents shape) {
    data_.resize(static_cast<std::size_t>(shape.size()));
    shape_ = shape;
  }
  void fill(T v) { std::fill(data_.begin(), data_.end(), v); }

private:
  std::vector<T> data_;
  extents shape_{0};  // a default tensor is empty, not a scalar
};

}  // namespace ssmlen
