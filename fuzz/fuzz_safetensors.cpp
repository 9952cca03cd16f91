// libFuzzer target: a safetensors file image (length, JSON header, data). Any input must
// parse or throw InputError; other exceptions, crashes and sanitizer reports are findings.
#include <cstddef>
#include <cstdint>
#include <span>

#include "harness/checkpoint/safetensors.h"
#include "fuzz/fuzz_checks.h"
#include "harness/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const fusecheck::SafetensorsContents c = fusecheck::parse_safetensors(bytes, "fuzz.safetensors");
    // Touch every byte each view claims, so a view past the buffer is an ASan report.
    for (const fusecheck::TensorView& t : c.tensors) {
      if (!t.bytes.empty()) (void)t.at(t.numel() - 1), (void)t.at(0);
    }
  } catch (const fusecheck::InputError& e) {
    fusecheck::fuzz::check_one_printable_line(e);
  }
  return 0;
}
