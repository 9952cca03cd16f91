// libFuzzer target: config.json text through the HF adapter (field types, architecture,
// rope_scaling), with no tensors. Any input must throw InputError (a model with no
// tensors never binds); other exceptions, crashes and sanitizer reports are findings.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "harness/checkpoint/adapters.h"
#include "fuzz/fuzz_checks.h"
#include "harness/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const nlohmann::json config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return 0;  // invalid JSON is the JSON library's business
  try {
    (void)fusecheck::adapt_hf(config, "config.json", "model.safetensors", {});
  } catch (const fusecheck::InputError& e) {
    fusecheck::fuzz::check_one_printable_line(e);
  }
  return 0;
}
