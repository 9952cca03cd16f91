// A read-only view of one tensor inside a memory-mapped checkpoint file. Views never own
// or copy the data; conversion to float/double happens only when asked for. Block-quantized
// tensors (GGUF's Q4_K, ...) carry the codec that decodes their blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "harness/core/dtype.h"

namespace fusecheck {

// A block-quantized storage format: `block_bytes` bytes hold `block_elems` values, decoded
// to float exactly as the format defines. The readers that know a format provide its codec
// (harness/checkpoint/gguf_quants.h), so this header depends on none of them.
struct BlockCodec {
  std::string_view name;          // "Q4_K"
  std::int64_t block_elems = 1;   // values per block
  std::size_t block_bytes = 0;    // bytes per block
  // Decodes `n_blocks` whole blocks into n_blocks * block_elems floats; may spread large
  // inputs over the OpenMP threads.
  void (*decode)(const std::byte* blocks, std::int64_t n_blocks, float* out) = nullptr;
};

struct TensorView {
  std::string name;                 // name as stored in the file
  DType dtype = DType::F32;         // element type; F32 for a quantized tensor (what it decodes to)
  const BlockCodec* codec = nullptr;  // set when the tensor is stored block-quantized
  std::vector<std::int64_t> shape;  // row-major, slowest-varying first (HF order)
  std::span<const std::byte> bytes; // points into the mapped file
  std::string file;                 // file the tensor lives in (for error messages)

  std::int64_t numel() const;
  std::int64_t rows() const;  // shape[0] (1 for a scalar)
  std::int64_t cols() const;  // product of the remaining dims (numel for a vector)
  // How the tensor is stored: the codec's name ("Q4_K") or the dtype's ("BF16").
  std::string_view storage_name() const;
  std::vector<float> to_float() const;
  std::vector<double> to_double() const;
  // Element i converted to double (no bounds check beyond an assert). A quantized tensor
  // decodes the block holding i.
  double at(std::int64_t i) const;
  void to_float(std::span<float> out) const;  // out.size() == numel()
  // Elements [first, first + out.size()). For a quantized tensor both ends must fall on
  // block boundaries (any whole rows do: a row holds whole blocks).
  void to_float(std::int64_t first, std::span<float> out) const;
};

}  // namespace fusecheck
