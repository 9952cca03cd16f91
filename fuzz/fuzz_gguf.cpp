// libFuzzer target: a GGUF file image, parsed and, when it parses, run through the
// architecture adapter (metadata lookups, shape checks, the norm NaN scan); quantized
// tensors (Q4_0 ... Q6_K) are dequantized. Any input must
// succeed or throw InputError; other exceptions, crashes and sanitizer reports are findings.
#include <cstddef>
#include <cstdint>
#include <span>

#include "harness/checkpoint/adapters.h"
#include "harness/checkpoint/gguf.h"
#include "fuzz/fuzz_checks.h"
#include "harness/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const fusecheck::GgufContents c = fusecheck::parse_gguf(bytes, "fuzz.gguf");
    for (const fusecheck::TensorView& t : c.tensors) {
      if (t.bytes.empty()) continue;
      (void)t.at(t.numel() - 1), (void)t.at(0);
      // Quantized blocks decode in full (every field of every block read) while small.
      if (t.codec && t.numel() <= (1 << 16)) (void)t.to_float();
    }
    for (const auto& [key, value] : c.metadata) (void)value.to_string();
    fusecheck::TensorIndex index;
    for (const fusecheck::TensorView& t : c.tensors) index.emplace(t.name, &t);
    (void)fusecheck::adapt_gguf(c.metadata, "fuzz.gguf", index);
  } catch (const fusecheck::InputError& e) {
    fusecheck::fuzz::check_one_printable_line(e);
  }
  return 0;
}
