// Checks shared by the safetensors and GGUF readers.
#pragma once

#include <string>
#include <vector>

#include "harness/core/error.h"
#include "harness/core/tensor.h"

namespace fusecheck {

// Throws InputError naming `file` and the second tensor when two non-empty tensors share
// bytes. Views of one file; order does not matter.
void check_no_overlap(const std::vector<TensorView>& tensors, const std::string& file);

// Error messages quote names and values taken from the file, which may hold any bytes.
// Rethrows `e` with control characters shown as \xNN and the text capped, so the
// message stays one printable line.
[[noreturn]] void rethrow_printable(const InputError& e);

// Runs `parse` and makes any InputError it throws printable (rethrow_printable).
template <typename F>
auto with_printable_errors(F&& parse) -> decltype(parse()) {
  try {
    return parse();
  } catch (const InputError& e) {
    rethrow_printable(e);
  }
}

}  // namespace fusecheck
