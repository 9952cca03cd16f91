// A read-only view of one tensor inside a memory-mapped checkpoint file. Views never own
// or copy the data; conversion to float/double happens only when asked for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "harness/core/dtype.h"

namespace fusecheck {

struct TensorView {
  std::string name;                 // name as stored in the file
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;  // row-major, slowest-varying first (HF order)
  std::span<const std::byte> bytes; // points into the mapped file
  std::string file;                 // file the tensor lives in (for error messages)

  std::int64_t numel() const;
  std::int64_t rows() const;  // shape[0] (1 for a scalar)
  std::int64_t cols() const;  // product of the remaining dims (numel for a vector)
  std::vector<float> to_float() const;
  std::vector<double> to_double() const;
  // Element i converted to double (no bounds check beyond an assert).
  double at(std::int64_t i) const;
  void to_float(std::span<float> out) const;  // out.size() == numel()
};

}  // namespace fusecheck
