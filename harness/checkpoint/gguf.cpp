// GGUF parsing and validation. Layout (llama.cpp docs/gguf.md): magic "GGUF", uint32
// version, uint64 tensor count, uint64 key/value count, the key/values, the tensor infos
// (name, dims fastest-varying first, ggml type, offset), padding to general.alignment,
// then the tensor data. All integers little-endian. Quantized tensors get the codec of
// their ggml type (gguf_quants.h); nothing here reads tensor data.
#include "harness/checkpoint/gguf.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <set>

#include <fmt/core.h>

#include "harness/checkpoint/gguf_quants.h"
#include "harness/checkpoint/view_checks.h"
#include "harness/core/error.h"

namespace fusecheck {

namespace {

constexpr std::uint32_t kMaxDims = 4;       // GGML_MAX_DIMS
constexpr std::uint64_t kDefaultAlignment = 32;

// Names of ggml types by id (ggml.h enum ggml_type); ids 4, 5 and 31-33, 36-38 are unused.
constexpr std::array<const char*, 42> kGgmlTypeNames = {
    "F32",     "F16",     "Q4_0",   "Q4_1",    nullptr, nullptr,  "Q5_0",   "Q5_1",
    "Q8_0",    "Q8_1",    "Q2_K",   "Q3_K",    "Q4_K",  "Q5_K",   "Q6_K",   "Q8_K",
    "IQ2_XXS", "IQ2_XS",  "IQ3_XXS", "IQ1_S",  "IQ4_NL", "IQ3_S", "IQ2_S",  "IQ4_XS",
    "I8",      "I16",     "I32",    "I64",     "F64",   "IQ1_M",  "BF16",   nullptr,
    nullptr,   nullptr,   "TQ1_0",  "TQ2_0",   nullptr, nullptr,  nullptr,  "MXFP4",
    "NVFP4",   "Q1_0"};

std::optional<DType> dtype_of_ggml(std::uint32_t type) {
  switch (type) {
    case 0: return DType::F32;
    case 1: return DType::F16;
    case 28: return DType::F64;
    case 30: return DType::BF16;
    default: return std::nullopt;
  }
}

const char* value_type_name(GgufType t) {
  static constexpr std::array<const char*, 13> names = {
      "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
      "bool", "string", "array", "uint64", "int64", "float64"};
  const auto i = static_cast<std::uint32_t>(t);
  return i < names.size() ? names[i] : "unknown";
}

// Bounds-checked little-endian cursor over the file image. Every read names the part
// of the file it was reading when it runs out of bytes.
class Reader {
 public:
  Reader(std::span<const std::byte> bytes, const std::string& file) : bytes_(bytes), file_(file) {}

  std::size_t pos() const { return pos_; }
  std::size_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(const std::string& what) {
    const auto len = read<std::uint64_t>(what + " length");
    if (len > remaining()) {
      throw InputError(file_, fmt::format("bad string length {} for {} at byte {}: only {} bytes remain",
                                          len, what, pos_ - 8, remaining()));
    }
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
    pos_ += len;
    return s;
  }

  void need(std::size_t n, const std::string& what) const {
    if (n > remaining()) {
      throw InputError(file_, fmt::format("truncated: {} needs {} bytes at byte {}, only {} remain",
                                          what, n, pos_, remaining()));
    }
  }

 private:
  std::span<const std::byte> bytes_;
  const std::string& file_;
  std::size_t pos_ = 0;
};

// Smallest encoded size of one value of a type: bounds how many array elements the
// remaining bytes can hold before any memory is reserved.
std::size_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: case GgufType::String: return 8;
    case GgufType::Array: return 12;
  }
  return 1;
}

bool valid_type(std::uint32_t t) { return t <= static_cast<std::uint32_t>(GgufType::F64); }

GgufValue read_value(Reader& r, GgufType type, const std::string& key, const std::string& file,
                     int depth) {
  GgufValue v;
  v.type = type;
  const std::string what = fmt::format("value of '{}'", key);
  switch (type) {
    case GgufType::U8: v.value = std::uint64_t{r.read<std::uint8_t>(what)}; break;
    case GgufType::I8: v.value = std::int64_t{r.read<std::int8_t>(what)}; break;
    case GgufType::U16: v.value = std::uint64_t{r.read<std::uint16_t>(what)}; break;
    case GgufType::I16: v.value = std::int64_t{r.read<std::int16_t>(what)}; break;
    case GgufType::U32: v.value = std::uint64_t{r.read<std::uint32_t>(what)}; break;
    case GgufType::I32: v.value = std::int64_t{r.read<std::int32_t>(what)}; break;
    case GgufType::F32: {
      // Kept as the shortest decimal that round-trips the float (1e-05, not
      // 9.99999974e-06): the value the converter was given, which the spec reports.
      const float f = r.read<float>(what);
      v.value = std::isfinite(f) ? std::stod(fmt::format("{}", f)) : double{f};
      break;
    }
    case GgufType::U64: v.value = r.read<std::uint64_t>(what); break;
    case GgufType::I64: v.value = r.read<std::int64_t>(what); break;
    case GgufType::F64: v.value = r.read<double>(what); break;
    case GgufType::Bool: {
      const auto b = r.read<std::uint8_t>(what);
      if (b > 1) throw InputError(file, fmt::format("key '{}': bool value {} is neither 0 nor 1", key, b));
      v.value = b == 1;
      break;
    }
    case GgufType::String: v.value = r.read_string(what); break;
    case GgufType::Array: {
      // llama.cpp reads no nested arrays either; refusing them bounds the recursion.
      if (depth > 0) throw InputError(file, fmt::format("key '{}': nested arrays are not supported", key));
      const auto elem = r.read<std::uint32_t>(what + " element type");
      if (!valid_type(elem)) {
        throw InputError(file, fmt::format("key '{}': unknown array element type {}", key, elem));
      }
      v.element_type = static_cast<GgufType>(elem);
      const auto n = r.read<std::uint64_t>(what + " array length");
      if (n > r.remaining() / min_encoded_size(v.element_type)) {
        throw InputError(file, fmt::format("key '{}': bad array length {} ({} elements of {} cannot fit "
                                           "in the {} bytes that remain)", key, n, n,
                                           value_type_name(v.element_type), r.remaining()));
      }
      std::vector<GgufValue> items;
      items.reserve(n);
      for (std::uint64_t i = 0; i < n; ++i) items.push_back(read_value(r, v.element_type, key, file, depth + 1));
      v.value = std::move(items);
      break;
    }
  }
  return v;
}

std::uint64_t read_alignment(const std::map<std::string, GgufValue>& kv, const std::string& file) {
  const auto it = kv.find("general.alignment");
  if (it == kv.end()) return kDefaultAlignment;
  const auto a = it->second.as_int();
  // Bounded to 2^30 so aligning an offset can never overflow.
  if (!a || *a <= 0 || *a > (std::int64_t{1} << 30) || (*a & (*a - 1)) != 0) {
    throw InputError(file, fmt::format("bad alignment: general.alignment = {} is not a power of two "
                                       "between 1 and 2^30", it->second.to_string()));
  }
  return static_cast<std::uint64_t>(*a);
}

struct TensorInfo {
  std::string name;
  std::vector<std::int64_t> shape;  // HF order
  std::uint32_t type = 0;
  std::optional<DType> dtype;        // a plain element type, or
  const BlockCodec* codec = nullptr; // a block-quantized one
  std::uint64_t offset = 0;
  std::uint64_t nbytes = 0;
};

// The one-line refusal of a tensor type fusecheck does not read.
std::string unsupported_type(std::uint32_t type) {
  const std::string name = ggml_type_name(type);
  const std::string known = fmt::format("fusecheck reads F32, F16, BF16, F64, {}", ggml_quant_names());
  if (name.rfind("type ", 0) == 0) return fmt::format("not supported: unknown ggml type id {} ({})", type, known);
  return fmt::format("not supported: {} ({})", name, known);
}

// Bytes of `numel` values stored as `t`; a quantized row must hold whole blocks (ggml
// quantizes row by row, so a row that does not is a broken file).
std::uint64_t tensor_bytes(const TensorInfo& t, const std::vector<std::uint64_t>& dims, std::uint64_t numel,
                           const std::string& where) {
  std::uint64_t nbytes = 0;
  if (t.dtype) {
    if (__builtin_mul_overflow(numel, dtype_size(*t.dtype), &nbytes)) {
      throw InputError(where, "dimensions overflow the byte count");
    }
    return nbytes;
  }
  const auto block = static_cast<std::uint64_t>(t.codec->block_elems);
  const std::uint64_t row = dims.empty() ? 1 : dims[0];
  if (row % block != 0) {
    throw InputError(where, fmt::format("row length {} is not a multiple of the {} block ({} values)", row,
                                        t.codec->name, block));
  }
  if (__builtin_mul_overflow(numel / block, t.codec->block_bytes, &nbytes)) {
    throw InputError(where, "dimensions overflow the byte count");
  }
  return nbytes;
}

TensorInfo read_tensor_info(Reader& r, const std::string& file, std::uint64_t index) {
  TensorInfo t;
  t.name = r.read_string(fmt::format("name of tensor {}", index));
  const std::string where = fmt::format("{}: tensor '{}'", file, t.name);
  const auto n_dims = r.read<std::uint32_t>("tensor dimension count");
  if (n_dims > kMaxDims) {
    throw InputError(where, fmt::format("{} dimensions, more than GGUF's {}", n_dims, kMaxDims));
  }
  std::vector<std::uint64_t> dims(n_dims);
  for (auto& d : dims) d = r.read<std::uint64_t>("tensor dimensions");
  t.type = r.read<std::uint32_t>("tensor type");
  t.offset = r.read<std::uint64_t>("tensor offset");

  t.dtype = dtype_of_ggml(t.type);
  t.codec = ggml_quant_codec(t.type);
  if (!t.dtype && !t.codec) throw InputError(where, unsupported_type(t.type));
  std::uint64_t numel = 1;
  for (const auto d : dims) {
    if (d > static_cast<std::uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, d, &numel)) {
      throw InputError(where, "dimensions overflow the element count");
    }
  }
  t.nbytes = tensor_bytes(t, dims, numel, where);
  // GGUF lists the fastest-varying dimension first; HF order is the reverse.
  for (auto it = dims.rbegin(); it != dims.rend(); ++it) t.shape.push_back(static_cast<std::int64_t>(*it));
  return t;
}

}  // namespace

std::optional<std::int64_t> GgufValue::as_int() const {
  if (const auto* u = std::get_if<std::uint64_t>(&value)) {
    if (*u > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<std::int64_t>(*u);
  }
  if (const auto* i = std::get_if<std::int64_t>(&value)) return *i;
  return std::nullopt;
}

std::optional<double> GgufValue::as_double() const {
  if (const auto* d = std::get_if<double>(&value)) return *d;
  if (const auto* u = std::get_if<std::uint64_t>(&value)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<std::int64_t>(&value)) return static_cast<double>(*i);
  return std::nullopt;
}

const std::string* GgufValue::as_string() const { return std::get_if<std::string>(&value); }
const std::vector<GgufValue>* GgufValue::as_array() const {
  return std::get_if<std::vector<GgufValue>>(&value);
}

std::string GgufValue::to_string(std::size_t max_items) const {
  if (const auto* u = std::get_if<std::uint64_t>(&value)) return std::to_string(*u);
  if (const auto* i = std::get_if<std::int64_t>(&value)) return std::to_string(*i);
  if (const auto* d = std::get_if<double>(&value)) return fmt::format("{}", *d);
  if (const auto* b = std::get_if<bool>(&value)) return *b ? "true" : "false";
  if (const auto* s = std::get_if<std::string>(&value)) return *s;
  const auto& items = std::get<std::vector<GgufValue>>(value);
  std::string out = fmt::format("[{} x {}:", items.size(), value_type_name(element_type));
  for (std::size_t i = 0; i < items.size() && i < max_items; ++i) {
    out += (i == 0 ? " " : ", ");
    out += items[i].type == GgufType::String ? fmt::format("\"{}\"", items[i].to_string()) : items[i].to_string();
  }
  if (items.size() > max_items) out += ", ...";
  return out + "]";
}

std::string ggml_type_name(std::uint32_t type) {
  if (type < kGgmlTypeNames.size() && kGgmlTypeNames[type] != nullptr) return kGgmlTypeNames[type];
  return fmt::format("type {}", type);
}

bool has_gguf_magic(std::span<const std::byte> first_bytes) {
  return first_bytes.size() >= 4 && std::memcmp(first_bytes.data(), "GGUF", 4) == 0;
}

static GgufContents parse_unchecked(std::span<const std::byte> bytes, const std::string& file) {
  Reader r(bytes, file);
  r.need(4, "magic");
  if (!has_gguf_magic(bytes)) {
    std::string magic;
    for (int i = 0; i < 4; ++i) magic += fmt::format("{:02x}", std::to_integer<unsigned>(bytes[i]));
    throw InputError(file, fmt::format("bad magic 0x{}: not a GGUF file (expected \"GGUF\")", magic));
  }
  r.read<std::uint32_t>("magic");
  GgufContents out;
  out.version = r.read<std::uint32_t>("version");
  if (out.version != 2 && out.version != 3) {
    // A big-endian v3 file reads as 0x03000000 here.
    throw InputError(file, fmt::format("unsupported GGUF version {}{} (fusecheck reads versions 2 and 3, "
                                       "little-endian)", out.version,
                                       out.version == 0x03000000u ? " (a big-endian file?)" : ""));
  }
  const auto n_tensors = r.read<std::uint64_t>("tensor count");
  const auto n_kv = r.read<std::uint64_t>("metadata key/value count");
  // Each key/value takes at least 13 bytes and each tensor info at least 24: counts that
  // cannot fit are rejected before anything is allocated for them.
  if (n_kv > r.remaining() / 13) {
    throw InputError(file, fmt::format("metadata key/value count {} cannot fit in the file", n_kv));
  }
  if (n_tensors > r.remaining() / 24) {
    throw InputError(file, fmt::format("tensor count {} cannot fit in the file", n_tensors));
  }

  for (std::uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.read_string(fmt::format("metadata key {}", i));
    const auto type = r.read<std::uint32_t>(fmt::format("type of key '{}'", key));
    if (!valid_type(type)) throw InputError(file, fmt::format("key '{}': unknown value type {}", key, type));
    GgufValue value = read_value(r, static_cast<GgufType>(type), key, file, 0);
    if (out.metadata.count(key) != 0) throw InputError(file, fmt::format("duplicate metadata key '{}'", key));
    out.metadata.emplace(std::move(key), std::move(value));
  }
  out.alignment = read_alignment(out.metadata, file);

  std::vector<TensorInfo> infos;
  infos.reserve(n_tensors);
  std::set<std::string> names;
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    infos.push_back(read_tensor_info(r, file, i));
    if (!names.insert(infos.back().name).second) {
      throw InputError(fmt::format("{}: tensor '{}'", file, infos.back().name), "duplicate tensor name");
    }
  }

  // Data starts at the next multiple of the alignment after the tensor infos.
  const std::uint64_t align = out.alignment;
  const std::uint64_t data_start = (r.pos() + align - 1) / align * align;
  if (n_tensors > 0 && data_start > bytes.size()) {
    throw InputError(file, fmt::format("truncated: tensor data should start at byte {}, file has {} bytes",
                                       data_start, bytes.size()));
  }
  out.data_start = std::min<std::size_t>(data_start, bytes.size());
  const std::span<const std::byte> data = bytes.subspan(out.data_start);
  for (const TensorInfo& t : infos) {
    const std::string where = fmt::format("{}: tensor '{}'", file, t.name);
    if (t.offset % align != 0) {
      throw InputError(where, fmt::format("offset {} is not a multiple of the alignment {}", t.offset, align));
    }
    if (t.offset > data.size() || t.nbytes > data.size() - t.offset) {
      const std::string blocks =
          t.codec ? fmt::format(" ({} blocks of {})", t.nbytes / t.codec->block_bytes, t.codec->name) : "";
      throw InputError(where, fmt::format("truncated: data [{}, {}+{}){} runs past the end of the file's data "
                                          "({} bytes)", t.offset, t.offset, t.nbytes, blocks, data.size()));
    }
    TensorView view;
    view.name = t.name;
    view.dtype = t.dtype.value_or(DType::F32);
    view.codec = t.codec;
    view.shape = t.shape;
    view.bytes = data.subspan(t.offset, t.nbytes);
    view.file = file;
    out.tensors.push_back(std::move(view));
    out.tensor_types.push_back(ggml_type_name(t.type));
  }
  check_no_overlap(out.tensors, file);
  return out;
}

GgufContents parse_gguf(std::span<const std::byte> bytes, const std::string& file) {
  return with_printable_errors([&] { return parse_unchecked(bytes, file); });
}

}  // namespace fusecheck
