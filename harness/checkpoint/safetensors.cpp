// safetensors parsing and validation (format: github.com/huggingface/safetensors).
#include "harness/checkpoint/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <set>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/checkpoint/view_checks.h"
#include "harness/core/error.h"

namespace fusecheck {

namespace {

using json = nlohmann::json;

std::string tensor_where(const std::string& file, const std::string& name) {
  return fmt::format("{}: tensor '{}'", file, name);
}

// A non-negative JSON integer, or an error naming `what`.
std::uint64_t as_index(const json& v, const std::string& where, const char* what) {
  if (!v.is_number_unsigned()) {
    throw InputError(where, fmt::format("{} must be non-negative integers, got {}", what, v.dump()));
  }
  return v.get<std::uint64_t>();
}

TensorView parse_entry(const std::string& file, const std::string& name, const json& entry,
                       std::span<const std::byte> data) {
  const std::string where = tensor_where(file, name);
  if (!entry.is_object()) throw InputError(where, "header entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) throw InputError(where, fmt::format("header entry has no '{}'", key));
  }
  const json& dtype = entry["dtype"];
  if (!dtype.is_string()) throw InputError(where, "dtype is not a string");
  const auto dt = dtype_from_name(dtype.get<std::string>());
  if (!dt) {
    throw InputError(where, fmt::format("unsupported dtype '{}' (supported: F32, F16, BF16, F64)",
                                        dtype.get<std::string>()));
  }

  const json& shape = entry["shape"];
  if (!shape.is_array()) throw InputError(where, "shape is not an array");
  TensorView view;
  view.name = name;
  view.dtype = *dt;
  view.file = file;
  // Element count with overflow checks: a hostile header can name any dimensions.
  std::uint64_t numel = 1;
  for (const json& d : shape) {
    const std::uint64_t dim = as_index(d, where, "shape dimensions");
    if (dim > static_cast<std::uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel)) {
      throw InputError(where, fmt::format("shape {} overflows the element count", shape.dump()));
    }
    view.shape.push_back(static_cast<std::int64_t>(dim));
  }
  std::uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, dtype_size(*dt), &nbytes)) {
    throw InputError(where, fmt::format("shape {} overflows the byte count", shape.dump()));
  }

  const json& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    throw InputError(where, "data_offsets is not an array [begin, end]");
  }
  const std::uint64_t begin = as_index(offsets[0], where, "data_offsets");
  const std::uint64_t end = as_index(offsets[1], where, "data_offsets");
  if (begin > end) {
    throw InputError(where, fmt::format("data_offsets [{}, {}] end before they begin", begin, end));
  }
  if (end > data.size()) {
    throw InputError(where, fmt::format("data_offsets [{}, {}] run past the end of the data ({} bytes)",
                                        begin, end, data.size()));
  }
  if (end - begin != nbytes) {
    throw InputError(where, fmt::format("data size {} bytes does not match shape {} x {} ({} bytes)",
                                        end - begin, shape.dump(), dtype_name(*dt), nbytes));
  }
  view.bytes = data.subspan(begin, end - begin);
  return view;
}

std::map<std::string, std::string> parse_metadata(const std::string& file, const json& meta) {
  const std::string where = file + ": __metadata__";
  if (!meta.is_object()) throw InputError(where, "is not an object");
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : meta.items()) {
    if (!value.is_string()) throw InputError(where, fmt::format("value of '{}' is not a string", key));
    out[key] = value.get<std::string>();
  }
  return out;
}

}  // namespace

static SafetensorsContents parse_unchecked(std::span<const std::byte> bytes, const std::string& file) {
  if (bytes.size() < 8) {
    throw InputError(file, fmt::format("truncated: {} bytes, shorter than the 8-byte header length",
                                       bytes.size()));
  }
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | std::to_integer<std::uint64_t>(bytes[i]);
  if (header_len > bytes.size() - 8) {
    throw InputError(file, fmt::format("header length {} runs past the end of the file ({} bytes)",
                                       header_len, bytes.size()));
  }
  const auto* header_chars = reinterpret_cast<const char*>(bytes.data() + 8);
  const std::string_view header_text(header_chars, header_len);

  // nlohmann keeps the last of duplicate keys silently; the parse callback sees each
  // top-level key as it is read, so duplicates are caught here.
  std::set<std::string> seen;
  std::string duplicate;
  const auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.insert(key).second) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(header_text, on_event);
  } catch (const json::exception& e) {
    throw InputError(file, fmt::format("header is not valid JSON ({})", e.what()));
  }
  if (!duplicate.empty()) throw InputError(tensor_where(file, duplicate), "duplicate tensor name in header");
  if (!header.is_object()) throw InputError(file, "header JSON is not an object");

  SafetensorsContents out;
  out.data_start = 8 + header_len;
  const std::span<const std::byte> data = bytes.subspan(out.data_start);
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      out.metadata = parse_metadata(file, entry);
      continue;
    }
    out.tensors.push_back(parse_entry(file, name, entry, data));
  }

  // File order, so listings and the overlap check read like the file.
  std::stable_sort(out.tensors.begin(), out.tensors.end(), [](const TensorView& a, const TensorView& b) {
    return std::less<const std::byte*>()(a.bytes.data(), b.bytes.data());
  });
  check_no_overlap(out.tensors, file);
  return out;
}

SafetensorsContents parse_safetensors(std::span<const std::byte> bytes, const std::string& file) {
  return with_printable_errors([&] { return parse_unchecked(bytes, file); });
}

}  // namespace fusecheck
