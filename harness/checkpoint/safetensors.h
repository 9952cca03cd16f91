// safetensors reader: parses and validates a safetensors file image (8-byte little-endian
// header length, JSON header, tensor bytes) into tensor views. Works on any byte buffer,
// so the fuzzer and the file loader share one parser.
#pragma once

#include <cstddef>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "harness/core/tensor.h"

namespace fusecheck {

struct SafetensorsContents {
  std::vector<TensorView> tensors;               // ordered by data offset
  std::map<std::string, std::string> metadata;   // the optional "__metadata__" object
  std::size_t data_start = 0;                    // 8 + header length
};

// Parses `bytes` (a whole safetensors file). `file` names it in every error. Views point
// into `bytes`, which must outlive them. Throws InputError on any malformed input and
// never reads outside `bytes`.
SafetensorsContents parse_safetensors(std::span<const std::byte> bytes, const std::string& file);

}  // namespace fusecheck
