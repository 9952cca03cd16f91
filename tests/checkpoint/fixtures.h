// Test-only builders for checkpoint fixtures: tiny seeded models in HF and GGUF naming,
// a small GGUF writer able to produce valid and deliberately corrupted files, and raw
// byte helpers for hand-written malformed safetensors.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/checkpoint/safetensors_writer.h"
#include "harness/core/dtype.h"

namespace fusecheck::test {

// Odd, distinct sizes so a transposed or swapped dimension fails a shape check.
struct TinyModel {
  std::string hf_class = "LlamaForCausalLM";  // or Qwen3ForCausalLM, Qwen2ForCausalLM, ...
  int layers = 2;
  int hidden = 12;
  int heads = 3;
  int kv_heads = 1;
  int head_dim = 4;
  int intermediate = 20;
  int vocab = 17;
  bool tied = false;
  bool qk_norm() const { return hf_class == "Qwen3ForCausalLM"; }
  bool qkv_bias() const { return hf_class == "Qwen2ForCausalLM"; }
};

struct NamedTensor {
  std::string name;
  std::vector<std::int64_t> shape;  // HF order
  std::vector<float> values;
};

// Every tensor of `m` with HF names (or llama.cpp GGUF names), seeded random values:
// projections ~ U(-1,1)/sqrt(fan_in), norm weights around 1.
std::vector<NamedTensor> tiny_tensors(const TinyModel& m, bool gguf_names, std::uint32_t seed = 7);
nlohmann::json tiny_hf_config(const TinyModel& m);
std::vector<TensorToWrite> encode(const std::vector<NamedTensor>& tensors, DType dtype);
NamedTensor* find_tensor(std::vector<NamedTensor>& tensors, const std::string& name);
void erase_tensor(std::vector<NamedTensor>& tensors, const std::string& name);

// Writes a HF directory for `m`.
void write_tiny_hf(const std::filesystem::path& dir, const TinyModel& m, DType dtype,
                   std::uint64_t shard_bytes = 0);

void write_bytes(const std::filesystem::path& file, const std::vector<std::byte>& bytes);
std::vector<std::byte> read_bytes(const std::filesystem::path& file);
// A safetensors image: 8-byte length + `header` (as given, unvalidated) + `data_bytes` zero-ish bytes.
std::vector<std::byte> safetensors_image(const std::string& header, std::size_t data_bytes);

// GGUF value type ids (the file format's).
enum GgufTypeId : std::uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// Builds GGUF images. Values are appended in the order given; `raw_kv` writes any bytes
// as a value so tests can plant bad lengths.
class GgufWriter {
 public:
  std::uint32_t version = 3;
  std::uint64_t alignment = 32;  // used for layout; written only via kv_u32("general.alignment")

  void kv_u32(const std::string& key, std::uint32_t v);
  void kv_i32(const std::string& key, std::int32_t v);
  void kv_f32(const std::string& key, float v);
  void kv_string(const std::string& key, const std::string& v);
  void kv_string_array(const std::string& key, const std::vector<std::string>& v);
  void kv_i32_array(const std::string& key, const std::vector<std::int32_t>& v);
  void raw_kv(const std::string& key, std::uint32_t type, const std::vector<std::byte>& payload);

  // `shape` in HF order (slowest first); written fastest first as GGUF does.
  void tensor(const std::string& name, std::uint32_t ggml_type, const std::vector<std::int64_t>& shape,
              const std::vector<std::byte>& data);
  void tensor(const NamedTensor& t, DType dtype);
  // Overrides the stored offset of the last tensor added.
  void set_last_offset(std::uint64_t offset);

  std::vector<std::byte> bytes() const;
  void write(const std::filesystem::path& file) const { write_bytes(file, bytes()); }

 private:
  struct Tensor {
    std::string name;
    std::uint32_t type;
    std::vector<std::int64_t> shape;
    std::vector<std::byte> data;
    std::int64_t offset_override = -1;
  };
  std::vector<std::byte> kv_;
  std::uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

// Little-endian encoders for raw payloads.
void put_u32(std::vector<std::byte>& out, std::uint32_t v);
void put_u64(std::vector<std::byte>& out, std::uint64_t v);
void put_string(std::vector<std::byte>& out, const std::string& s);

// A tiny GGUF model of architecture `arch` ("llama", "qwen2", "qwen3") from
// tiny_tensors(m, true), minus the tensors named in `drop_tensors`. The vocabulary is
// `pieces` (padded to m.vocab) or, when empty, a few sentencepiece pieces; see the .cpp.
GgufWriter tiny_gguf(const TinyModel& m, const std::string& arch, DType dtype,
                     const std::vector<std::string>& drop_tensors = {},
                     const std::string& tokenizer_model = "llama", std::vector<std::string> pieces = {});

// `n_blocks` seeded random blocks of a quantized ggml type (Q4_0 ... Q6_K): random bits,
// except that each fp16 scale of a block is finite: any finite fp16 when `model_scales` is
// false (exercises every exponent, subnormals included), else small positive scales
// (1e-3..1e-2) that give weights of a sane size for running a model.
std::vector<std::byte> random_quant_blocks(std::uint32_t ggml_type, std::int64_t n_blocks, std::uint64_t seed,
                                           bool model_scales);

// tiny_gguf(m, arch, F32) with every 2-D tensor stored as random blocks of `ggml_type`
// (so m's row lengths must be multiples of its block), 1-D tensors F32.
GgufWriter tiny_gguf_quantized(const TinyModel& m, const std::string& arch, std::uint32_t ggml_type,
                               std::uint64_t seed, const std::vector<std::string>& drop_tensors = {});

}  // namespace fusecheck::test
