// Fixture builders for the checkpoint tests (see fixtures.h).
#include "tests/checkpoint/fixtures.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>

#include <fmt/core.h>

#include "harness/checkpoint/gguf_quants.h"

namespace fusecheck::test {

std::vector<NamedTensor> tiny_tensors(const TinyModel& m, bool gguf_names, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<NamedTensor> out;
  const auto matrix = [&](std::string name, std::int64_t rows, std::int64_t cols) {
    NamedTensor t{std::move(name), {rows, cols}, {}};
    const float scale = 1.0f / std::sqrt(static_cast<float>(cols));
    for (std::int64_t i = 0; i < rows * cols; ++i) t.values.push_back(uniform(rng) * scale);
    out.push_back(std::move(t));
  };
  const auto vector = [&](std::string name, std::int64_t n, float center, float spread) {
    NamedTensor t{std::move(name), {n}, {}};
    for (std::int64_t i = 0; i < n; ++i) t.values.push_back(center + spread * uniform(rng));
    out.push_back(std::move(t));
  };
  const std::int64_t h = m.hidden, q = m.heads * m.head_dim, kv = m.kv_heads * m.head_dim;
  const std::int64_t inter = m.intermediate, vocab = m.vocab;
  matrix(gguf_names ? "token_embd.weight" : "model.embed_tokens.weight", vocab, h);
  for (int l = 0; l < m.layers; ++l) {
    const auto n = [&](const char* hf, const char* gguf) {
      return gguf_names ? fmt::format("blk.{}.{}", l, gguf) : fmt::format("model.layers.{}.{}", l, hf);
    };
    vector(n("input_layernorm.weight", "attn_norm.weight"), h, 1.0f, 0.3f);
    matrix(n("self_attn.q_proj.weight", "attn_q.weight"), q, h);
    matrix(n("self_attn.k_proj.weight", "attn_k.weight"), kv, h);
    matrix(n("self_attn.v_proj.weight", "attn_v.weight"), kv, h);
    if (m.qkv_bias()) {
      vector(n("self_attn.q_proj.bias", "attn_q.bias"), q, 0.0f, 0.1f);
      vector(n("self_attn.k_proj.bias", "attn_k.bias"), kv, 0.0f, 0.1f);
      vector(n("self_attn.v_proj.bias", "attn_v.bias"), kv, 0.0f, 0.1f);
    }
    if (m.qk_norm()) {
      vector(n("self_attn.q_norm.weight", "attn_q_norm.weight"), m.head_dim, 1.0f, 0.3f);
      vector(n("self_attn.k_norm.weight", "attn_k_norm.weight"), m.head_dim, 1.0f, 0.3f);
    }
    matrix(n("self_attn.o_proj.weight", "attn_output.weight"), h, q);
    vector(n("post_attention_layernorm.weight", "ffn_norm.weight"), h, 1.0f, 0.3f);
    matrix(n("mlp.gate_proj.weight", "ffn_gate.weight"), inter, h);
    matrix(n("mlp.up_proj.weight", "ffn_up.weight"), inter, h);
    matrix(n("mlp.down_proj.weight", "ffn_down.weight"), h, inter);
  }
  vector(gguf_names ? "output_norm.weight" : "model.norm.weight", h, 1.0f, 0.3f);
  if (!m.tied) matrix(gguf_names ? "output.weight" : "lm_head.weight", vocab, h);
  return out;
}

nlohmann::json tiny_hf_config(const TinyModel& m) {
  const std::string model_type = m.hf_class == "Qwen3ForCausalLM"   ? "qwen3"
                                 : m.hf_class == "Qwen2ForCausalLM" ? "qwen2"
                                 : m.hf_class == "MistralForCausalLM" ? "mistral"
                                                                      : "llama";
  return {
      {"architectures", {m.hf_class}},
      {"model_type", model_type},
      {"hidden_size", m.hidden},
      {"num_hidden_layers", m.layers},
      {"num_attention_heads", m.heads},
      {"num_key_value_heads", m.kv_heads},
      {"head_dim", m.head_dim},
      {"intermediate_size", m.intermediate},
      {"vocab_size", m.vocab},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 500000.0},
      {"max_position_embeddings", 4096},
      {"tie_word_embeddings", m.tied},
      {"hidden_act", "silu"},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
  };
}

std::vector<TensorToWrite> encode(const std::vector<NamedTensor>& tensors, DType dtype) {
  std::vector<TensorToWrite> out;
  for (const NamedTensor& t : tensors) out.push_back(make_tensor(t.name, dtype, t.shape, t.values));
  return out;
}

NamedTensor* find_tensor(std::vector<NamedTensor>& tensors, const std::string& name) {
  for (NamedTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

void erase_tensor(std::vector<NamedTensor>& tensors, const std::string& name) {
  std::erase_if(tensors, [&](const NamedTensor& t) { return t.name == name; });
}

void write_tiny_hf(const std::filesystem::path& dir, const TinyModel& m, DType dtype, std::uint64_t shard_bytes) {
  write_hf_checkpoint(dir, tiny_hf_config(m).dump(2), encode(tiny_tensors(m, false), dtype), shard_bytes);
}

void write_bytes(const std::filesystem::path& file, const std::vector<std::byte>& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::byte> read_bytes(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

void put_u32(std::vector<std::byte>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
}
void put_u64(std::vector<std::byte>& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((v >> (8 * i)) & 0xFF));
}
void put_string(std::vector<std::byte>& out, const std::string& s) {
  put_u64(out, s.size());
  for (const char c : s) out.push_back(static_cast<std::byte>(c));
}

std::vector<std::byte> safetensors_image(const std::string& header, std::size_t data_bytes) {
  std::vector<std::byte> out;
  put_u64(out, header.size());
  for (const char c : header) out.push_back(static_cast<std::byte>(c));
  // Non-zero data so nothing passes by reading zeros.
  for (std::size_t i = 0; i < data_bytes; ++i) out.push_back(static_cast<std::byte>(0x3C + i % 7));
  return out;
}

void GgufWriter::raw_kv(const std::string& key, std::uint32_t type, const std::vector<std::byte>& payload) {
  put_string(kv_, key);
  put_u32(kv_, type);
  kv_.insert(kv_.end(), payload.begin(), payload.end());
  ++n_kv_;
}

void GgufWriter::kv_u32(const std::string& key, std::uint32_t v) {
  std::vector<std::byte> p;
  put_u32(p, v);
  raw_kv(key, kU32, p);
}
void GgufWriter::kv_i32(const std::string& key, std::int32_t v) {
  std::vector<std::byte> p;
  put_u32(p, static_cast<std::uint32_t>(v));
  raw_kv(key, kI32, p);
}
void GgufWriter::kv_f32(const std::string& key, float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, 4);
  std::vector<std::byte> p;
  put_u32(p, bits);
  raw_kv(key, kF32, p);
}
void GgufWriter::kv_string(const std::string& key, const std::string& v) {
  std::vector<std::byte> p;
  put_string(p, v);
  raw_kv(key, kString, p);
}
void GgufWriter::kv_string_array(const std::string& key, const std::vector<std::string>& v) {
  std::vector<std::byte> p;
  put_u32(p, kString);
  put_u64(p, v.size());
  for (const auto& s : v) put_string(p, s);
  raw_kv(key, kArray, p);
}
void GgufWriter::kv_i32_array(const std::string& key, const std::vector<std::int32_t>& v) {
  std::vector<std::byte> p;
  put_u32(p, kI32);
  put_u64(p, v.size());
  for (const auto x : v) put_u32(p, static_cast<std::uint32_t>(x));
  raw_kv(key, kArray, p);
}

void GgufWriter::tensor(const std::string& name, std::uint32_t ggml_type, const std::vector<std::int64_t>& shape,
                        const std::vector<std::byte>& data) {
  tensors_.push_back({name, ggml_type, shape, data, -1});
}

void GgufWriter::tensor(const NamedTensor& t, DType dtype) {
  const TensorToWrite w = make_tensor(t.name, dtype, t.shape, t.values);
  const std::uint32_t type = dtype == DType::F32 ? 0 : dtype == DType::F16 ? 1 : dtype == DType::BF16 ? 30 : 28;
  tensor(t.name, type, t.shape, w.data);
}

void GgufWriter::set_last_offset(std::uint64_t offset) { tensors_.back().offset_override = static_cast<std::int64_t>(offset); }

std::vector<std::byte> GgufWriter::bytes() const {
  std::vector<std::byte> out;
  for (const char c : std::string("GGUF")) out.push_back(static_cast<std::byte>(c));
  put_u32(out, version);
  put_u64(out, tensors_.size());
  put_u64(out, n_kv_);
  out.insert(out.end(), kv_.begin(), kv_.end());
  const auto aligned = [&](std::uint64_t x) { return (x + alignment - 1) / alignment * alignment; };
  std::uint64_t offset = 0;
  std::vector<std::uint64_t> offsets;
  for (const Tensor& t : tensors_) {
    put_string(out, t.name);
    put_u32(out, static_cast<std::uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put_u64(out, static_cast<std::uint64_t>(*it));
    put_u32(out, t.type);
    put_u64(out, t.offset_override >= 0 ? static_cast<std::uint64_t>(t.offset_override) : offset);
    offsets.push_back(offset);
    offset = aligned(offset + t.data.size());
  }
  out.resize(aligned(out.size()), std::byte{0});
  const std::size_t data_start = out.size();
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    out.resize(data_start + offsets[i], std::byte{0});
    out.insert(out.end(), tensors_[i].data.begin(), tensors_[i].data.end());
  }
  if (!tensors_.empty()) out.resize(data_start + offset, std::byte{0});
  return out;
}

GgufWriter tiny_gguf(const TinyModel& m, const std::string& arch, DType dtype,
                     const std::vector<std::string>& drop_tensors, const std::string& tokenizer_model,
                     std::vector<std::string> pieces) {
  GgufWriter w;
  w.kv_string("general.architecture", arch);
  w.kv_u32("general.alignment", 32);
  w.kv_u32(arch + ".block_count", static_cast<std::uint32_t>(m.layers));
  w.kv_u32(arch + ".embedding_length", static_cast<std::uint32_t>(m.hidden));
  w.kv_u32(arch + ".feed_forward_length", static_cast<std::uint32_t>(m.intermediate));
  w.kv_u32(arch + ".attention.head_count", static_cast<std::uint32_t>(m.heads));
  w.kv_u32(arch + ".attention.head_count_kv", static_cast<std::uint32_t>(m.kv_heads));
  w.kv_u32(arch + ".attention.key_length", static_cast<std::uint32_t>(m.head_dim));
  w.kv_u32(arch + ".rope.dimension_count", static_cast<std::uint32_t>(m.head_dim));
  w.kv_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-6f);
  w.kv_f32(arch + ".rope.freq_base", 1000000.0f);
  w.kv_u32(arch + ".context_length", 256);
  w.kv_string("tokenizer.ggml.model", tokenizer_model);
  if (pieces.empty()) {
    pieces = {"<unk>", "<s>", "</s>", "<0x0A>", "\xE2\x96\x81" "Once", "\xE2\x96\x81upon",
              "\xE2\x96\x81" "a", "\xE2\x96\x81time", ",", "."};
  }
  for (int i = static_cast<int>(pieces.size()); i < m.vocab; ++i) pieces.push_back(fmt::format("p{}", i));
  w.kv_string_array("tokenizer.ggml.tokens", pieces);
  w.kv_u32("tokenizer.ggml.bos_token_id", 1);
  w.kv_u32("tokenizer.ggml.eos_token_id", 2);
  for (const NamedTensor& t : tiny_tensors(m, true)) {
    if (std::find(drop_tensors.begin(), drop_tensors.end(), t.name) == drop_tensors.end()) w.tensor(t, dtype);
  }
  return w;
}

namespace {
// Byte offsets of the fp16 scales in a block of each type (ggml-common.h layouts).
std::vector<std::size_t> scale_offsets(std::uint32_t ggml_type) {
  switch (static_cast<GgmlQuant>(ggml_type)) {
    case GgmlQuant::Q4_0: case GgmlQuant::Q5_0: case GgmlQuant::Q8_0: return {0};
    case GgmlQuant::Q4_1: case GgmlQuant::Q5_1: case GgmlQuant::Q4_K: case GgmlQuant::Q5_K: return {0, 2};
    case GgmlQuant::Q2_K: return {80, 82};
    case GgmlQuant::Q3_K: return {108};
    case GgmlQuant::Q6_K: return {208};
  }
  throw std::invalid_argument(fmt::format("no quantized ggml type {}", ggml_type));
}
}  // namespace

std::vector<std::byte> random_quant_blocks(std::uint32_t ggml_type, std::int64_t n_blocks, std::uint64_t seed,
                                           bool model_scales) {
  const BlockCodec* codec = ggml_quant_codec(ggml_type);
  if (!codec) throw std::invalid_argument(fmt::format("no quantized ggml type {}", ggml_type));
  std::mt19937_64 rng(seed);
  std::vector<std::byte> out(static_cast<std::size_t>(n_blocks) * codec->block_bytes);
  for (std::byte& b : out) b = static_cast<std::byte>(rng() & 0xFF);
  std::uniform_real_distribution<float> small(1e-3f, 1e-2f);
  for (std::int64_t i = 0; i < n_blocks; ++i) {
    for (const std::size_t offset : scale_offsets(ggml_type)) {
      std::uint16_t bits = model_scales ? float_to_fp16(small(rng)) : static_cast<std::uint16_t>(rng() & 0xFFFF);
      if ((bits & 0x7C00u) == 0x7C00u) bits &= 0xBFFFu;  // Inf/NaN exponent -> finite, sign kept
      std::byte* p = out.data() + static_cast<std::size_t>(i) * codec->block_bytes + offset;
      p[0] = static_cast<std::byte>(bits & 0xFF);
      p[1] = static_cast<std::byte>(bits >> 8);
    }
  }
  return out;
}

GgufWriter tiny_gguf_quantized(const TinyModel& m, const std::string& arch, std::uint32_t ggml_type,
                               std::uint64_t seed, const std::vector<std::string>& drop_tensors) {
  const BlockCodec* codec = ggml_quant_codec(ggml_type);
  if (!codec) throw std::invalid_argument(fmt::format("no quantized ggml type {}", ggml_type));
  std::vector<std::string> matrices = drop_tensors;
  const std::vector<NamedTensor> tensors = tiny_tensors(m, true);
  for (const NamedTensor& t : tensors) {
    if (t.shape.size() == 2) matrices.push_back(t.name);
  }
  GgufWriter w = tiny_gguf(m, arch, DType::F32, matrices);
  for (const NamedTensor& t : tensors) {
    if (t.shape.size() != 2 || std::find(drop_tensors.begin(), drop_tensors.end(), t.name) != drop_tensors.end()) continue;
    const std::int64_t n = t.shape[0] * t.shape[1];
    w.tensor(t.name, ggml_type, t.shape, random_quant_blocks(ggml_type, n / codec->block_elems, seed++, true));
  }
  return w;
}

}  // namespace fusecheck::test
