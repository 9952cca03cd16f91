// A small HDF5 writer (C API) for what the results area writes: merged files, and the
// results files the tests build in the layout of docs/results-format.md, and the run
// writer's files. Every byte a reader interprets is checksummed: the HDF5 1.10 format
// (metadata checksums), fixed-length UTF-8 strings (no global heap) and chunked datasets
// with the Fletcher-32 filter (docs/results-format.md, "Damage").
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace fusecheck::results {

class H5Writer {
 public:
  // Creates (truncating) `file`; with `open_existing`, opens it read-write instead.
  explicit H5Writer(const std::filesystem::path& file, bool open_existing = false);
  ~H5Writer();
  H5Writer(const H5Writer&) = delete;
  H5Writer& operator=(const H5Writer&) = delete;

  // Creates the group at `path` and its parents when missing.
  void group(const std::string& path);

  // Attributes on the object at `path` (group or dataset), replacing one of that name.
  void attr(const std::string& path, const std::string& name, const std::string& value);
  void attr(const std::string& path, const std::string& name, const char* value) { attr(path, name, std::string(value)); }
  void attr(const std::string& path, const std::string& name, long long value);
  void attr(const std::string& path, const std::string& name, double value);
  void attr_int8(const std::string& path, const std::string& name, int value);

  // Datasets (parents created; an existing dataset of that name is replaced).
  void numbers(const std::string& path, const std::vector<std::uint64_t>& dims, const std::vector<double>& values);
  void int8s(const std::string& path, const std::vector<std::uint64_t>& dims, const std::vector<int>& values);
  void int32s(const std::string& path, const std::vector<std::uint64_t>& dims, const std::vector<int>& values);
  void strings(const std::string& path, const std::vector<std::string>& values);

  // Copies object `object` ("/" for the whole root) of `source` to `dst_path` here,
  // attributes and children included.
  void copy_from(const std::filesystem::path& source, const std::string& object, const std::string& dst_path);

 private:
  void ensure_parent(const std::string& path);
  void unlink_if_exists(const std::string& path);
  void write(const std::string& path, const std::vector<std::uint64_t>& dims, long long file_type,
             long long mem_type, const void* data);
  std::string file_;
  long long id_ = -1;
};

}  // namespace fusecheck::results
