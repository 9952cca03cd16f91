// safetensors and Hugging Face directory writer. Output depends only on the input:
// header JSON in the tensors' given order, compact, padded with spaces to 8 bytes;
// tensors contiguous (the safetensors validator rejects gaps); shards cut greedily.
#include "harness/checkpoint/safetensors_writer.h"

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <numeric>
#include <set>
#include <stdexcept>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/core/error.h"

namespace fusecheck {

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian; the writer copies host bytes as they are");

namespace {

std::uint64_t numel_of(const std::vector<std::int64_t>& shape) {
  std::uint64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0) throw std::logic_error("safetensors writer: negative dimension");
    n *= static_cast<std::uint64_t>(d);
  }
  return n;
}

// An output file that throws InputError (naming it) on any failure: a full disk or an
// unwritable directory is the user's to fix.
class OutFile {
 public:
  explicit OutFile(std::filesystem::path path) : path_(std::move(path)) {
    f_ = std::fopen(path_.c_str(), "wb");
    if (!f_) fail("cannot create file");
    std::setvbuf(f_, nullptr, _IONBF, 0);  // writes are already large; skip the extra copy
  }
  ~OutFile() {
    if (f_) std::fclose(f_);
  }
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;

  void write(const void* data, std::size_t n) {
    if (n != 0 && std::fwrite(data, 1, n, f_) != n) fail("write failed");
  }
  void close() {
    std::FILE* f = f_;
    f_ = nullptr;
    if (std::fclose(f) != 0) fail("close failed");
  }

 private:
  [[noreturn]] void fail(const char* what) {
    throw InputError(path_.string(), fmt::format("{}: {}", what, std::strerror(errno)));
  }
  std::filesystem::path path_;
  std::FILE* f_ = nullptr;
};

std::string header_bytes(const std::vector<const TensorLayout*>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the tensors in data order, so the header reads like the file.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::uint64_t offset = 0;
  std::set<std::string> seen;
  for (const TensorLayout* t : tensors) {
    if (t->name.empty() || t->name == "__metadata__" || !seen.insert(t->name).second) {
      throw std::logic_error("safetensors writer: bad or duplicate tensor name '" + t->name + "'");
    }
    const std::uint64_t end = offset + t->nbytes();
    header[t->name] = {{"dtype", std::string(dtype_name(t->dtype))},
                       {"shape", t->shape},
                       {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

// Writes one safetensors file whose tensors are tensors[i] for i in `indices`. Two
// buffers: the next piece is generated while the previous one is being written.
std::uint64_t write_file(const std::filesystem::path& path, const std::vector<TensorLayout>& tensors,
                         const std::vector<std::size_t>& indices,
                         const std::map<std::string, std::string>& metadata,
                         const TensorBytesFill& fill) {
  std::vector<const TensorLayout*> in_file;
  for (std::size_t i : indices) in_file.push_back(&tensors[i]);
  const std::string header = header_bytes(in_file, metadata);

  OutFile out(path);
  const std::uint64_t header_len = header.size();
  out.write(&header_len, 8);
  out.write(header.data(), header.size());
  std::uint64_t written = 8 + header.size();

  std::uint64_t largest = 0;
  for (const TensorLayout* t : in_file) largest = std::max(largest, t->nbytes());
  const std::size_t buffer_bytes = static_cast<std::size_t>(std::min(largest, kTensorFillPieceBytes));
  std::vector<std::byte> buffers[2] = {std::vector<std::byte>(buffer_bytes),
                                       std::vector<std::byte>(buffer_bytes)};
  std::future<void> pending;
  int current = 0;
  for (std::size_t i : indices) {
    const std::uint64_t size = tensors[i].nbytes();
    for (std::uint64_t offset = 0; offset < size; offset += kTensorFillPieceBytes) {
      const std::size_t n = static_cast<std::size_t>(std::min(kTensorFillPieceBytes, size - offset));
      std::span<std::byte> piece(buffers[current].data(), n);
      fill(i, offset, piece);
      if (pending.valid()) pending.get();  // rethrows a write error
      pending = std::async(std::launch::async, [&out, piece] { out.write(piece.data(), piece.size()); });
      written += n;
      current ^= 1;
    }
  }
  if (pending.valid()) pending.get();
  out.close();
  return written;
}

void remove_stale_checkpoint_files(const std::filesystem::path& dir) {
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool shard = name.starts_with("model-") && name.ends_with(".safetensors") &&
                       name.find("-of-") != std::string::npos;
    if (shard || name == "model.safetensors" || name == "model.safetensors.index.json") {
      std::filesystem::remove(entry.path());
    }
  }
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  OutFile out(path);
  out.write(text.data(), text.size());
  out.close();
}

}  // namespace

std::uint64_t TensorLayout::nbytes() const { return numel_of(shape) * dtype_size(dtype); }

TensorToWrite make_tensor(std::string name, DType dtype, std::vector<std::int64_t> shape,
                          const std::vector<float>& values) {
  if (numel_of(shape) != values.size()) {
    throw std::logic_error("make_tensor: " + name + ": value count does not match the shape");
  }
  TensorToWrite t{std::move(name), dtype, std::move(shape), {}};
  t.data.resize(values.size() * dtype_size(dtype));
  std::byte* out = t.data.data();
  for (std::size_t i = 0; i < values.size(); ++i) {
    switch (dtype) {
      case DType::F32: std::memcpy(out + 4 * i, &values[i], 4); break;
      case DType::F64: { const double d = values[i]; std::memcpy(out + 8 * i, &d, 8); break; }
      case DType::BF16: { const std::uint16_t b = float_to_bf16(values[i]); std::memcpy(out + 2 * i, &b, 2); break; }
      case DType::F16: { const std::uint16_t b = float_to_fp16(values[i]); std::memcpy(out + 2 * i, &b, 2); break; }
    }
  }
  return t;
}

namespace {

std::vector<TensorLayout> layouts_of(const std::vector<TensorToWrite>& tensors) {
  std::vector<TensorLayout> layouts;
  layouts.reserve(tensors.size());
  for (const TensorToWrite& t : tensors) {
    TensorLayout layout{t.name, t.dtype, t.shape};
    if (layout.nbytes() != t.data.size()) {
      throw std::logic_error("safetensors writer: " + t.name + ": data size does not match shape x dtype");
    }
    layouts.push_back(std::move(layout));
  }
  return layouts;
}

TensorBytesFill copy_from(const std::vector<TensorToWrite>& tensors) {
  return [&tensors](std::size_t index, std::uint64_t offset, std::span<std::byte> out) {
    std::memcpy(out.data(), tensors[index].data.data() + offset, out.size());
  };
}

}  // namespace

void write_safetensors(const std::filesystem::path& file, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::vector<TensorLayout> layouts = layouts_of(tensors);
  std::vector<std::size_t> all(layouts.size());
  std::iota(all.begin(), all.end(), std::size_t{0});
  write_file(file, layouts, all, metadata, copy_from(tensors));
}

void write_hf_checkpoint(const std::filesystem::path& dir, const std::string& config_json,
                         const std::vector<TensorToWrite>& tensors, std::uint64_t shard_bytes) {
  write_hf_checkpoint_streamed(dir, config_json, layouts_of(tensors), copy_from(tensors), shard_bytes);
}

std::vector<WrittenFile> write_hf_checkpoint_streamed(const std::filesystem::path& dir,
                                                      const std::string& config_json,
                                                      const std::vector<TensorLayout>& tensors,
                                                      const TensorBytesFill& fill,
                                                      std::uint64_t shard_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw InputError(dir.string(), "cannot create directory: " + ec.message());
  remove_stale_checkpoint_files(dir);

  std::set<std::string> names;
  for (const TensorLayout& t : tensors) {
    if (!names.insert(t.name).second) throw std::logic_error("safetensors writer: duplicate tensor " + t.name);
  }

  std::vector<WrittenFile> written;
  write_text(dir / "config.json", config_json);
  written.push_back({dir / "config.json", config_json.size()});

  // HF loaders refuse safetensors files without format "pt" in the metadata.
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  std::uint64_t total = 0;
  for (const TensorLayout& t : tensors) total += t.nbytes();

  // Greedy cut, as HF's save_pretrained does: a shard closes when the next tensor would
  // take it past the limit; a tensor larger than the limit gets a shard of its own.
  std::vector<std::vector<std::size_t>> shards;
  if (shard_bytes == 0 || total <= shard_bytes) {
    shards.emplace_back(tensors.size());
    std::iota(shards[0].begin(), shards[0].end(), std::size_t{0});
  } else {
    std::uint64_t in_shard = 0;
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const std::uint64_t size = tensors[i].nbytes();
      if (shards.empty() || (in_shard > 0 && in_shard + size > shard_bytes)) {
        shards.emplace_back();
        in_shard = 0;
      }
      shards.back().push_back(i);
      in_shard += size;
    }
  }

  if (shards.size() == 1) {
    const auto path = dir / "model.safetensors";
    written.push_back({path, write_file(path, tensors, shards[0], metadata, fill)});
    return written;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (std::size_t s = 0; s < shards.size(); ++s) {
    const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
    for (std::size_t i : shards[s]) weight_map[tensors[i].name] = name;
    written.push_back({dir / name, write_file(dir / name, tensors, shards[s], metadata, fill)});
  }
  // Key order and indentation as HF writes the index (json.dumps(sort_keys=True, indent=2)).
  const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  const std::string index_text = index.dump(2) + "\n";
  write_text(dir / "model.safetensors.index.json", index_text);
  written.push_back({dir / "model.safetensors.index.json", index_text.size()});
  return written;
}

}  // namespace fusecheck
