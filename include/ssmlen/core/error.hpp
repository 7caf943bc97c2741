// SPDX-License-Identifier: Apache-2.0
//! @file error.hpp
//! The library's exception and argument checks. Messages name the offending
//! parameter and its value: "ssmlen: d_model = 0: must be positive".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ssmlen {

//! Every error ssmlen raises on bad input (configs, shapes, files, arguments).
class error : public std::runtime_error {
public:
  explicit error(std::string const& what) : std::runtime_error("ssmlen: " + what) {}
};

//! Throws `error("<name> = <value>: <requirement>")` unless `ok`.
template <class V>
void check_arg(bool ok, std::string_view name, V const& value, std::string_view requirement) {
  if (ok) {
    return;
  }
  std::ostringstream s;
  s << name << " = " << value << ": " << requirement;
  throw error(s.str());
}

//! Throws `error(message)` unless `ok`; for conditions that are not one parameter.
inline void check(bool ok, std::string_view message) {
  if (!ok) {
    throw error(std::string(message));
  }
}

}  // namespace ssmlen
