// Text primitives the tokenizers share: UTF-8 walking and validation, the GPT-2
// byte-to-unicode map of byte-level BPE, NFC (libunistring) and splitting by a PCRE2
// regex with Unicode classes (the pre-tokenizer patterns use \p{L}, \p{N}, lookahead).
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "harness/core/utf8.h"

namespace fusecheck::tok {

// Length of the UTF-8 sequence starting with byte `lead` (1 for a stray byte).
std::size_t utf8_length(unsigned char lead);
// True when `s` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
bool valid_utf8(std::string_view s);
using fusecheck::append_utf8;  // harness/core/utf8.h
// `s` with each maximal ill-formed subsequence replaced by U+FFFD (as HF's decode and
// Rust's from_utf8_lossy do): decoded byte tokens may stop inside a character.
std::string to_valid_utf8(std::string_view s);

// GPT-2's printable stand-in for each byte (as UTF-8), and the inverse.
const std::string& byte_to_unicode(unsigned char b);
std::optional<unsigned char> unicode_to_byte(std::string_view utf8_char);

// "<0x0A>" -> 0x0A (SentencePiece byte tokens).
std::optional<unsigned char> byte_token_value(std::string_view piece);

std::string nfc(std::string_view s);

// A compiled PCRE2 pattern (UTF + UCP, JIT where available).
class Regex {
 public:
  // Throws InputError(source, ...) when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& source);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Appends to `out` the pieces of `text`: every match and every gap between matches, in
  // order, none empty. `text` must be valid UTF-8.
  void split(std::string_view text, std::vector<std::string_view>& out) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fusecheck::tok
