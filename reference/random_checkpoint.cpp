// RandomCheckpoint: seeded random weights in memory (see the header).
#include "reference/random_checkpoint.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "reference/normal_sampler.h"

namespace fusecheck::ref {

namespace {
std::vector<float> normal_values(NormalSampler& normal, std::int64_t n, double mean, double sd) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(mean + sd * normal.next());
  return v;
}

std::vector<std::byte> encode(const std::vector<float>& values, DType dtype) {
  std::vector<std::byte> bytes(values.size() * dtype_size(dtype));
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(bytes.data() + 4 * i, &values[i], 4);
    } else {
      const std::uint16_t b = dtype == DType::BF16 ? float_to_bf16(values[i]) : float_to_fp16(values[i]);
      std::memcpy(bytes.data() + 2 * i, &b, 2);
    }
  }
  return bytes;
}
}  // namespace

RandomCheckpoint::RandomCheckpoint(const ModelSpec& spec, std::uint64_t seed, DType storage,
                                   double k_norm_boost)
    : storage_(storage) {
  if (storage != DType::F32 && storage != DType::BF16 && storage != DType::F16) {
    throw std::invalid_argument("RandomCheckpoint stores F32, BF16 or F16");
  }
  path_ = "random:" + spec.architecture + ":seed" + std::to_string(seed);
  format_ = "memory";
  spec_ = spec;
  spec_.dtype = std::string(dtype_name(storage));
  NormalSampler normal(seed);
  const std::int64_t h = spec.hidden, qw = spec.q_width(), kw = spec.kv_width(),
                     im = spec.intermediate, hd = spec.head_dim, vocab = spec.vocab;
  auto matrix = [&](const std::string& name, std::int64_t out, std::int64_t in) {
    add(name, {out, in}, normal_values(normal, out * in, 0.0, 1.0 / std::sqrt(static_cast<double>(in))));
  };
  add("model.embed_tokens.weight", {vocab, h}, normal_values(normal, vocab * h, 0.0, 1.0));
  for (int l = 0; l < spec.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {h}, normal_values(normal, h, 1.0, 0.2));
    matrix(p + "self_attn.q_proj.weight", qw, h);
    matrix(p + "self_attn.k_proj.weight", kw, h);
    matrix(p + "self_attn.v_proj.weight", kw, h);
    if (spec.has_qkv_bias) {
      add(p + "self_attn.q_proj.bias", {qw}, normal_values(normal, qw, 0.0, 0.1));
      add(p + "self_attn.k_proj.bias", {kw}, normal_values(normal, kw, 0.0, 0.1));
      add(p + "self_attn.v_proj.bias", {kw}, normal_values(normal, kw, 0.0, 0.1));
    }
    if (spec.has_qk_norm) {
      add(p + "self_attn.q_norm.weight", {hd}, normal_values(normal, hd, 1.0, 0.2));
      add(p + "self_attn.k_norm.weight", {hd}, normal_values(normal, hd, k_norm_boost, 0.2 * k_norm_boost));
    }
    matrix(p + "self_attn.o_proj.weight", h, qw);
    add(p + "post_attention_layernorm.weight", {h}, normal_values(normal, h, 1.0, 0.2));
    matrix(p + "mlp.gate_proj.weight", im, h);
    matrix(p + "mlp.up_proj.weight", im, h);
    matrix(p + "mlp.down_proj.weight", h, im);
  }
  add("model.norm.weight", {h}, normal_values(normal, h, 1.0, 0.2));
  if (!spec.tied_embeddings) matrix("lm_head.weight", vocab, h);
  bind();
}

void RandomCheckpoint::add(const std::string& name, std::vector<std::int64_t> shape,
                           std::vector<float> values) {
  buffers_.push_back(encode(values, storage_));
  TensorView t;
  t.name = name;
  t.dtype = storage_;
  t.shape = std::move(shape);
  t.file = path_.string();
  tensors_.push_back(std::move(t));
}

void RandomCheckpoint::set_values(const std::string& name, const std::vector<float>& values) {
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    if (tensors_[i].name != name) continue;
    if (static_cast<std::int64_t>(values.size()) != tensors_[i].numel()) {
      throw std::invalid_argument("set_values: wrong element count for " + name);
    }
    buffers_[i] = encode(values, storage_);
    tensors_[i].bytes = std::span<const std::byte>(buffers_[i]);
    return;
  }
  throw std::invalid_argument("set_values: no tensor " + name);
}

void RandomCheckpoint::bind() {
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    tensors_[i].bytes = std::span<const std::byte>(buffers_[i]);
  }
  auto get = [&](const std::string& name) -> const TensorView* {
    for (const auto& t : tensors_) {
      if (t.name == name) return &t;
    }
    return nullptr;
  };
  model_.embed = get("model.embed_tokens.weight");
  model_.final_norm = get("model.norm.weight");
  model_.lm_head = spec_.tied_embeddings ? model_.embed : get("lm_head.weight");
  model_.layers.resize(spec_.n_layers);
  for (int l = 0; l < spec_.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerTensors& t = model_.layers[l];
    t.attn_norm = get(p + "input_layernorm.weight");
    t.wq = get(p + "self_attn.q_proj.weight");
    t.wk = get(p + "self_attn.k_proj.weight");
    t.wv = get(p + "self_attn.v_proj.weight");
    t.bq = get(p + "self_attn.q_proj.bias");
    t.bk = get(p + "self_attn.k_proj.bias");
    t.bv = get(p + "self_attn.v_proj.bias");
    t.q_norm = get(p + "self_attn.q_norm.weight");
    t.k_norm = get(p + "self_attn.k_norm.weight");
    t.wo = get(p + "self_attn.o_proj.weight");
    t.mlp_norm = get(p + "post_attention_layernorm.weight");
    t.w_gate = get(p + "mlp.gate_proj.weight");
    t.w_up = get(p + "mlp.up_proj.weight");
    t.w_down = get(p + "mlp.down_proj.weight");
  }
}

}  // namespace fusecheck::ref
