// UTF-8 by hand, in one place: the printable-text escaping (untrusted.cpp), the
// tokenizers (harness/tokenizer/text.cpp) and the checkpoint's vocabulary decode
// (checkpoint.cpp) all walk and write UTF-8 with these two functions.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace fusecheck {

struct Utf8Char {
  char32_t cp;
  std::size_t len;  // bytes
};

// The well-formed UTF-8 character starting at text[i] (no overlong forms, surrogates or
// values past U+10FFFF), or nullopt for a stray, truncated or ill-formed sequence.
inline std::optional<Utf8Char> utf8_at(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  const std::size_t len =
      lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : (lead >> 3) == 0x1e ? 4 : 0;
  if (len == 0 || i + len > text.size()) return std::nullopt;
  char32_t cp = len == 1 ? lead : len == 2 ? lead & 0x1f : len == 3 ? lead & 0x0f : lead & 0x07;
  for (std::size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return std::nullopt;
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return std::nullopt;
  return Utf8Char{cp, len};
}

// Appends the UTF-8 encoding of code point `cp`.
inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace fusecheck
