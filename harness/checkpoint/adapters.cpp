// HF and GGUF architecture adapters. Both describe their tensor naming with one
// TensorNames table and share the binding, shape and norm checks.
#include "harness/checkpoint/adapters.h"

#include <cmath>
#include <optional>
#include <set>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "harness/checkpoint/view_checks.h"
#include "harness/core/error.h"

namespace fusecheck {

namespace {

using json = nlohmann::json;

// Stored names of each role; "{}" stands for the layer index. An empty name means the
// architecture has no such tensor.
struct TensorNames {
  std::string embed, final_norm, lm_head;
  std::string attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, mlp_norm, w_gate, w_up, w_down;
};

TensorNames hf_names(const ModelSpec& spec) {
  TensorNames n;
  n.embed = "model.embed_tokens.weight";
  n.final_norm = "model.norm.weight";
  n.lm_head = "lm_head.weight";
  const std::string p = "model.layers.{}.";
  n.attn_norm = p + "input_layernorm.weight";
  n.wq = p + "self_attn.q_proj.weight";
  n.wk = p + "self_attn.k_proj.weight";
  n.wv = p + "self_attn.v_proj.weight";
  if (spec.has_qkv_bias) {
    n.bq = p + "self_attn.q_proj.bias";
    n.bk = p + "self_attn.k_proj.bias";
    n.bv = p + "self_attn.v_proj.bias";
  }
  if (spec.has_qk_norm) {
    n.q_norm = p + "self_attn.q_norm.weight";
    n.k_norm = p + "self_attn.k_norm.weight";
  }
  n.wo = p + "self_attn.o_proj.weight";
  n.mlp_norm = p + "post_attention_layernorm.weight";
  n.w_gate = p + "mlp.gate_proj.weight";
  n.w_up = p + "mlp.up_proj.weight";
  n.w_down = p + "mlp.down_proj.weight";
  return n;
}

// llama.cpp's names (gguf-py constants.py MODEL_TENSOR names).
TensorNames gguf_names(const ModelSpec& spec) {
  TensorNames n;
  n.embed = "token_embd.weight";
  n.final_norm = "output_norm.weight";
  n.lm_head = "output.weight";
  const std::string p = "blk.{}.";
  n.attn_norm = p + "attn_norm.weight";
  n.wq = p + "attn_q.weight";
  n.wk = p + "attn_k.weight";
  n.wv = p + "attn_v.weight";
  if (spec.has_qkv_bias) {
    n.bq = p + "attn_q.bias";
    n.bk = p + "attn_k.bias";
    n.bv = p + "attn_v.bias";
  }
  if (spec.has_qk_norm) {
    n.q_norm = p + "attn_q_norm.weight";
    n.k_norm = p + "attn_k_norm.weight";
  }
  n.wo = p + "attn_output.weight";
  n.mlp_norm = p + "ffn_norm.weight";
  n.w_gate = p + "ffn_gate.weight";
  n.w_up = p + "ffn_up.weight";
  n.w_down = p + "ffn_down.weight";
  return n;
}

std::string shape_string(const std::vector<std::int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Norm weights multiply every activation; a NaN or Inf there poisons the whole model,
// and norms are small, so they are the one place opening reads tensor data.
void check_finite(const TensorView& t) {
  const std::int64_t n = t.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    const double v = t.at(i);
    if (!std::isfinite(v)) {
      throw InputError(fmt::format("{}: tensor '{}'", t.file, t.name),
                       fmt::format("norm weight element {} is {}", i, std::isnan(v) ? "NaN" : "Inf"));
    }
  }
}

class Binder {
 public:
  Binder(const TensorIndex& tensors, std::string source, std::string arch_label)
      : tensors_(tensors), source_(std::move(source)), arch_label_(std::move(arch_label)) {}

  // The tensor stored as `name`, checked against `shape`; null only when `name` is empty.
  const TensorView* require(const std::string& name, std::vector<std::int64_t> shape) {
    if (name.empty()) return nullptr;
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      throw InputError(fmt::format("{}: tensor '{}'", source_, name),
                       fmt::format("missing ({} needs it)", arch_label_));
    }
    const TensorView* t = it->second;
    if (t->shape != shape) {
      throw InputError(fmt::format("{}: tensor '{}'", t->file, name),
                       fmt::format("shape {} does not match the model spec, expected {}",
                                   shape_string(t->shape), shape_string(shape)));
    }
    return t;
  }
  const TensorView* require_norm(const std::string& name, std::int64_t size) {
    const TensorView* t = require(name, {size});
    if (t != nullptr) check_finite(*t);
    return t;
  }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

 private:
  const TensorIndex& tensors_;
  std::string source_;
  std::string arch_label_;
};

std::string layer_name(const std::string& pattern, int layer) {
  return pattern.empty() ? pattern : fmt::format(fmt::runtime(pattern), layer);
}

// Shapes follow the spec; `lm_head_stored` false means the output projection is the
// embedding (tied).
ModelTensors bind(const ModelSpec& spec, const TensorNames& names, Binder& b) {
  const std::int64_t hidden = spec.hidden, q = spec.q_width(), kv = spec.kv_width();
  const std::int64_t inter = spec.intermediate, vocab = spec.vocab, hd = spec.head_dim;
  ModelTensors m;
  m.embed = b.require(names.embed, {vocab, hidden});
  // Layers are bound one at a time, so a config claiming absurdly many layers fails at
  // the first missing tensor rather than on allocation.
  for (int l = 0; l < spec.n_layers; ++l) {
    const auto n = [&](const std::string& pattern) { return layer_name(pattern, l); };
    LayerTensors t;
    t.attn_norm = b.require_norm(n(names.attn_norm), hidden);
    t.wq = b.require(n(names.wq), {q, hidden});
    t.wk = b.require(n(names.wk), {kv, hidden});
    t.wv = b.require(n(names.wv), {kv, hidden});
    t.bq = b.require(n(names.bq), {q});
    t.bk = b.require(n(names.bk), {kv});
    t.bv = b.require(n(names.bv), {kv});
    t.q_norm = b.require_norm(n(names.q_norm), hd);
    t.k_norm = b.require_norm(n(names.k_norm), hd);
    t.wo = b.require(n(names.wo), {hidden, q});
    t.mlp_norm = b.require_norm(n(names.mlp_norm), hidden);
    t.w_gate = b.require(n(names.w_gate), {inter, hidden});
    t.w_up = b.require(n(names.w_up), {inter, hidden});
    t.w_down = b.require(n(names.w_down), {hidden, inter});
    m.layers.push_back(t);
  }
  m.final_norm = b.require_norm(names.final_norm, hidden);
  m.lm_head = spec.tied_embeddings ? m.embed : b.require(names.lm_head, {vocab, hidden});
  return m;
}

// The storage type holding the most weight bytes ("BF16", or "Q4_K" for a quantized GGUF).
std::string dominant_dtype(const ModelTensors& m) {
  std::set<const TensorView*> seen;
  std::map<std::string, std::uint64_t> bytes;
  const auto add = [&](const TensorView* t) {
    if (t != nullptr && seen.insert(t).second) bytes[std::string(t->storage_name())] += t->bytes.size();
  };
  add(m.embed);
  add(m.final_norm);
  add(m.lm_head);
  for (const LayerTensors& l : m.layers) {
    for (const TensorView* t : {l.attn_norm, l.wq, l.wk, l.wv, l.bq, l.bk, l.bv, l.q_norm, l.k_norm,
                                l.wo, l.mlp_norm, l.w_gate, l.w_up, l.w_down}) {
      add(t);
    }
  }
  std::string best = "F32";
  std::uint64_t most = 0;
  for (const auto& [name, n] : bytes) {
    if (n > most) { best = name; most = n; }
  }
  return best;
}

// Consistency every adapter's spec must have before shapes are checked against it.
void validate_spec(const ModelSpec& s, const std::string& where) {
  const auto positive = [&](int v, const char* what) {
    if (v <= 0) throw InputError(where, fmt::format("{} must be positive, got {}", what, v));
  };
  positive(s.n_layers, "layer count");
  positive(s.hidden, "hidden size");
  positive(s.n_heads, "attention head count");
  positive(s.n_kv_heads, "key/value head count");
  positive(s.head_dim, "head_dim");
  positive(s.intermediate, "intermediate size");
  positive(s.vocab, "vocabulary size");
  if (s.n_heads % s.n_kv_heads != 0) {
    throw InputError(where, fmt::format("{} attention heads are not a multiple of {} key/value heads",
                                        s.n_heads, s.n_kv_heads));
  }
  if (s.head_dim % 2 != 0) throw InputError(where, fmt::format("head_dim {} is odd; RoPE needs pairs", s.head_dim));
  if (s.rope_dim != s.head_dim) {
    throw InputError(where, fmt::format("rotary dimension {} differs from head_dim {}: partial rotary "
                                        "embeddings are not supported", s.rope_dim, s.head_dim));
  }
  if (!(s.rms_eps > 0) || !std::isfinite(s.rms_eps)) {
    throw InputError(where, fmt::format("rms norm epsilon must be positive, got {}", s.rms_eps));
  }
  if (!(s.rope_theta > 0) || !std::isfinite(s.rope_theta)) {
    throw InputError(where, fmt::format("rope theta must be positive, got {}", s.rope_theta));
  }
}

// ---- Hugging Face config.json ----

class ConfigReader {
 public:
  ConfigReader(const json& config, std::string file) : c_(config), file_(std::move(file)) {}

  bool present(const char* key) const { return c_.contains(key) && !c_[key].is_null(); }

  int required_int(const char* key) const {
    if (!present(key)) throw InputError(file_, fmt::format("missing field '{}'", key));
    return to_int(key);
  }
  int int_or(const char* key, int fallback) const { return present(key) ? to_int(key) : fallback; }
  double double_or(const char* key, double fallback) const {
    if (!present(key)) return fallback;
    if (!c_[key].is_number()) throw InputError(file_, fmt::format("field '{}' is not a number: {}", key, c_[key].dump()));
    return c_[key].get<double>();
  }
  bool bool_or(const char* key, bool fallback) const {
    if (!present(key)) return fallback;
    if (!c_[key].is_boolean()) throw InputError(file_, fmt::format("field '{}' is not true/false: {}", key, c_[key].dump()));
    return c_[key].get<bool>();
  }
  // Token ids may be one integer or a list (Llama 3.1 lists several eos ids): the first.
  int token_id(const char* key) const {
    if (!present(key)) return -1;
    const json& v = c_[key];
    const json& first = v.is_array() && !v.empty() ? v[0] : v;
    if (!first.is_number_integer()) throw InputError(file_, fmt::format("field '{}' is not a token id: {}", key, v.dump()));
    return first.get<int>();
  }
  const json& at(const char* key) const { return c_[key]; }
  const std::string& file() const { return file_; }

 private:
  int to_int(const char* key) const {
    const json& v = c_[key];
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > INT32_MAX) {
      throw InputError(file_, fmt::format("field '{}' is not a non-negative integer: {}", key, v.dump()));
    }
    return v.get<int>();
  }

  const json& c_;
  std::string file_;
};

struct HfArchitecture {
  const char* class_name;
  const char* model_type;
  const char* family;  // ModelSpec::architecture
};
constexpr HfArchitecture kHfArchitectures[] = {
    {"Qwen3ForCausalLM", "qwen3", "qwen3"},
    {"Qwen2ForCausalLM", "qwen2", "qwen2"},
    {"LlamaForCausalLM", "llama", "llama"},
    {"MistralForCausalLM", "mistral", "llama"},
};

const HfArchitecture& hf_architecture(const ConfigReader& cfg) {
  std::string name;
  bool by_class = true;
  if (cfg.present("architectures")) {
    const json& a = cfg.at("architectures");
    if (!a.is_array() || a.empty() || !a[0].is_string()) {
      throw InputError(cfg.file(), fmt::format("field 'architectures' is not a list of names: {}", a.dump()));
    }
    name = a[0].get<std::string>();
  } else if (cfg.present("model_type") && cfg.at("model_type").is_string()) {
    name = cfg.at("model_type").get<std::string>();
    by_class = false;
  } else {
    throw InputError(cfg.file(), "missing field 'architectures'");
  }
  for (const HfArchitecture& arch : kHfArchitectures) {
    if (name == (by_class ? arch.class_name : arch.model_type)) return arch;
  }
  throw InputError(cfg.file(), fmt::format("unknown architecture '{}' (supported: Qwen3ForCausalLM, "
                                           "Qwen2ForCausalLM, LlamaForCausalLM, MistralForCausalLM)", name));
}

// transformers 4.x writes `rope_theta` and `rope_scaling`; transformers 5 writes one
// `rope_parameters` object holding rope_type, rope_theta and the scaling fields.
const char* hf_rope_key(const ConfigReader& cfg) {
  if (cfg.present("rope_scaling")) return "rope_scaling";
  if (cfg.present("rope_parameters")) return "rope_parameters";
  return nullptr;
}

double hf_rope_theta(const ConfigReader& cfg) {
  if (cfg.present("rope_theta") || !cfg.present("rope_parameters")) {
    return cfg.double_or("rope_theta", 10000.0);  // the config classes' default
  }
  const json& p = cfg.at("rope_parameters");
  const std::string where = cfg.file() + ": rope_parameters";
  if (!p.is_object()) throw InputError(where, "is not an object");
  return ConfigReader(p, where).double_or("rope_theta", 10000.0);
}

RopeScaling hf_rope_scaling(const ConfigReader& cfg) {
  RopeScaling r;
  const char* key = hf_rope_key(cfg);
  if (!key) return r;
  const json& s = cfg.at(key);
  const std::string where = cfg.file() + ": " + key;
  if (!s.is_object()) throw InputError(where, "is not an object");
  const ConfigReader sub(s, where);
  const json& type = s.contains("rope_type") ? s["rope_type"] : (s.contains("type") ? s["type"] : json());
  if (!type.is_string()) throw InputError(where, "missing field 'rope_type'");
  r.type = type.get<std::string>();
  if (r.type == "default") {
    r.type = "none";
  } else if (r.type == "linear") {
    if (!sub.present("factor")) throw InputError(where, "missing field 'factor'");
    r.factor = sub.double_or("factor", 1.0);
  } else if (r.type == "llama3") {
    for (const char* key : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
      if (!sub.present(key)) throw InputError(where, fmt::format("missing field '{}'", key));
    }
    r.factor = sub.double_or("factor", 1.0);
    r.low_freq_factor = sub.double_or("low_freq_factor", 1.0);
    r.high_freq_factor = sub.double_or("high_freq_factor", 4.0);
    r.original_max_position = sub.required_int("original_max_position_embeddings");
  } else {
    throw InputError(where, fmt::format("type '{}' is not supported (supported: linear, llama3)", r.type));
  }
  return r;
}

// ---- GGUF metadata ----

class GgufMeta {
 public:
  GgufMeta(const std::map<std::string, GgufValue>& kv, std::string file, std::string arch)
      : kv_(kv), file_(std::move(file)), arch_(std::move(arch)) {}

  const GgufValue* find(const std::string& key) const {
    const auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
  }
  // Architecture-scoped keys ("llama.block_count") are named without the prefix.
  int required_int(const std::string& key) const {
    const std::string full = arch_ + "." + key;
    if (find(full) == nullptr) throw InputError(file_, fmt::format("missing metadata key '{}'", full));
    return to_int(full);
  }
  int int_or(const std::string& key, int fallback) const {
    const std::string full = arch_ + "." + key;
    return find(full) == nullptr ? fallback : to_int(full);
  }
  double double_or(const std::string& full, double fallback) const {
    const GgufValue* v = find(full);
    if (v == nullptr) return fallback;
    const auto d = v->as_double();
    if (!d) throw InputError(file_, fmt::format("metadata key '{}' is not a number", full));
    return *d;
  }
  int token_id(const std::string& full) const { return find(full) == nullptr ? -1 : to_int(full); }

 private:
  int to_int(const std::string& full) const {
    const GgufValue& v = *find(full);
    if (v.as_array() != nullptr) {
      throw InputError(file_, fmt::format("metadata key '{}' holds one value per layer; "
                                          "per-layer values are not supported", full));
    }
    const auto i = v.as_int();
    if (!i || *i < 0 || *i > INT32_MAX) {
      throw InputError(file_, fmt::format("metadata key '{}' is not a non-negative integer: {}", full, v.to_string()));
    }
    return static_cast<int>(*i);
  }

  const std::map<std::string, GgufValue>& kv_;
  std::string file_;
  std::string arch_;
};

}  // namespace

static AdaptedModel adapt_hf_unchecked(const json& config, const std::string& config_file, const std::string& tensor_source,
                                const TensorIndex& tensors) {
  if (!config.is_object()) throw InputError(config_file, "is not a JSON object");
  const ConfigReader cfg(config, config_file);
  const HfArchitecture& arch = hf_architecture(cfg);
  AdaptedModel out;
  ModelSpec& s = out.spec;
  s.architecture = arch.family;
  s.source_format = "hf-safetensors";
  s.hidden = cfg.required_int("hidden_size");
  s.n_layers = cfg.required_int("num_hidden_layers");
  s.n_heads = cfg.required_int("num_attention_heads");
  s.intermediate = cfg.required_int("intermediate_size");
  s.vocab = cfg.required_int("vocab_size");
  // HF config classes default kv heads to the query heads (no GQA) and head_dim to
  // hidden / heads when the file leaves them out, except Qwen3Config, whose default
  // head_dim is 128.
  s.n_kv_heads = cfg.int_or("num_key_value_heads", s.n_heads);
  if (s.architecture == "qwen3") {
    s.head_dim = cfg.int_or("head_dim", 128);
  } else {
    if (s.n_heads > 0 && !cfg.present("head_dim") && s.hidden % s.n_heads != 0) {
      throw InputError(config_file, fmt::format("no 'head_dim' and hidden_size {} is not a multiple of "
                                                "num_attention_heads {}", s.hidden, s.n_heads));
    }
    s.head_dim = cfg.int_or("head_dim", s.n_heads > 0 ? s.hidden / s.n_heads : 0);
  }
  s.rope_dim = s.head_dim;
  s.rms_eps = cfg.double_or("rms_norm_eps", 1e-6);  // the default of all four config classes
  s.rope_theta = hf_rope_theta(cfg);
  s.rope_style = RopeStyle::NeoxHalfSplit;  // HF permutes q/k rows at conversion for this
  s.rope_scaling = hf_rope_scaling(cfg);
  s.has_qk_norm = s.architecture == "qwen3";
  s.has_qkv_bias = s.architecture == "qwen2";
  s.tied_embeddings = cfg.bool_or("tie_word_embeddings", false);
  s.max_position = cfg.int_or("max_position_embeddings", 0);
  s.bos_id = cfg.token_id("bos_token_id");
  s.eos_id = cfg.token_id("eos_token_id");
  // Variants whose extra tensors ModelTensors has no role for are refused, not misread.
  if (cfg.present("hidden_act") && cfg.at("hidden_act") != "silu") {
    throw InputError(config_file, fmt::format("hidden_act {} is not supported (only silu)", cfg.at("hidden_act").dump()));
  }
  if (s.architecture != "qwen2" && cfg.bool_or("attention_bias", false)) {
    throw InputError(config_file, "attention_bias = true is not supported for this architecture");
  }
  if (cfg.bool_or("mlp_bias", false)) throw InputError(config_file, "mlp_bias = true is not supported");
  validate_spec(s, config_file);

  Binder binder(tensors, tensor_source, arch.class_name);
  out.model = bind(s, hf_names(s), binder);
  s.dtype = dominant_dtype(out.model);
  return out;
}

static AdaptedModel adapt_gguf_unchecked(const std::map<std::string, GgufValue>& metadata, const std::string& file,
                                         const TensorIndex& tensors) {
  const auto arch_it = metadata.find("general.architecture");
  if (arch_it == metadata.end()) throw InputError(file, "missing metadata key 'general.architecture'");
  const std::string* arch = arch_it->second.as_string();
  if (arch == nullptr) throw InputError(file, "metadata key 'general.architecture' is not a string");
  if (*arch != "llama" && *arch != "qwen2" && *arch != "qwen3") {
    throw InputError(file, fmt::format("unknown architecture '{}' (supported: llama, qwen2, qwen3)", *arch));
  }
  const GgufMeta meta(metadata, file, *arch);
  AdaptedModel out;
  ModelSpec& s = out.spec;
  s.architecture = *arch;
  s.source_format = "gguf";
  s.hidden = meta.required_int("embedding_length");
  s.n_layers = meta.required_int("block_count");
  s.n_heads = meta.required_int("attention.head_count");
  s.intermediate = meta.required_int("feed_forward_length");
  s.n_kv_heads = meta.int_or("attention.head_count_kv", s.n_heads);
  s.head_dim = meta.int_or("attention.key_length", s.n_heads > 0 ? s.hidden / s.n_heads : 0);
  s.rope_dim = meta.int_or("rope.dimension_count", s.head_dim);
  if (meta.find(*arch + ".attention.layer_norm_rms_epsilon") == nullptr) {
    throw InputError(file, fmt::format("missing metadata key '{}.attention.layer_norm_rms_epsilon'", *arch));
  }
  s.rms_eps = meta.double_or(*arch + ".attention.layer_norm_rms_epsilon", 0.0);
  s.rope_theta = meta.double_or(*arch + ".rope.freq_base", 10000.0);
  // llama.cpp converts HF llama q/k back to the original interleaved layout and runs
  // them with "normal" RoPE; qwen2/qwen3 are stored unpermuted and run with NEOX RoPE.
  s.rope_style = *arch == "llama" ? RopeStyle::Interleaved : RopeStyle::NeoxHalfSplit;
  if (const GgufValue* type = meta.find(*arch + ".rope.scaling.type")) {
    const std::string* t = type->as_string();
    if (t == nullptr || (*t != "none" && *t != "linear")) {
      throw InputError(file, fmt::format("rope scaling type '{}' is not supported (supported: none, linear)",
                                         type->to_string()));
    }
    if (*t == "linear") {
      s.rope_scaling.type = "linear";
      s.rope_scaling.factor = meta.double_or(*arch + ".rope.scaling.factor", 1.0);
    }
  }
  if (tensors.count("rope_freqs.weight") != 0) {
    throw InputError(file + ": tensor 'rope_freqs.weight'",
                     "per-frequency RoPE factors (Llama 3.1 style) are not supported");
  }
  s.has_qk_norm = *arch == "qwen3";
  s.has_qkv_bias = *arch == "qwen2";
  s.max_position = meta.int_or("context_length", 0);
  s.bos_id = meta.token_id("tokenizer.ggml.bos_token_id");
  s.eos_id = meta.token_id("tokenizer.ggml.eos_token_id");
  // The vocabulary is the embedding's row count; the tokenizer's token list, when
  // present, must agree with it (shape check below).
  const auto vocab = metadata.find("tokenizer.ggml.tokens");
  if (vocab != metadata.end() && vocab->second.as_array() != nullptr) {
    s.vocab = static_cast<int>(vocab->second.as_array()->size());
  } else if (const auto embed = tensors.find("token_embd.weight");
             embed != tensors.end() && embed->second->shape.size() == 2) {
    s.vocab = static_cast<int>(embed->second->shape[0]);
  }
  s.vocab = meta.int_or("vocab_size", s.vocab);
  // llama.cpp ties the output projection to the embedding when output.weight is absent.
  s.tied_embeddings = tensors.count("output.weight") == 0;
  validate_spec(s, file);

  Binder binder(tensors, file, "GGUF " + *arch);
  out.model = bind(s, gguf_names(s), binder);
  s.dtype = dominant_dtype(out.model);
  return out;
}

AdaptedModel adapt_hf(const json& config, const std::string& config_file, const std::string& tensor_source,
                      const TensorIndex& tensors) {
  return with_printable_errors([&] { return adapt_hf_unchecked(config, config_file, tensor_source, tensors); });
}

AdaptedModel adapt_gguf(const std::map<std::string, GgufValue>& metadata, const std::string& file,
                        const TensorIndex& tensors) {
  return with_printable_errors([&] { return adapt_gguf_unchecked(metadata, file, tensors); });
}

}  // namespace fusecheck
