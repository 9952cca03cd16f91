// Writes safetensors files and Hugging Face checkpoint directories (config.json, one file
// or shards plus model.safetensors.index.json). Used by `fusecheck synth` and by tests
// that need a checkpoint with chosen contents. Output is deterministic byte for byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "harness/core/dtype.h"

namespace fusecheck {

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> data;  // exactly numel * dtype_size bytes, little-endian
};

// Encodes float values into `dtype` (RNE for bf16/fp16).
TensorToWrite make_tensor(std::string name, DType dtype, std::vector<std::int64_t> shape,
                          const std::vector<float>& values);

// One safetensors file; tensors in the order given; header padded to 8 bytes.
void write_safetensors(const std::filesystem::path& file, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// A HF directory: config.json (text given) and model.safetensors, or, when the tensors'
// bytes pass `shard_bytes` (0 = never shard), model-0000i-of-0000n.safetensors shards and
// model.safetensors.index.json.
void write_hf_checkpoint(const std::filesystem::path& dir, const std::string& config_json,
                         const std::vector<TensorToWrite>& tensors, std::uint64_t shard_bytes = 0);

}  // namespace fusecheck
