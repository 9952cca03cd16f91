// Conversions of memory-mapped tensor views to float and double.
#include "harness/core/tensor.h"

#include <array>
#include <cassert>
#include <cstring>
#include <functional>
#include <numeric>
#include <stdexcept>

namespace fusecheck {

namespace {
// The largest block any codec uses (ggml's K-quants: 256 values).
constexpr std::int64_t kMaxBlockElems = 256;
}  // namespace

std::int64_t TensorView::numel() const {
  return std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
}
std::int64_t TensorView::rows() const { return shape.empty() ? 1 : shape[0]; }
std::int64_t TensorView::cols() const {
  return shape.size() <= 1 ? numel() : numel() / shape[0];
}

std::string_view TensorView::storage_name() const { return codec ? codec->name : dtype_name(dtype); }

double TensorView::at(std::int64_t i) const {
  assert(i >= 0 && i < numel());
  if (codec) {
    if (codec->block_elems > kMaxBlockElems) throw std::logic_error("TensorView::at: block larger than 256 values");
    const std::int64_t block = i / codec->block_elems;
    std::array<float, kMaxBlockElems> values;
    codec->decode(bytes.data() + block * static_cast<std::int64_t>(codec->block_bytes), 1, values.data());
    return values[static_cast<std::size_t>(i - block * codec->block_elems)];
  }
  const std::byte* p = bytes.data() + i * static_cast<std::int64_t>(dtype_size(dtype));
  switch (dtype) {
    case DType::F32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::F64: { double v; std::memcpy(&v, p, 8); return v; }
    case DType::F16: { std::uint16_t b; std::memcpy(&b, p, 2); return fp16_to_float(b); }
    case DType::BF16: { std::uint16_t b; std::memcpy(&b, p, 2); return bf16_to_float(b); }
  }
  return 0;
}

void TensorView::to_float(std::int64_t first, std::span<float> out) const {
  const auto n = static_cast<std::int64_t>(out.size());
  assert(first >= 0 && first + n <= numel());
  if (codec) {
    if (first % codec->block_elems != 0 || n % codec->block_elems != 0) {
      throw std::logic_error("TensorView::to_float: range of a quantized tensor is not whole blocks");
    }
    const std::byte* blocks = bytes.data() + (first / codec->block_elems) * static_cast<std::int64_t>(codec->block_bytes);
    codec->decode(blocks, n / codec->block_elems, out.data());
    return;
  }
  const std::byte* p = bytes.data() + first * static_cast<std::int64_t>(dtype_size(dtype));
  switch (dtype) {
    case DType::F32: std::memcpy(out.data(), p, n * 4); return;
    case DType::F64:
      for (std::int64_t i = 0; i < n; ++i) { double v; std::memcpy(&v, p + 8 * i, 8); out[i] = static_cast<float>(v); }
      return;
    case DType::F16:
      for (std::int64_t i = 0; i < n; ++i) { std::uint16_t b; std::memcpy(&b, p + 2 * i, 2); out[i] = fp16_to_float(b); }
      return;
    case DType::BF16:
      for (std::int64_t i = 0; i < n; ++i) { std::uint16_t b; std::memcpy(&b, p + 2 * i, 2); out[i] = bf16_to_float(b); }
      return;
  }
}

void TensorView::to_float(std::span<float> out) const {
  assert(static_cast<std::int64_t>(out.size()) == numel());
  to_float(0, out);
}

std::vector<float> TensorView::to_float() const {
  std::vector<float> out(static_cast<std::size_t>(numel()));
  to_float(std::span<float>(out));
  return out;
}

std::vector<double> TensorView::to_double() const {
  const std::int64_t n = numel();
  std::vector<double> out(static_cast<std::size_t>(n));
  if (dtype == DType::F64 && !codec) {
    std::memcpy(out.data(), bytes.data(), n * 8);
    return out;
  }
  std::vector<float> f = to_float();
  for (std::int64_t i = 0; i < n; ++i) out[i] = f[i];
  return out;
}

}  // namespace fusecheck
