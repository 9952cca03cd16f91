// Printable text and safe file names from untrusted input (see untrusted.h).
#include "harness/core/untrusted.h"

#include <fmt/core.h>

namespace fusecheck {

namespace {

std::string escape_controls(std::string_view text) {
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
