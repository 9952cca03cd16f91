// A run results file (HDF5) read whole into memory as a tree of groups, attributes and
// datasets, through the HDF5 C API. Results files hold metrics, not tensors, so reading
// everything is cheap and lets the layout mapping (run_results.cpp) work on plain values.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fusecheck::results {

// The contents of one attribute or dataset. Numbers of every integer and float class
// (and booleans, stored by h5py as an enum) arrive as double; strings of fixed or
// variable length as std::string; a compound dataset (a table) as one column per member.
struct H5Value {
  enum class Kind { number, string, compound, other };
  Kind kind = Kind::other;
  std::vector<std::uint64_t> dims;  // empty for a scalar
  std::vector<double> numbers;
  std::vector<std::string> strings;
  std::map<std::string, H5Value> columns;  // compound members, each with this value's dims
  std::map<std::string, H5Value> attrs;    // a dataset's own attributes (units, ...)
  bool skipped = false;  // too large to be a metric: dims known, values not read

  std::size_t size() const;
  bool is_number() const { return kind == Kind::number && !skipped; }
  bool is_string() const { return kind == Kind::string && !skipped; }
  // The single value of a scalar (or one-element) number / string; nullopt otherwise.
  std::optional<double> number() const;
  std::optional<std::string> string() const;
};

struct H5Node {
  std::map<std::string, H5Value> attrs;
  std::map<std::string, H5Node> groups;
  std::map<std::string, H5Value> datasets;

  const H5Node* group(const std::string& slash_path) const;  // "a/b/c", nullptr if absent
  const H5Value* dataset(const std::string& slash_path) const;
  std::optional<std::string> attr_string(const std::string& name) const;
  std::optional<double> attr_number(const std::string& name) const;
};

// Datasets with more elements than this are recorded with their dims only: a results
// file may carry the tensors of a failing tap, which no comparison reads.
inline constexpr std::uint64_t kMaxReadElements = std::uint64_t{1} << 22;

// Reads `file`. Throws InputError naming the file (and the object) when it is missing,
// not HDF5, unreadable or damaged. HDF5 verifies the checksums of the format h5_write.h
// writes; every file is first read once in a child process, so that a damaged one that
// crashes libhdf5 is an InputError, not a crash (docs/results-format.md, "Damage").
H5Node read_h5_tree(const std::filesystem::path& file);

// The same from a file image in memory (HDF5's core driver); `name` names it in errors.
H5Node read_h5_tree_image(std::span<const std::byte> bytes, const std::string& name);

// HDF5 prints its own error stack to stderr by default; fusecheck reports errors in one
// line instead. Called by the readers and writers here; harmless to call again.
void silence_hdf5_errors();

// True when `file` starts with the HDF5 signature (cheap test before any parse).
bool looks_like_hdf5(const std::filesystem::path& file);

}  // namespace fusecheck::results
