// Printable text and safe file names from untrusted input (see untrusted.h).
#include "harness/core/untrusted.h"

#include <fmt/core.h>

namespace fusecheck {

namespace {

// Control characters (C0, DEL and the C1 range U+0080..U+009F, which some terminals obey
// too) and bytes that are not well-formed UTF-8 are shown as \xNN, one per byte; valid
// UTF-8 text (accents, CJK, emoji) passes unchanged.
std::string escape_controls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  std::size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = byte(i);
    const std::size_t len =
        lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : (lead >> 3) == 0x1e ? 4 : 0;
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

}  // namespace

std::string printable(std::string_view text, std::size_t max_chars) {
  if (text.size() <= max_chars) return escape_controls(text);
  // Cut the raw text (so an escape is never split), keeping 2/3 of the budget in front.
  const std::size_t head = max_chars * 2 / 3, tail = max_chars - head;
  return escape_controls(text.substr(0, head)) + fmt::format("...({} characters)...", text.size()) +
         escape_controls(text.substr(text.size() - tail));
}

std::string file_name_component(std::string_view text, std::string_view fallback) {
  std::string out;
  for (const char c : text.substr(0, kMaxFileStem)) {
    const bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '+' || c == '-';
    // A '.' after a '.' or at the start would make "..", or a hidden or relative name.
    if (c == '.' && (out.empty() || out.back() == '.')) {
      out += '_';
      continue;
    }
    out += keep ? c : '_';
  }
  if (out.find_first_not_of("_.") == std::string::npos) return std::string(fallback);
  return out;
}

}  // namespace fusecheck
