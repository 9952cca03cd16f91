// Strings read from results files (scenario names, path labels, tap names, attribute
// values) are untrusted: before they reach a terminal, control characters are shown as
// \xNN so that a hostile file can neither move the cursor nor forge a line of output.
// (harness/checkpoint/view_checks.cpp does the same for checkpoint errors; the results
// library does not depend on the checkpoint one.)
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

#include <fmt/core.h>

#include "harness/core/error.h"

namespace fusecheck::results {

inline std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out;
}

// The same error with its file and message made printable (one line).
inline InputError printable_error(const InputError& e) {
  const std::string what = e.what();
  const std::string& where = e.where();
  const std::string problem = where.empty() ? what : what.substr(std::min(what.size(), where.size() + 2));
  return InputError(printable(where), printable(problem));
}

}  // namespace fusecheck::results
