// A tensor's values as FP32, handed over in chunks of one reused buffer. What a GPU path
// does with every weight (convert on the host, copy to the device) took a fresh vector
// the size of the tensor each time (ref32-cuda: 2.4 GB of floats for a 0.6B model),
// converted on one core; here the buffer is reused and each chunk is converted on every
// OpenMP thread. Values are TensorView::to_float's, element for element.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "harness/core/tensor.h"

namespace fusecheck {

// Calls consume(first, values) for consecutive ranges [first, first + values.size())
// covering the tensor, in order; `values` is valid only during the call. Chunks hold at
// most about `chunk_elems` values (whole blocks of a quantized tensor).
void for_each_float_chunk(const TensorView& t, const std::function<void(std::int64_t, std::span<const float>)>& consume,
                          std::int64_t chunk_elems = std::int64_t(1) << 24);

// The same into a caller's buffer, reused across tensors (it grows, never shrinks).
void for_each_float_chunk(const TensorView& t, std::vector<float>& buffer,
                          const std::function<void(std::int64_t, std::span<const float>)>& consume,
                          std::int64_t chunk_elems = std::int64_t(1) << 24);

}  // namespace fusecheck
