// Progress output for long commands: a redrawn bar on a terminal, plain
// periodic lines otherwise (logs, CI), and durations in human units.
#pragma once

#include <cstdio>
#include <string>
#include <unistd.h>

namespace ssmlen::apps {

inline bool stderr_is_terminal() { return ::isatty(2) != 0; }

inline std::string human_seconds(double s) {
  char buf[32];
  if (s < 90) {
    std::snprintf(buf, sizeof buf, "%.0fs", s);
  } else if (s < 5400) {
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s) / 3600, (static_cast<int>(s) / 60) % 60);
  }
  return buf;
}

//! "[#######.........]" of the given width for done/total.
inline std::string bar(double done, double total, int width = 24) {
  int const full = total > 0 ? static_cast<int>(width * done / total) : 0;
  return "[" + std::string(static_cast<std::size_t>(full), '#') +
         std::string(static_cast<std::size_t>(width - full), '.') + "]";
}

}  // namespace ssmlen::apps
