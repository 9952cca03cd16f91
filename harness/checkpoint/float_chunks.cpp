// Chunked, parallel conversion of a tensor to FP32 (see float_chunks.h).
#include "harness/checkpoint/float_chunks.h"

#include <algorithm>
#include <exception>

namespace fusecheck {

void for_each_float_chunk(const TensorView& t, std::vector<float>& buffer,
                          const std::function<void(std::int64_t, std::span<const float>)>& consume,
                          std::int64_t chunk_elems) {
  const std::int64_t n = t.numel();
  // A quantized tensor converts in whole blocks only.
  const std::int64_t unit = t.codec ? std::max<std::int64_t>(t.codec->block_elems, 1) : 1;
  const std::int64_t chunk = std::max<std::int64_t>(unit, chunk_elems / unit * unit);
  buffer.resize(static_cast<std::size_t>(std::min(n, chunk)));
  for (std::int64_t first = 0; first < n; first += chunk) {
    const std::int64_t count = std::min(chunk, n - first);
    // Slices of whole units, one per thread's share; to_float on each is independent.
    const std::int64_t units = (count + unit - 1) / unit;
    constexpr std::int64_t kSlices = 64;
    std::exception_ptr error;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (std::int64_t s = 0; s < kSlices; ++s) {
      const std::int64_t begin = std::min(count, units * s / kSlices * unit);
      const std::int64_t end = std::min(count, units * (s + 1) / kSlices * unit);
      if (begin >= end) continue;
      try {
        t.to_float(first + begin, std::span<float>(buffer.data() + begin, static_cast<std::size_t>(end - begin)));
      } catch (...) {
#ifdef _OPENMP
#pragma omp critical(fusecheck_float_chunks_error)
#endif
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    consume(first, std::span<const float>(buffer.data(), static_cast<std::size_t>(count)));
  }
}

void for_each_float_chunk(const TensorView& t, const std::function<void(std::int64_t, std::span<const float>)>& consume,
                          std::int64_t chunk_elems) {
  std::vector<float> buffer;
  for_each_float_chunk(t, buffer, consume, chunk_elems);
}

}  // namespace fusecheck
