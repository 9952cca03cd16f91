// Strings read from results files (scenario names, path labels, tap names, attribute
// values) are untrusted: before they reach a terminal, control characters and broken
// UTF-8 are shown as \xNN so that a hostile file can neither move the cursor nor forge a
// line of output.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "harness/core/untrusted.h"

namespace fusecheck::results {

// One home for the escaping: harness/core/untrusted.h (C0, DEL, C1 and broken UTF-8 as \xNN).
inline std::string printable(std::string_view text) { return fusecheck::printable(text); }

// The same error with its file and message made printable (one line).
inline InputError printable_error(const InputError& e) {
  const std::string what = e.what();
  const std::string& where = e.where();
  const std::string problem = where.empty() ? what : what.substr(std::min(what.size(), where.size() + 2));
  return InputError(printable(where), printable(problem));
}

}  // namespace fusecheck::results
