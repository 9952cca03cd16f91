// libFuzzer target: a results file image (HDF5, read from memory by the core driver), read
// into a tree, validated, compared with itself and rendered, as `fusecheck compare` does.
// Any input must succeed or throw InputError; other exceptions, crashes and sanitizer
// reports are findings. Inputs of the unchecksummed (pre-1.8) HDF5 format are read in a
// forked child first (harness/results/h5_tree.cpp): a crash there inside libhdf5 is the
// clean refusal under test, not a finding; in the checksummed format, which fusecheck
// writes, HDF5 and the reader run here, under the sanitizers.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz/fuzz_checks.h"
#include "harness/core/error.h"
#include "harness/results/compare.h"
#include "harness/results/printable.h"
#include "harness/results/validate.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto file = fusecheck::results::ResultsFile::load_image(bytes, "fuzz.h5");
    const auto report = fusecheck::results::compare_files(file, file, fusecheck::results::default_rules(), false);
    if (report.has_regression()) {
      std::fprintf(stderr, "a file compared with itself has a regression\n");
      std::abort();
    }
    (void)fusecheck::results::format_text(report);
    (void)fusecheck::results::format_markdown(report);
  } catch (const fusecheck::InputError& e) {
    // What the CLI prints (cli_compare.cpp makes it printable the same way).
    fusecheck::fuzz::check_one_printable_line(fusecheck::results::printable_error(e));
  }
  return 0;
}
