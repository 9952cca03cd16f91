// Strings read from results files (scenario names, path labels, tap names, attribute
// values) are untrusted: before they reach a terminal, control characters and broken
// UTF-8 are shown as \xNN so that a hostile file can neither move the cursor nor forge a
// line of output.
// (harness/checkpoint/view_checks.cpp does the same for checkpoint errors; the results
// library does not depend on the checkpoint one.)
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

#include <fmt/core.h>

#include "harness/core/error.h"

namespace fusecheck::results {

// Control characters (C0, DEL and the C1 range U+0080..U+009F, which some terminals obey
// too) and bytes that are not well-formed UTF-8 are shown as \xNN, one per byte.
inline std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  std::size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = byte(i);
    std::size_t len = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : (lead >> 3) == 0x1e ? 4 : 0;
    char32_t cp = len == 1 ? lead : len == 2 ? lead & 0x1f : len == 3 ? lead & 0x0f : lead & 0x07;
    bool ok = len > 0 && i + len <= text.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      ok = (byte(i + k) & 0xc0) == 0x80;
      cp = (cp << 6) | (byte(i + k) & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8 either.
    static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    ok = ok && cp >= kMin[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    if (!ok || cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) {
      const std::size_t n = ok ? len : 1;
      for (std::size_t k = 0; k < n; ++k) out += fmt::format("\\x{:02x}", byte(i + k));
      i += n;
      continue;
    }
    out.append(text.substr(i, len));
    i += len;
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
