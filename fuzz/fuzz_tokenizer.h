// What both tokenizer fuzz targets do with a vocabulary that loaded: encode a fixed set of
// awkward texts plus the fuzzer's own text, and decode the result. Encoding valid UTF-8
// must not throw; every id it gives must decode.
#pragma once

#include <string_view>

#include "fuzz/fuzz_checks.h"
#include "harness/tokenizer/text.h"
#include "harness/tokenizer/tokenizer.h"

namespace fusecheck::fuzz {

inline void exercise_tokenizer(const tok::Tokenizer& t, std::string_view fuzz_text) {
  static constexpr std::string_view kTexts[] = {
      "", " ", "Hello world", "  two  spaces\n\nand\ttabs ", "1234567 3.14", "don't WE'LL",
      "caf\xC3\xA9 \xD0\x9C\xD0\xBE\xD1\x81\xD0\xBA\xD0\xB2\xD0\xB0 \xE6\x9D\xB1\xE4\xBA\xAC", "\xF0\x9F\x9A\x80\xF0\x9F\x98\x80",
      "<s></s><unk><|endoftext|>", "\xE2\x96\x81x", "e\xCC\x81"};
  for (const std::string_view text : kTexts) {
    for (const bool special : {true, false}) (void)t.decode(t.encode(text, special));
  }
  if (tok::valid_utf8(fuzz_text)) (void)t.decode(t.encode(fuzz_text));
}

}  // namespace fusecheck::fuzz
