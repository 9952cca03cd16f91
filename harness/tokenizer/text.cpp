// UTF-8, the GPT-2 byte map, NFC and PCRE2 splitting (text.h).
#include "harness/tokenizer/text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <uninorm.h>

#include <array>
#include <cstdlib>

#include <fmt/core.h>

#include "harness/core/error.h"
#include "harness/core/utf8.h"

namespace fusecheck::tok {

std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = utf8_at(s, i);
    if (!c) return false;
    i += c->len;
  }
  return true;
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const auto lead = static_cast<unsigned char>(s[i]);
    if (lead < 0x80) {
      out += static_cast<char>(lead);
      ++i;
      continue;
    }
    // Length and the range of the second byte (Unicode table 3-7, well-formed sequences).
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) len = 2;
    else if (lead == 0xE0) len = 3, lo = 0xA0;
    else if (lead == 0xED) len = 3, hi = 0x9F;
    else if (lead >= 0xE1 && lead <= 0xEF) len = 3;
    else if (lead == 0xF0) len = 4, lo = 0x90;
    else if (lead == 0xF4) len = 4, hi = 0x8F;
    else if (lead >= 0xF1 && lead <= 0xF3) len = 4;
    std::size_t good = 1;  // the lead, then the continuation bytes that fit
    while (len && good < len && i + good < s.size()) {
      const auto c = static_cast<unsigned char>(s[i + good]);
      if (c < (good == 1 ? lo : 0x80) || c > (good == 1 ? hi : 0xBF)) break;
      ++good;
    }
    if (len && good == len) out.append(s.substr(i, len));
    else out += "\xEF\xBF\xBD";
    i += good;
  }
  return out;
}

namespace {

// GPT-2 keeps the printable Latin-1 bytes as themselves and moves the other 68 to
// U+0100 onwards, in byte order, so every byte is a visible vocabulary character.
const std::array<std::string, 256>& byte_table() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    const auto printable = [](unsigned b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; };
    unsigned shifted = 0;
    for (unsigned b = 0; b < 256; ++b) append_utf8(t[b], printable(b) ? b : 256 + shifted++);
    return t;
  }();
  return table;
}

}  // namespace

const std::string& byte_to_unicode(unsigned char b) { return byte_table()[b]; }

std::optional<unsigned char> unicode_to_byte(std::string_view utf8_char) {
  // Every stand-in is a code point below U+0144 (one or two UTF-8 bytes).
  static const std::array<int, 0x144> inverse = [] {
    std::array<int, 0x144> inv;
    inv.fill(-1);
    for (unsigned b = 0; b < 256; ++b) {
      const std::string& u = byte_table()[b];
      const unsigned cp = u.size() == 1 ? static_cast<unsigned char>(u[0])
                                        : ((static_cast<unsigned char>(u[0]) & 0x1F) << 6) |
                                              (static_cast<unsigned char>(u[1]) & 0x3F);
      inv[cp] = static_cast<int>(b);
    }
    return inv;
  }();
  unsigned cp = 0;
  if (utf8_char.size() == 1) {
    cp = static_cast<unsigned char>(utf8_char[0]);
  } else if (utf8_char.size() == 2 && (static_cast<unsigned char>(utf8_char[0]) >> 5) == 0x6) {
    cp = ((static_cast<unsigned char>(utf8_char[0]) & 0x1F) << 6) | (static_cast<unsigned char>(utf8_char[1]) & 0x3F);
  } else {
    return std::nullopt;
  }
  if (cp >= inverse.size() || inverse[cp] < 0) return std::nullopt;
  return static_cast<unsigned char>(inverse[cp]);
}

std::optional<unsigned char> byte_token_value(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]), lo = hex(piece[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<unsigned char>(hi * 16 + lo);
}

std::string nfc(std::string_view s) {
  std::size_t n = 0;
  uint8_t* out = u8_normalize(UNINORM_NFC, reinterpret_cast<const uint8_t*>(s.data()), s.size(), nullptr, &n);
  if (out == nullptr) throw std::runtime_error("u8_normalize failed (out of memory or invalid UTF-8)");
  std::string r(reinterpret_cast<const char*>(out), n);
  std::free(out);
  return r;
}

struct Regex::Impl {
  pcre2_code* code = nullptr;
  ~Impl() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern, const std::string& source) : impl_(std::make_unique<Impl>()) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
  if (impl_->code == nullptr) {
    std::array<PCRE2_UCHAR, 256> msg{};
    pcre2_get_error_message(err, msg.data(), msg.size());
    throw InputError(source, fmt::format("pre-tokenizer regex does not compile at offset {}: {}", offset,
                                         reinterpret_cast<const char*>(msg.data())));
  }
  // JIT is a speed-up only; the interpreter gives the same matches where it is missing.
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);
}

Regex::~Regex() = default;

void Regex::split(std::string_view text, std::vector<std::string_view>& out) const {
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(impl_->code, nullptr), &pcre2_match_data_free);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t pos = 0, gap_start = 0;
  while (pos < text.size()) {
    const int rc = pcre2_match(impl_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, match.get(), nullptr);
    if (rc < 0) break;  // no further match (or a match limit): the rest is one gap
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match.get());
    const std::size_t begin = ov[0], end = ov[1];
    if (end == begin) {  // an empty match splits nothing: try one character later
      pos = begin + utf8_length(static_cast<unsigned char>(text[begin < text.size() ? begin : 0]));
      continue;
    }
    if (begin > gap_start) out.push_back(text.substr(gap_start, begin - gap_start));
    out.push_back(text.substr(begin, end - begin));
    pos = gap_start = end;
  }
  if (gap_start < text.size()) out.push_back(text.substr(gap_start));
}

}  // namespace fusecheck::tok
