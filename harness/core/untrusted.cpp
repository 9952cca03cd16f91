// Printable text and safe file names from untrusted input (see untrusted.h).
#include "harness/core/untrusted.h"

#include <fmt/core.h>

#include "harness/core/utf8.h"

namespace fusecheck {

namespace {

// Control characters (C0, DEL and the C1 range U+0080..U+009F, which some terminals obey
// too) and bytes that are not well-formed UTF-8 are shown as \xNN, one per byte; valid
// UTF-8 text (accents, CJK, emoji) passes unchanged.
std::string escape_controls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = utf8_at(text, i);
    if (!c || c->cp < 0x20 || (c->cp >= 0x7f && c->cp < 0xa0)) {
      const std::size_t n = c ? c->len : 1;
      for (std::size_t k = 0; k < n; ++k) out += fmt::format("\\x{:02x}", static_cast<unsigned char>(text[i + k]));
      i += n;
      continue;
    }
    out.append(text.substr(i, c->len));
    i += c->len;
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
