// Bad-input fixtures (see bad_inputs.h), one per case the issue lists.
#include "tests/checkpoint/bad_inputs.h"

#include <cmath>
#include <fstream>
#include <limits>

#include "tests/checkpoint/fixtures.h"

namespace fusecheck::test {

namespace {

namespace fs = std::filesystem;

// A HF directory whose model.safetensors is `image` (hand-written bytes).
fs::path hf_dir_with_image(const fs::path& dir, const std::vector<std::byte>& image) {
  fs::create_directories(dir / "model");
  std::ofstream(dir / "model" / "config.json") << tiny_hf_config(TinyModel{}).dump();
  write_bytes(dir / "model" / "model.safetensors", image);
  return dir / "model";
}

fs::path hf_dir_with_header(const fs::path& dir, const std::string& header, std::size_t data_bytes) {
  return hf_dir_with_image(dir, safetensors_image(header, data_bytes));
}

// A valid tiny HF model whose config.json or tensors were edited first.
fs::path edited_hf(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit_config,
                   const std::function<void(std::vector<NamedTensor>&)>& edit_tensors) {
  const TinyModel m{.hf_class = "Qwen3ForCausalLM"};
  nlohmann::json config = tiny_hf_config(m);
  std::vector<NamedTensor> tensors = tiny_tensors(m, false);
  if (edit_config) edit_config(config);
  if (edit_tensors) edit_tensors(tensors);
  write_hf_checkpoint(dir / "model", config.dump(2), encode(tensors, DType::F32));
  return dir / "model";
}

fs::path gguf_file(const fs::path& dir, const GgufWriter& w) {
  fs::create_directories(dir);
  w.write(dir / "model.gguf");
  return dir / "model.gguf";
}

// A small valid GGUF with one extra key/value whose payload is given raw.
GgufWriter gguf_with_raw_kv(std::uint32_t type, const std::vector<std::byte>& payload) {
  GgufWriter w = tiny_gguf(TinyModel{}, "llama", DType::F32);
  w.raw_kv("test.bad", type, payload);
  return w;
}

std::vector<BadInput> make_cases() {
  std::vector<BadInput> cases;
  // ---- safetensors ----
  cases.push_back({"SafetensorsTruncated",
                   [](const fs::path& d) {
                     auto image = safetensors_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
                     image.resize(5);
                     return hf_dir_with_image(d, image);
                   },
                   {"truncated"}, "model/model.safetensors"});
  cases.push_back({"SafetensorsTruncatedInData",
                   [](const fs::path& d) {
                     auto image = safetensors_image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 16);
                     image.resize(image.size() - 6);
                     return hf_dir_with_image(d, image);
                   },
                   {"tensor 'a'", "past the end of the data (10 bytes)"}, "model/model.safetensors"});
  cases.push_back({"SafetensorsHeaderLengthPastEnd",
                   [](const fs::path& d) {
                     auto image = safetensors_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
                     image[1] = std::byte{0x7F};  // header length now ~32 KiB, the file is ~70 bytes
                     return hf_dir_with_image(d, image);
                   },
                   {"header length", "past the end"}, "model/model.safetensors"});
  cases.push_back({"SafetensorsHeaderInvalidJson",
                   [](const fs::path& d) { return hf_dir_with_header(d, R"({"a":{"dtype":"F32",)", 0); },
                   {"not valid JSON"}, "model/model.safetensors"});
  cases.push_back({"SafetensorsHeaderNotObject",
                   [](const fs::path& d) { return hf_dir_with_header(d, R"([1, 2, 3])", 0); },
                   {"not an object"}, "model/model.safetensors"});
  cases.push_back({"SafetensorsOffsetsOutOfRange",
                   [](const fs::path& d) {
                     return hf_dir_with_header(d, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", 16);
                   },
                   {"tensor 'w'", "past the end"}, "model/model.safetensors"});
  cases.push_back({"SafetensorsOffsetsOverlap",
                   [](const fs::path& d) {
                     return hf_dir_with_header(d,
                                               R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                               16);
                   },
                   {"tensor 'b'", "overlaps", "'a'"}, "model/model.safetensors"});
  cases.push_back({"SafetensorsDataSizeNotShapeTimesDtype",
                   [](const fs::path& d) {
                     return hf_dir_with_header(d, R"({"w":{"dtype":"BF16","shape":[3,5],"data_offsets":[0,32]}})", 32);
                   },
                   {"tensor 'w'", "data size 32", "[3,5]", "30 bytes"}, "model/model.safetensors"});
  cases.push_back({"SafetensorsUnknownDtype",
                   [](const fs::path& d) {
                     return hf_dir_with_header(d, R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", 4);
                   },
                   {"tensor 'w'", "unsupported dtype 'F8_E4M3'"}, "model/model.safetensors"});
  cases.push_back({"SafetensorsDuplicateNames",
                   [](const fs::path& d) {
                     return hf_dir_with_header(d,
                                               R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                               R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                               8);
                   },
                   {"tensor 'w'", "duplicate"}, "model/model.safetensors"});
  cases.push_back({"IndexNamesMissingShard",
                   [](const fs::path& d) {
                     write_tiny_hf(d / "model", TinyModel{}, DType::F32, 4000);
                     const auto index = nlohmann::json::parse(std::ifstream(d / "model" / "model.safetensors.index.json"));
                     fs::remove(d / "model" / index["weight_map"]["model.norm.weight"].get<std::string>());
                     return d / "model";
                   },
                   {"names shard 'model-0000", ".safetensors', which does not exist"},
                   "model/model.safetensors.index.json"});
  cases.push_back({"IndexListsTensorAbsentFromShard",
                   [](const fs::path& d) {
                     write_tiny_hf(d / "model", TinyModel{}, DType::F32, 4000);
                     auto index = nlohmann::json::parse(std::ifstream(d / "model" / "model.safetensors.index.json"));
                     index["weight_map"]["model.layers.9.mlp.extra.weight"] = index["weight_map"]["model.norm.weight"];
                     std::ofstream(d / "model" / "model.safetensors.index.json") << index.dump();
                     return d / "model";
                   },
                   {"tensor 'model.layers.9.mlp.extra.weight'", "absent"}, "model/model.safetensors.index.json"});
  // ---- config.json and adapters ----
  cases.push_back({"ConfigMissingField",
                   [](const fs::path& d) { return edited_hf(d, [](auto& c) { c.erase("num_attention_heads"); }, {}); },
                   {"missing field 'num_attention_heads'"}, "model/config.json"});
  cases.push_back({"ConfigUnknownArchitecture",
                   [](const fs::path& d) {
                     return edited_hf(d, [](auto& c) { c["architectures"] = {"GPTNeoXForCausalLM"}; }, {});
                   },
                   {"unknown architecture 'GPTNeoXForCausalLM'"}, "model/config.json"});
  cases.push_back({"MissingRequiredTensor",
                   [](const fs::path& d) {
                     return edited_hf(d, {}, [](auto& t) { erase_tensor(t, "model.layers.1.self_attn.k_norm.weight"); });
                   },
                   {"tensor 'model.layers.1.self_attn.k_norm.weight'", "missing"}, "model/model.safetensors"});
  cases.push_back({"TensorShapeMismatch",
                   [](const fs::path& d) {
                     return edited_hf(d, {}, [](auto& t) {
                       NamedTensor* w = find_tensor(t, "model.layers.0.mlp.up_proj.weight");
                       std::swap(w->shape[0], w->shape[1]);  // stored transposed
                     });
                   },
                   {"tensor 'model.layers.0.mlp.up_proj.weight'", "shape [12, 20]", "expected [20, 12]"},
                   "model/model.safetensors"});
  cases.push_back({"NanInNormWeight",
                   [](const fs::path& d) {
                     return edited_hf(d, {}, [](auto& t) {
                       find_tensor(t, "model.layers.1.self_attn.q_norm.weight")->values[2] = std::nanf("");
                     });
                   },
                   {"tensor 'model.layers.1.self_attn.q_norm.weight'", "element 2 is NaN"}, "model/model.safetensors"});
  cases.push_back({"InfInNormWeight",
                   [](const fs::path& d) {
                     return edited_hf(d, {}, [](auto& t) {
                       find_tensor(t, "model.norm.weight")->values[5] = -std::numeric_limits<float>::infinity();
                     });
                   },
                   {"tensor 'model.norm.weight'", "element 5 is Inf"}, "model/model.safetensors"});
  // ---- GGUF ----
  cases.push_back({"GgufBadMagic",
                   [](const fs::path& d) {
                     auto bytes = tiny_gguf(TinyModel{}, "llama", DType::F32).bytes();
                     bytes[0] = std::byte{'X'};
                     fs::create_directories(d);
                     write_bytes(d / "model.gguf", bytes);
                     return d / "model.gguf";
                   },
                   {"bad magic", "not a GGUF file"}});
  cases.push_back({"GgufBadVersion",
                   [](const fs::path& d) {
                     GgufWriter w = tiny_gguf(TinyModel{}, "llama", DType::F32);
                     w.version = 4;
                     return gguf_file(d, w);
                   },
                   {"unsupported GGUF version 4"}});
  cases.push_back({"GgufBadAlignment",
                   [](const fs::path& d) {
                     GgufWriter w;
                     w.kv_u32("general.alignment", 24);
                     return gguf_file(d, w);
                   },
                   {"bad alignment", "24"}});
  cases.push_back({"GgufBadStringLength",
                   [](const fs::path& d) {
                     std::vector<std::byte> payload;
                     put_u64(payload, 1ull << 40);  // claims a 1 TiB string
                     put_u32(payload, 0x41414141);
                     return gguf_file(d, gguf_with_raw_kv(kString, payload));
                   },
                   {"bad string length 1099511627776", "test.bad"}});
  cases.push_back({"GgufBadArrayLength",
                   [](const fs::path& d) {
                     std::vector<std::byte> payload;
                     put_u32(payload, kU32);
                     put_u64(payload, 1ull << 50);
                     return gguf_file(d, gguf_with_raw_kv(kArray, payload));
                   },
                   {"key 'test.bad'", "bad array length"}});
  cases.push_back({"GgufUnsupportedQuantizedType",
                   [](const fs::path& d) {
                     GgufWriter w = tiny_gguf(TinyModel{}, "llama", DType::F32);
                     w.tensor("blk.0.extra.weight", 16, {256}, std::vector<std::byte>(66, std::byte{1}));
                     return gguf_file(d, w);
                   },
                   {"tensor 'blk.0.extra.weight'", "not supported: IQ2_XXS", "Q4_K"}});
  cases.push_back({"GgufUnknownTensorType",
                   [](const fs::path& d) {
                     GgufWriter w = tiny_gguf(TinyModel{}, "llama", DType::F32);
                     w.tensor("blk.0.extra.weight", 250, {4}, std::vector<std::byte>(16, std::byte{1}));
                     return gguf_file(d, w);
                   },
                   {"tensor 'blk.0.extra.weight'", "unknown ggml type id 250"}});
  cases.push_back({"GgufQuantizedRowNotWholeBlocks",
                   [](const fs::path& d) {
                     GgufWriter w = tiny_gguf(TinyModel{}, "llama", DType::F32);
                     w.tensor("blk.0.extra.weight", 12, {2, 100}, std::vector<std::byte>(144, std::byte{1}));
                     return gguf_file(d, w);
                   },
                   {"tensor 'blk.0.extra.weight'", "row length 100 is not a multiple of the Q4_K block (256 values)"}});
  cases.push_back({"GgufTruncatedQuantizedBlocks",
                   [](const fs::path& d) {
                     GgufWriter w = tiny_gguf(TinyModel{}, "llama", DType::F32);
                     // Two Q8_0 blocks (68 bytes) declared, one written: the file ends early.
                     w.tensor("blk.0.extra.weight", 8, {64}, std::vector<std::byte>(34, std::byte{1}));
                     return gguf_file(d, w);
                   },
                   {"tensor 'blk.0.extra.weight'", "truncated", "2 blocks of Q8_0", "past the end"}});
  cases.push_back({"GgufTensorPastEnd",
                   [](const fs::path& d) {
                     GgufWriter w = tiny_gguf(TinyModel{}, "llama", DType::F32);
                     w.tensor("blk.0.extra.weight", 0, {8}, std::vector<std::byte>(32, std::byte{1}));
                     w.set_last_offset(1 << 20);
                     return gguf_file(d, w);
                   },
                   {"tensor 'blk.0.extra.weight'", "past the end"}});
  cases.push_back({"GgufUnknownArchitecture",
                   [](const fs::path& d) {
                     GgufWriter g;
                     g.kv_string("general.architecture", "gemma2");
                     return gguf_file(d, g);
                   },
                   {"unknown architecture 'gemma2'"}});
  cases.push_back({"GgufMissingRequiredTensor",
                   [](const fs::path& d) {
                     return gguf_file(d, tiny_gguf({.hf_class = "Qwen3ForCausalLM"}, "qwen3", DType::F32,
                                                   {"blk.1.attn_k_norm.weight"}));
                   },
                   {"tensor 'blk.1.attn_k_norm.weight'", "missing"}});
  return cases;
}

}  // namespace

const std::vector<BadInput>& bad_inputs() {
  static const std::vector<BadInput> cases = make_cases();
  return cases;
}

}  // namespace fusecheck::test
