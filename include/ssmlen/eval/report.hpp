// SPDX-License-Identifier: Apache-2.0
//! @file report.hpp
//! Human-facing output of a length sweep: a text table, an SVG plot of exact
//! match against size on a log axis (written by ssmlen itself), and a PNG via
//! gnuplot when it is installed. Files are written atomically.
#pragma once

#include <ssmlen/core/error.hpp>
#include <ssmlen/eval/length_sweep.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <utility>

namespace ssmlen::eval {

//! Writes `text` to `file` through a temporary file and a rename.
inline void write_file_atomic(std::filesystem::path const& file, std::string const& text) {
  auto const tmp = file.string() + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    check(out.good(), "cannot open '" + tmp + "' for writing");
    out << text;
    out.flush();
    check(out.good(), "writing '" + tmp + "' failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) {
    std::filesystem::remove(tmp);
    throw error("cannot rename '" + tmp + "' to '" + file.string() + "': " + ec.message());
  }
}

inline std::string table_header() {
  return "      n  episodes  exact match  token acc.  mean tokens   longest   seconds  tokens/s  failures";
}

//! How a size's failed episodes ended, e.g. "11: 10 wrong, 1 token cap" ("0" when none failed).
inline std::string failure_ends(size_result const& r) {
  int const failed = r.episodes - r.correct;
  if (failed == 0) {
    return "0";
  }
  auto const count = [&](char const* reason) {
    auto const it = r.ends.find(reason);
    return it == r.ends.end() ? 0 : it->second;
  };
  // An episode that ended with <EOS> and failed wrote a wrong output; correct ones all end with <EOS>.
  std::pair<int, char const*> const kinds[] = {
      {count(agent::end_reason_name(agent::end_reason::eos)) - r.correct, "wrong"},
      {count(agent::end_reason_name(agent::end_reason::invalid)), "invalid"},
      {count(agent::end_reason_name(agent::end_reason::token_cap)), "token cap"}};
  std::string out = std::to_string(failed) + ":";
  char const* sep = " ";
  for (auto const& [k, name] : kinds) {
    if (k > 0) {
      out += sep + std::to_string(k) + " " + name;
      sep = ", ";
    }
  }
  return out;
}

inline std::string table_row(size_result const& r) {
  char line[160], accuracy[16] = "          -";  // a dash when teacher forcing was skipped
  if (r.token_accuracy) {
    std::snprintf(accuracy, sizeof accuracy, "%9.3f%%", 100 * *r.token_accuracy);
  }
  std::snprintf(line, sizeof line, "%7d  %8d  %10.1f%%  %s  %11.0f  %8lld  %8.1f  %8.0f  ", r.n, r.episodes,
                100 * r.exact_match, accuracy, r.mean_tokens, static_cast<long long>(r.longest_tokens), r.seconds,
                r.tokens_per_second);
  return line + failure_ends(r);
}

inline std::string table(sweep_result const& s) {
  std::string out = "task " + s.task + "   " + s.summary() + "\n" + table_header() + "\n";
  for (auto const& r : s.results) {
    out += table_row(r) + "\n";
  }
  return out;
}

//! Exact match (%) against size on a log10 axis, as a self-contained SVG.
inline std::string svg_plot(sweep_result const& s) {
  double const w = 640, h = 400, left = 70, right = 20, top = 40, bottom = 60;
  double lo = 1e300, hi = 0;
  for (auto const& r : s.results) {
    lo = std::min(lo, static_cast<double>(r.n));
    hi = std::max(hi, static_cast<double>(r.n));
  }
  double const l0 = std::floor(std::log10(std::max(lo, 1.0))), l1 = std::max(l0 + 1, std::ceil(std::log10(hi)));
  auto x = [&](double n) { return left + (std::log10(n) - l0) / (l1 - l0) * (w - left - right); };
  auto y = [&](double p) { return top + (1 - p) * (h - top - bottom); };
  std::ostringstream o;
  o << "<svg xmlns='http://www.w3.org/2000/svg' width='" << w << "' height='" << h << "' font-family='sans-serif' "
    << "font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n";
  o << "<text x='" << w / 2 << "' y='22' text-anchor='middle' font-size='14'>" << s.task << ": exact match vs size ("
    << s.summary() << ")</text>\n";
  for (int p = 0; p <= 100; p += 25) {
    o << "<line x1='" << left << "' x2='" << w - right << "' y1='" << y(p / 100.0) << "' y2='" << y(p / 100.0)
      << "' stroke='#ddd'/><text x='" << left - 8 << "' y='" << y(p / 100.0) + 4 << "' text-anchor='end'>" << p
      << "%</text>\n";
  }
  for (double e = l0; e <= l1; e += 1) {
    double const px = x(std::pow(10.0, e));
    o << "<line x1='" << px << "' x2='" << px << "' y1='" << top << "' y2='" << h - bottom << "' stroke='#ddd'/>"
      << "<text x='" << px << "' y='" << h - bottom + 18 << "' text-anchor='middle'>" << std::pow(10.0, e)
      << "</text>\n";
  }
  o << "<text x='" << w / 2 << "' y='" << h - 15 << "' text-anchor='middle'>size n (log scale)</text>\n";
  o << "<polyline fill='none' stroke='#1f77b4' stroke-width='2' points='";
  for (auto const& r : s.results) {
    o << x(r.n) << ',' << y(r.exact_match) << ' ';
  }
  o << "'/>\n";
  for (auto const& r : s.results) {
    o << "<circle cx='" << x(r.n) << "' cy='" << y(r.exact_match) << "' r='4' fill='#1f77b4'/>\n";
  }
  if (s.train_n > 0) {
    o << "<line x1='" << x(s.train_n) << "' x2='" << x(s.train_n) << "' y1='" << top << "' y2='" << h - bottom
      << "' stroke='#d62728' stroke-dasharray='4 3'/><text x='" << x(s.train_n) + 4 << "' y='" << top + 12
      << "' fill='#d62728'>trained up to " << s.train_n << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

//! Writes <stem>.json, <stem>.csv, <stem>.svg and, when gnuplot is on PATH, <stem>.png. Returns the files written.
inline std::vector<std::filesystem::path> write_reports(sweep_result const& s, std::filesystem::path const& stem) {
  std::vector<std::filesystem::path> files;
  auto put = [&](std::string const& ext, std::string const& text) {
    auto f = stem;
    f += ext;
    write_file_atomic(f, text);
    files.push_back(f);
  };
  put(".json", s.to_json().dump(2) + "\n");
  put(".csv", s.to_csv());
  put(".svg", svg_plot(s));
  if (std::system("command -v gnuplot > /dev/null 2>&1") == 0) {
    auto png = stem;
    png += ".png";
    auto csv = stem;
    csv += ".csv";
    std::string const script = "set terminal pngcairo size 800,500 noenhanced\nset output '" + png.string() +
                               "'\nset datafile separator ','\nset logscale x\nset yrange [0:105]\nset grid\n"
                               "set xlabel 'size n'\nset ylabel 'exact match (%)'\nset key off\nset title '" +
                               s.task + ": " + s.summary() + "'\nplot '" + csv.string() +
                               "' every ::1 using 1:($3*100) with linespoints lw 2 pt 7\n";
    auto gp = stem;
    gp += ".gp";
    write_file_atomic(gp, script);  // kept: `gnuplot <stem>.gp` redraws the PNG
    files.push_back(gp);
    std::string const cmd = "gnuplot '" + gp.string() + "' > /dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0 && std::filesystem::exists(png)) {
      files.push_back(png);
    }
  }
  return files;
}

}  // namespace ssmlen::eval
