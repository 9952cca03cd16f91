// libFuzzer target: a Hugging Face tokenizer.json, read and, when it loads, used to encode
// and decode (fuzz_tokenizer.h); bytes after the first NUL are encoded as text too. Any
// input must load or throw InputError; other exceptions, crashes and sanitizer reports
// are findings.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz/fuzz_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = all.find('\0');
  const std::string_view json = all.substr(0, nul);
  const std::string_view text = nul == std::string_view::npos ? std::string_view() : all.substr(nul + 1);
  try {
    const auto t = fusecheck::tok::tokenizer_from_json(json, "fuzz.json");
    fusecheck::fuzz::exercise_tokenizer(*t, text);
  } catch (const fusecheck::InputError& e) {
    fusecheck::fuzz::check_one_printable_line(e);
  }
  return 0;
}
