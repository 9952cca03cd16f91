// libFuzzer target: a sweep point's sidecar (`fusecheck check --format json`) through
// calibration's reader (harness/calibrate/sidecar.h), with and without a known down
// projection size (the super-weight upgrade of older sidecars). Any input must give
// components or throw InputError with one printable line; other exceptions, crashes and
// sanitizer reports are findings.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz/fuzz_checks.h"
#include "harness/calibrate/sidecar.h"
#include "harness/core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const std::int64_t down_numel : {std::int64_t{0}, std::int64_t{1024} * 3072}) {
    try {
      (void)fusecheck::calibrate::components_from_check_json(text, "point.check.json", down_numel);
    } catch (const fusecheck::InputError& e) {
      fusecheck::fuzz::check_one_printable_line(e);
    }
  }
  return 0;
}
