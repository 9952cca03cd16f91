// RandomCheckpoint: a checkpoint held in memory, with seeded random weights shaped by a
// ModelSpec and HF tensor names, so tests and benchmarks of the CPU paths need no files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "harness/core/checkpoint.h"

namespace fusecheck::ref {

class RandomCheckpoint : public Checkpoint {
 public:
  // Matrices ~ N(0, 1/in) (activations keep their scale through depth), norm weights
  // 1 + 0.2 N(0,1), biases 0.1 N(0,1), embeddings N(0,1); values stored in `storage`
  // (F32, BF16 or F16) after rounding. norm_boost multiplies the k_norm weights (a
  // Qwen3-0.6B-like outlier study).
  RandomCheckpoint(const ModelSpec& spec, std::uint64_t seed, DType storage = DType::F32,
                   double k_norm_boost = 1.0);

  // Overwrites one tensor's values (by stored name), e.g. with small integers.
  void set_values(const std::string& name, const std::vector<float>& values);

 private:
  void add(const std::string& name, std::vector<std::int64_t> shape, std::vector<float> values);
  void bind();

  DType storage_;
  std::vector<std::vector<std::byte>> buffers_;
};

}  // namespace fusecheck::ref
