// Checks shared by the safetensors and GGUF readers.
#pragma once

#include <string>
#include <vector>

#include "harness/core/tensor.h"

namespace fusecheck {

// Throws InputError naming `file` and the second tensor when two non-empty tensors share
// bytes. Views of one file; order does not matter.
void check_no_overlap(const std::vector<TensorView>& tensors, const std::string& file);

}  // namespace fusecheck
