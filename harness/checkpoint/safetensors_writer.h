// Writes safetensors files and Hugging Face checkpoint directories (config.json, one file
// or shards plus model.safetensors.index.json). Used by `fusecheck synth` and by tests
// that need a checkpoint with chosen contents. Output is deterministic byte for byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
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

// Streaming form, for checkpoints too large to hold in memory (a synthetic 8B model):
// tensors are declared up front and their bytes are asked for piece by piece.
struct TensorLayout {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::uint64_t nbytes() const;
};

// Fills `out` with bytes [byte_offset, byte_offset + out.size()) of tensor `index`.
// Pieces start at multiples of kTensorFillPieceBytes within the tensor and are at most
// that long, so a generator can cut its work at fixed boundaries.
inline constexpr std::uint64_t kTensorFillPieceBytes = std::uint64_t{64} << 20;
using TensorBytesFill =
    std::function<void(std::size_t index, std::uint64_t byte_offset, std::span<std::byte> out)>;

struct WrittenFile {
  std::filesystem::path path;
  std::uint64_t bytes = 0;
};

// Same layout rules as write_hf_checkpoint (which is built on it); returns the files
// written, config.json first. Stale model*.safetensors / index files in `dir` are removed
// first so an earlier, differently sharded checkpoint cannot shadow this one.
std::vector<WrittenFile> write_hf_checkpoint_streamed(const std::filesystem::path& dir,
                                                      const std::string& config_json,
                                                      const std::vector<TensorLayout>& tensors,
                                                      const TensorBytesFill& fill,
                                                      std::uint64_t shard_bytes = 0);

}  // namespace fusecheck
