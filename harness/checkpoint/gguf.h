// GGUF reader (llama.cpp's single-file format, versions 2 and 3): header, typed metadata
// key/values, tensor infos and the aligned data section, validated so that arbitrary
// bytes give an InputError and never an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "harness/core/tensor.h"

namespace fusecheck {

enum class GgufType : std::uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7,
  String = 8, Array = 9, U64 = 10, I64 = 11, F64 = 12,
};

struct GgufValue {
  GgufType type = GgufType::U8;
  GgufType element_type = GgufType::U8;  // arrays only
  // Unsigned integers as uint64, signed as int64, floats as double.
  std::variant<std::uint64_t, std::int64_t, double, bool, std::string, std::vector<GgufValue>> value;

  std::optional<std::int64_t> as_int() const;  // any integer type that fits int64
  std::optional<double> as_double() const;     // any numeric type
  const std::string* as_string() const;
  const std::vector<GgufValue>* as_array() const;
  // Printable form; arrays show their first `max_items` elements and their length.
  std::string to_string(std::size_t max_items = 8) const;
};

struct GgufContents {
  std::uint32_t version = 0;
  std::map<std::string, GgufValue> metadata;
  std::vector<TensorView> tensors;  // in file order; shapes in HF order (slowest first)
  std::vector<std::string> tensor_types;  // ggml type name of each tensor ("F32", "Q4_K", ...)
  std::uint64_t alignment = 32;
  std::size_t data_start = 0;
};

// Parses a whole GGUF file image. `file` names it in every error. Views point into
// `bytes`. Quantized tensors of the types gguf_quants.h reads carry its codec; other types
// (IQ*, TQ*, ...) are rejected with "not supported: IQ2_XXS" (the ggml type).
GgufContents parse_gguf(std::span<const std::byte> bytes, const std::string& file);

// ggml's name for a tensor type id ("Q4_K"), or "type N" for ids it does not know.
std::string ggml_type_name(std::uint32_t type);

// True when the first bytes are the GGUF magic.
bool has_gguf_magic(std::span<const std::byte> first_bytes);

}  // namespace fusecheck
