// ggml's block-quantized tensor types (Q4_0 ... Q6_K): their block layouts and their exact
// dequantization to float, value for value as ggml defines it (checked bit for bit against
// the gguf Python package: tests/checkpoint/test_gguf_quants.cpp).
#pragma once

#include <cstdint>
#include <string>

#include "harness/core/tensor.h"

namespace fusecheck {

// ggml type ids (ggml.h enum ggml_type) of the quantized types fusecheck reads.
enum class GgmlQuant : std::uint32_t {
  Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14,
};

// The codec of a quantized ggml type fusecheck reads; null for every other id (plain
// dtypes, IQ*, TQ*, MXFP4, unknown ids).
const BlockCodec* ggml_quant_codec(std::uint32_t ggml_type);

// "Q4_0, Q4_1, ..., Q6_K": the quantized types fusecheck reads, for error messages.
std::string ggml_quant_names();

}  // namespace fusecheck
