// The HDF5 writer of the results area (see h5_write.h).
#include "harness/results/h5_write.h"

#include <algorithm>

#include <fmt/core.h>
#include <hdf5.h>

#include "harness/core/error.h"
#include "harness/results/h5_tree.h"

namespace fusecheck::results {

namespace {

// Fixed-length, NUL-padded UTF-8 of `size` bytes (at least 1: HDF5 refuses 0). Not
// variable-length: those live in the global heap, which has no checksum
// (docs/results-format.md, "Damage").
hid_t utf8_fixed_string(std::size_t size) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, std::max<std::size_t>(size, 1));
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

// File access: the HDF5 1.10 format, whose every metadata structure (superblock, object
// headers, link and attribute heaps and B-trees, chunk indexes) carries a checksum that
// the library verifies when it reads it.
hid_t checksummed_format_access() {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
  return fapl;
}

// Dataset creation: chunked with the Fletcher-32 filter, so raw data is checksummed too
// (HDF5 verifies it on every read). Chunks of at most ~16 MiB along the first dimension;
// empty datasets stay contiguous (no data, and HDF5 refuses zero-sized chunks).
hid_t checksummed_dataset_creation(const std::vector<hsize_t>& dims, std::size_t element_size) {
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  if (dims.empty() || std::find(dims.begin(), dims.end(), hsize_t{0}) != dims.end()) return dcpl;
  constexpr hsize_t kChunkBytes = hsize_t{16} << 20;
  hsize_t row_bytes = element_size;
  for (std::size_t i = 1; i < dims.size(); ++i) row_bytes *= dims[i];
  std::vector<hsize_t> chunk = dims;
  chunk[0] = std::clamp<hsize_t>(kChunkBytes / std::max<hsize_t>(row_bytes, 1), 1, dims[0]);
  H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
  H5Pset_fletcher32(dcpl);
  return dcpl;
}

std::vector<hsize_t> to_hsize(const std::vector<std::uint64_t>& dims) {
  return std::vector<hsize_t>(dims.begin(), dims.end());
}

}  // namespace

H5Writer::H5Writer(const std::filesystem::path& file, bool open_existing) : file_(file.string()) {
  silence_hdf5_errors();
  hid_t fapl = checksummed_format_access();
  hid_t id = open_existing ? H5Fopen(file_.c_str(), H5F_ACC_RDWR, fapl)
                           : H5Fcreate(file_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  if (id < 0) throw InputError(file_, open_existing ? "cannot open for writing" : "cannot create the file");
  id_ = id;
}

H5Writer::~H5Writer() {
  if (id_ >= 0) H5Fclose(static_cast<hid_t>(id_));
}

void H5Writer::group(const std::string& path) {
  std::string partial;
  std::size_t start = 1;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    partial = path.substr(0, end);
    start = end + 1;
    if (partial.empty() || partial == "/") continue;
    if (H5Lexists(static_cast<hid_t>(id_), partial.c_str(), H5P_DEFAULT) > 0) continue;
    hid_t g = H5Gcreate2(static_cast<hid_t>(id_), partial.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) throw InputError(file_, fmt::format("{}: cannot create group", partial));
    H5Gclose(g);
  }
}

void H5Writer::ensure_parent(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) group(path.substr(0, slash));
}

void H5Writer::unlink_if_exists(const std::string& path) {
  if (H5Lexists(static_cast<hid_t>(id_), path.c_str(), H5P_DEFAULT) > 0) {
    H5Ldelete(static_cast<hid_t>(id_), path.c_str(), H5P_DEFAULT);
  }
}

namespace {

void write_attr(hid_t file, const std::string& where, const std::string& path, const std::string& name,
                hid_t file_type, hid_t mem_type, const void* value) {
  hid_t obj = H5Oopen(file, path.c_str(), H5P_DEFAULT);
  if (obj < 0) throw InputError(where, fmt::format("{}: no such object for attribute {}", path, name));
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT);
  herr_t st = a < 0 ? -1 : H5Awrite(a, mem_type, value);
  if (a >= 0) H5Aclose(a);
  H5Sclose(space);
  H5Oclose(obj);
  if (st < 0) throw InputError(where, fmt::format("{}: cannot write attribute {}", path, name));
}

}  // namespace

void H5Writer::attr(const std::string& path, const std::string& name, const std::string& value) {
  hid_t t = utf8_fixed_string(value.size());
  std::string padded = value;
  padded.resize(H5Tget_size(t), '\0');
  write_attr(static_cast<hid_t>(id_), file_, path, name, t, t, padded.data());
  H5Tclose(t);
}

void H5Writer::attr(const std::string& path, const std::string& name, long long value) {
  write_attr(static_cast<hid_t>(id_), file_, path, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, &value);
}

void H5Writer::attr(const std::string& path, const std::string& name, double value) {
  write_attr(static_cast<hid_t>(id_), file_, path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void H5Writer::attr_int8(const std::string& path, const std::string& name, int value) {
  signed char v = static_cast<signed char>(value);
  write_attr(static_cast<hid_t>(id_), file_, path, name, H5T_STD_I8LE, H5T_NATIVE_SCHAR, &v);
}

void H5Writer::write(const std::string& path, const std::vector<std::uint64_t>& dims, long long file_type,
                     long long mem_type, const void* data) {
  ensure_parent(path);
  unlink_if_exists(path);
  auto hd = to_hsize(dims);
  hid_t space = H5Screate_simple(static_cast<int>(hd.size()), hd.data(), nullptr);
  hid_t dcpl = checksummed_dataset_creation(hd, H5Tget_size(static_cast<hid_t>(file_type)));
  hid_t d = H5Dcreate2(static_cast<hid_t>(id_), path.c_str(), static_cast<hid_t>(file_type), space, H5P_DEFAULT,
                       dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  herr_t st = d < 0 ? -1 : H5Dwrite(d, static_cast<hid_t>(mem_type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  if (d >= 0) H5Dclose(d);
  H5Sclose(space);
  if (st < 0) throw InputError(file_, fmt::format("{}: cannot write dataset", path));
}

void H5Writer::numbers(const std::string& path, const std::vector<std::uint64_t>& dims,
                       const std::vector<double>& values) {
  write(path, dims, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values.data());
}

void H5Writer::int8s(const std::string& path, const std::vector<std::uint64_t>& dims, const std::vector<int>& values) {
  std::vector<signed char> v(values.begin(), values.end());
  write(path, dims, H5T_STD_I8LE, H5T_NATIVE_SCHAR, v.data());
}

void H5Writer::int32s(const std::string& path, const std::vector<std::uint64_t>& dims, const std::vector<int>& values) {
  write(path, dims, H5T_STD_I32LE, H5T_NATIVE_INT, values.data());
}

void H5Writer::strings(const std::string& path, const std::vector<std::string>& values) {
  std::size_t width = 1;
  for (const auto& s : values) width = std::max(width, s.size());
  std::string packed(values.size() * width, '\0');
  for (std::size_t i = 0; i < values.size(); ++i) values[i].copy(packed.data() + i * width, width);
  hid_t t = utf8_fixed_string(width);
  write(path, {values.size()}, t, t, packed.data());
  H5Tclose(t);
}

void H5Writer::copy_from(const std::filesystem::path& source, const std::string& object,
                         const std::string& dst_path) {
  hid_t src = H5Fopen(source.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (src < 0) throw InputError(source.string(), "cannot open for copying");
  ensure_parent(dst_path);
  herr_t st = H5Ocopy(src, object.c_str(), static_cast<hid_t>(id_), dst_path.c_str(), H5P_DEFAULT, H5P_DEFAULT);
  H5Fclose(src);
  if (st < 0) throw InputError(source.string(), fmt::format("{}: cannot copy into {}", object, file_));
}

}  // namespace fusecheck::results
