// libFuzzer target: a GGUF file image whose tokenizer.ggml.* keys are read as a
// vocabulary (llama SPM or gpt2 BPE) and, when it loads, used to encode and decode
// (fuzz_tokenizer.h). Any input must load or throw InputError; other exceptions, crashes
// and sanitizer reports are findings.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz/fuzz_tokenizer.h"
#include "harness/checkpoint/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const fusecheck::GgufContents c = fusecheck::parse_gguf(bytes, "fuzz.gguf");
    const auto t = fusecheck::tok::tokenizer_from_gguf(c.metadata, "fuzz.gguf");
    fusecheck::fuzz::exercise_tokenizer(*t, {});
  } catch (const fusecheck::InputError& e) {
    fusecheck::fuzz::check_one_printable_line(e);
  }
  return 0;
}
