// Element types of checkpoint tensors and the low-precision formats fusecheck emulates,
// with exact round-to-nearest-even conversions (host only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace fusecheck {

enum class DType { F32, F16, BF16, F64 };

std::size_t dtype_size(DType t);
std::string_view dtype_name(DType t);          // "F32", "F16", "BF16", "F64"
std::optional<DType> dtype_from_name(std::string_view safetensors_name);

// Bit-exact conversions. float -> bf16/fp16 rounds to nearest, ties to even; NaN stays NaN
// (quiet), overflow goes to Inf as IEEE rounding does.
float bf16_to_float(std::uint16_t bits);
std::uint16_t float_to_bf16(float x);
float fp16_to_float(std::uint16_t bits);
std::uint16_t float_to_fp16(float x);
std::uint16_t double_to_fp16(double x);  // rounds once, from double (no double rounding)
std::uint16_t double_to_bf16(double x);  // rounds once, from double

// Value of x after one rounding to the format (what emulated recipes use).
inline float round_to_bf16(float x) { return bf16_to_float(float_to_bf16(x)); }
inline float round_to_fp16(float x) { return fp16_to_float(float_to_fp16(x)); }

// Largest finite value of a format, for overflow headroom.
double dtype_max_finite(DType t);

}  // namespace fusecheck
