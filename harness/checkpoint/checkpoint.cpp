// Checkpoint::open: dispatches on HF directory vs GGUF file, maps the files, runs the
// readers and the adapter; plus the tensor queries and sentencepiece/GPT-2 decoding.
#include "harness/core/checkpoint.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/adapters.h"
#include "harness/checkpoint/gguf.h"
#include "harness/checkpoint/mapped_file.h"
#include "harness/checkpoint/safetensors.h"
#include "harness/checkpoint/view_checks.h"
#include "harness/core/error.h"
#include "harness/core/utf8.h"

namespace fusecheck {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

json read_json_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(file.string(), "cannot read");
  std::stringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::exception& e) {
    throw InputError(file.string(), fmt::format("not valid JSON ({})", e.what()));
  }
}

// Owns the mappings the tensor views point into.
class MappedCheckpoint : public Checkpoint {
 public:
  static std::unique_ptr<Checkpoint> open_hf(const fs::path& dir);
  static std::unique_ptr<Checkpoint> open_gguf(const fs::path& file);

 private:
  // Adds the tensors of one mapped safetensors file; names must be unique across files.
  void add_safetensors(const fs::path& file);
  TensorIndex index() const;
  void adopt(AdaptedModel&& adapted);

  std::vector<MappedFile> files_;
  std::map<std::string, std::string> file_of_;  // tensor name -> file holding it
};

void MappedCheckpoint::add_safetensors(const fs::path& file) {
  files_.emplace_back(file);
  SafetensorsContents contents = parse_safetensors(files_.back().bytes(), file.string());
  for (TensorView& t : contents.tensors) {
    if (const auto [it, added] = file_of_.emplace(t.name, file.string()); !added) {
      throw InputError(fmt::format("{}: tensor '{}'", file.string(), t.name),
                       fmt::format("duplicate: also stored in {}", it->second));
    }
    tensors_.push_back(std::move(t));
  }
  for (auto& [key, value] : contents.metadata) metadata_["safetensors." + key] = value;
}

TensorIndex MappedCheckpoint::index() const {
  TensorIndex out;
  for (const TensorView& t : tensors_) out.emplace(t.name, &t);
  return out;
}

void MappedCheckpoint::adopt(AdaptedModel&& adapted) {
  spec_ = std::move(adapted.spec);
  model_ = std::move(adapted.model);
}

std::unique_ptr<Checkpoint> MappedCheckpoint::open_hf(const fs::path& dir) {
  auto ck = std::make_unique<MappedCheckpoint>();
  ck->path_ = dir;
  ck->format_ = "hf-safetensors";
  const fs::path config_file = dir / "config.json";
  if (!fs::is_regular_file(config_file)) {
    throw InputError(dir.string(), "no config.json: not a Hugging Face checkpoint directory");
  }
  const json config = read_json_file(config_file);
  ck->metadata_["config.json"] = config.dump(2);

  const fs::path index_file = dir / "model.safetensors.index.json";
  const fs::path single_file = dir / "model.safetensors";
  std::string tensor_source;
  if (fs::exists(index_file)) {
    tensor_source = index_file.string();
    const json index = read_json_file(index_file);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw InputError(tensor_source, "has no 'weight_map' object");
    }
    // Shards in order of first mention, each mapped once.
    std::vector<std::string> shards;
    for (const auto& [name, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) throw InputError(fmt::format("{}: tensor '{}'", tensor_source, name), "shard is not a file name");
      const std::string s = shard.get<std::string>();
      const fs::path p(s);
      if (s.empty() || p.is_absolute() || p.filename() != p) {
        throw InputError(tensor_source, fmt::format("shard '{}' is not a file name inside the directory", s));
      }
      if (std::find(shards.begin(), shards.end(), s) == shards.end()) shards.push_back(s);
    }
    for (const std::string& s : shards) {
      if (!fs::is_regular_file(dir / s)) {
        throw InputError(tensor_source, fmt::format("names shard '{}', which does not exist", s));
      }
      ck->add_safetensors(dir / s);
    }
    for (const auto& [name, shard] : index["weight_map"].items()) {
      const std::string shard_path = (dir / shard.get<std::string>()).string();
      const auto stored = ck->file_of_.find(name);
      if (stored == ck->file_of_.end() || stored->second != shard_path) {
        throw InputError(fmt::format("{}: tensor '{}'", tensor_source, name),
                         fmt::format("listed for shard '{}' but absent from it", shard.get<std::string>()));
      }
    }
  } else if (fs::exists(single_file)) {
    tensor_source = single_file.string();
    ck->add_safetensors(single_file);
  } else {
    throw InputError(dir.string(), "has neither model.safetensors nor model.safetensors.index.json");
  }
  ck->adopt(adapt_hf(config, config_file.string(), tensor_source, ck->index()));
  return ck;
}

std::unique_ptr<Checkpoint> MappedCheckpoint::open_gguf(const fs::path& file) {
  auto ck = std::make_unique<MappedCheckpoint>();
  ck->path_ = file;
  ck->format_ = "gguf";
  ck->files_.emplace_back(file);
  GgufContents contents = parse_gguf(ck->files_.back().bytes(), file.string());
  ck->tensors_ = std::move(contents.tensors);
  ck->metadata_["gguf.version"] = std::to_string(contents.version);
  for (const auto& [key, value] : contents.metadata) ck->metadata_[key] = value.to_string();
  if (const auto it = contents.metadata.find("tokenizer.ggml.tokens"); it != contents.metadata.end()) {
    const auto* tokens = it->second.as_array();
    if (tokens == nullptr || (!tokens->empty() && it->second.element_type != GgufType::String)) {
      throw InputError(file.string(), "metadata key 'tokenizer.ggml.tokens' is not an array of strings");
    }
    for (const GgufValue& t : *tokens) ck->vocab_.push_back(*t.as_string());
  }
  ck->adopt(adapt_gguf(contents.metadata, file.string(), ck->index()));
  return ck;
}

// Code points of a UTF-8 string; a malformed byte stands for itself.
std::vector<char32_t> utf8_code_points(const std::string& s) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = utf8_at(s, i);
    out.push_back(c ? c->cp : static_cast<unsigned char>(s[i]));
    i += c ? c->len : 1;
  }
  return out;
}

// GPT-2 byte-level BPE shows each byte as a printable code point: printable Latin-1
// bytes as themselves, the other 68 bytes as U+0100.. in byte order. The inverse map.
std::optional<unsigned char> gpt2_byte(char32_t cp) {
  const auto printable = [](unsigned b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; };
  if (cp < 256 && printable(cp)) return static_cast<unsigned char>(cp);
  unsigned shifted = 0;
  for (unsigned b = 0; b < 256; ++b) {
    if (printable(b)) continue;
    if (cp == 256 + shifted) return static_cast<unsigned char>(b);
    ++shifted;
  }
  return std::nullopt;
}

// "<0x0A>" -> 0x0A: sentencepiece's byte-fallback tokens.
std::optional<unsigned char> byte_token(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return std::nullopt;
  const auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]), lo = hex(piece[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<unsigned char>(hi * 16 + lo);
}

// HF directory, a file inside one, or a GGUF file (by extension or magic).
std::unique_ptr<Checkpoint> open_any(const fs::path& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) throw InputError(path.string(), "does not exist");
  if (fs::is_directory(status)) return MappedCheckpoint::open_hf(path);
  // A file inside a HF directory (config.json, a shard) stands for its directory.
  if (path.filename() == "config.json" || path.extension() == ".safetensors") {
    return MappedCheckpoint::open_hf(path.parent_path().empty() ? fs::path(".") : path.parent_path());
  }
  if (path.extension() == ".gguf") return MappedCheckpoint::open_gguf(path);
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() == 4 && has_gguf_magic(std::as_bytes(std::span(magic)))) return MappedCheckpoint::open_gguf(path);
  throw InputError(path.string(), "neither a Hugging Face checkpoint directory nor a GGUF file");
}

}  // namespace

std::unique_ptr<Checkpoint> Checkpoint::open(const std::filesystem::path& path) {
  return with_printable_errors([&] { return open_any(path); });
}

const TensorView* Checkpoint::find(const std::string& stored_name) const {
  for (const TensorView& t : tensors_) {
    if (t.name == stored_name) return &t;
  }
  return nullptr;
}

std::vector<std::string> Checkpoint::unused_tensors() const {
  std::set<const TensorView*> used = {model_.embed, model_.final_norm, model_.lm_head};
  for (const LayerTensors& l : model_.layers) {
    used.insert({l.attn_norm, l.wq, l.wk, l.wv, l.bq, l.bk, l.bv, l.q_norm, l.k_norm, l.wo, l.mlp_norm,
                 l.w_gate, l.w_up, l.w_down});
  }
  std::vector<std::string> out;
  for (const TensorView& t : tensors_) {
    if (used.count(&t) == 0) out.push_back(t.name);
  }
  return out;
}

std::string Checkpoint::decode(const std::vector<int>& ids) const {
  const auto model = metadata_.find("tokenizer.ggml.model");
  const bool gpt2 = model != metadata_.end() && model->second == "gpt2";
  std::string text;
  bool first_piece = true;
  for (const int id : ids) {
    if (id < 0 || static_cast<std::size_t>(id) >= vocab_.size()) {
      throw InputError(path_.string(), fmt::format("token id {} is outside the vocabulary ({} pieces)", id,
                                                   vocab_.size()));
    }
    if (id == spec_.bos_id || id == spec_.eos_id) continue;  // control tokens print nothing
    const std::string& piece = vocab_[static_cast<std::size_t>(id)];
    if (gpt2) {
      for (const char32_t cp : utf8_code_points(piece)) {
        if (const auto b = gpt2_byte(cp)) text += static_cast<char>(*b);
        else append_utf8(text, cp);
      }
    } else if (const auto b = byte_token(piece)) {
      text += static_cast<char>(*b);
    } else {
      std::string part;
      for (const char32_t cp : utf8_code_points(piece)) append_utf8(part, cp == U'\u2581' ? U' ' : cp);
      // sentencepiece adds a dummy space before the text; decoding drops it again.
      if (first_piece && !part.empty() && part[0] == ' ') part.erase(0, 1);
      text += part;
    }
    first_piece = false;
  }
  return text;
}

}  // namespace fusecheck
