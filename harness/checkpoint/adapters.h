// Architecture adapters: turn a HF config.json or GGUF metadata into a ModelSpec and bind
// the stored tensors to canonical roles (ModelTensors), checking every shape against the
// spec and every norm weight for NaN/Inf.
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "harness/checkpoint/gguf.h"
#include "harness/core/checkpoint.h"

namespace fusecheck {

// Stored tensors by name.
using TensorIndex = std::map<std::string, const TensorView*>;

struct AdaptedModel {
  ModelSpec spec;
  ModelTensors model;
};

// HF: `config_file` names config.json in errors about its fields; `tensor_source` names
// the safetensors file (or index) in errors about tensors.
AdaptedModel adapt_hf(const nlohmann::json& config, const std::string& config_file,
                      const std::string& tensor_source, const TensorIndex& tensors);

// GGUF architectures llama, qwen2, qwen3.
AdaptedModel adapt_gguf(const std::map<std::string, GgufValue>& metadata, const std::string& file,
                        const TensorIndex& tensors);

}  // namespace fusecheck
