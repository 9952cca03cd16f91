// Checkpoint: a model on disk (Hugging Face safetensors directory or GGUF file), memory
// mapped. It exposes the raw tensors, the ModelSpec built by the architecture adapter,
// and the model's tensors under canonical roles so later stages never see file naming.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness/core/model_spec.h"
#include "harness/core/tensor.h"

namespace fusecheck {

// The tensors of one decoder layer. Pointers into Checkpoint::tensors(); null when the
// architecture has no such tensor (bias, q_norm/k_norm). Matrices are [out x in].
struct LayerTensors {
  const TensorView* attn_norm = nullptr;   // input_layernorm [hidden]
  const TensorView* wq = nullptr;          // [q_width x hidden]
  const TensorView* wk = nullptr;          // [kv_width x hidden]
  const TensorView* wv = nullptr;          // [kv_width x hidden]
  const TensorView* bq = nullptr;          // Qwen2 biases
  const TensorView* bk = nullptr;
  const TensorView* bv = nullptr;
  const TensorView* q_norm = nullptr;      // Qwen3 [head_dim]
  const TensorView* k_norm = nullptr;      // Qwen3 [head_dim]
  const TensorView* wo = nullptr;          // [hidden x q_width]
  const TensorView* mlp_norm = nullptr;    // post_attention_layernorm [hidden]
  const TensorView* w_gate = nullptr;      // [intermediate x hidden]
  const TensorView* w_up = nullptr;        // [intermediate x hidden]
  const TensorView* w_down = nullptr;      // [hidden x intermediate]
};

struct ModelTensors {
  const TensorView* embed = nullptr;       // [vocab x hidden]
  std::vector<LayerTensors> layers;
  const TensorView* final_norm = nullptr;  // [hidden]
  const TensorView* lm_head = nullptr;     // [vocab x hidden]; == embed when tied
};

class Checkpoint {
 public:
  virtual ~Checkpoint() = default;

  // Opens a HF directory (config.json + safetensors) or a .gguf file. Validates every
  // header, builds the ModelSpec, binds the canonical tensors. Throws InputError naming
  // the file (and tensor) on any problem.
  static std::unique_ptr<Checkpoint> open(const std::filesystem::path& path);

  const std::filesystem::path& path() const { return path_; }
  const std::string& format() const { return format_; }  // "hf-safetensors" or "gguf"
  const ModelSpec& spec() const { return spec_; }
  const ModelTensors& model() const { return model_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& stored_name) const;
  // Names of stored tensors the adapter did not bind to any role.
  std::vector<std::string> unused_tensors() const;
  // Vocabulary pieces (GGUF tokenizer.ggml.tokens); empty when the checkpoint has none.
  const std::vector<std::string>& vocab() const { return vocab_; }
  // Decodes token ids to text with sentencepiece conventions (U+2581 -> space, <0xNN>).
  std::string decode(const std::vector<int>& ids) const;
  // Raw metadata (config.json text for HF; GGUF key -> printable value).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 protected:
  std::filesystem::path path_;
  std::string format_;
  ModelSpec spec_;
  ModelTensors model_;
  std::vector<TensorView> tensors_;
  std::vector<std::string> vocab_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace fusecheck
