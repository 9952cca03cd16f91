// libFuzzer target: scenario YAML text through the reader and validator (scenario.cpp).
// Any input must parse or throw InputError with one printable, bounded line; yaml-cpp's
// own exceptions escaping, other exceptions, crashes and sanitizer reports are findings.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "fuzz/fuzz_checks.h"
#include "harness/core/error.h"
#include "harness/core/path_registry.h"
#include "harness/paths/plugin_loader.h"
#include "harness/run/scenario.h"

namespace fusecheck {
// The reader registers the built-in paths before checking names; this target links no
// path implementations (their names are in the reader's own list of built-in names), so
// there is nothing to register.
void register_builtin_paths() {}
// A scenario's `plugins:` key loads shared objects (harness/paths/plugin_loader.cpp):
// never done on fuzzed input. The key is still parsed and checked up to the load, which
// fails here as a missing file would.
const PluginProvenance& load_plugin(const std::filesystem::path& file) {
  throw InputError(file.string(), "plug-ins are not loaded by the fuzz target");
}
}  // namespace fusecheck

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    (void)fusecheck::run::parse_scenario(text, "fuzz.yaml");
  } catch (const fusecheck::InputError& e) {
    fusecheck::fuzz::check_one_printable_line(e);
    // Values are quoted shortened: a message stays readable whatever the input.
    if (std::strlen(e.what()) > 2000) {
      std::fprintf(stderr, "InputError message of %zu characters\n", std::strlen(e.what()));
      std::abort();
    }
  }
  return 0;
}
