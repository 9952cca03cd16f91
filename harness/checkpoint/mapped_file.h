// MappedFile: a whole file memory-mapped read-only (RAII). Checkpoint tensors are views
// into these mappings, so opening a model never reads or copies tensor data.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>

namespace fusecheck {

class MappedFile {
 public:
  // Maps `file`; throws InputError naming the file when it cannot be opened or mapped.
  explicit MappedFile(const std::filesystem::path& file);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void release() noexcept;

  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace fusecheck
