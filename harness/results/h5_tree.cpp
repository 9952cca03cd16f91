// Reads an HDF5 file into an H5Node tree with the HDF5 C API (see h5_tree.h).
#include "harness/results/h5_tree.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <utility>

#include <fmt/core.h>
#include <hdf5.h>

#include "harness/core/error.h"

namespace fusecheck::results {

namespace {

// Owns one HDF5 identifier and closes it with the matching call.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), close_(o.close_) {}
  Handle& operator=(Handle&& o) noexcept {
    std::swap(id_, o.id_);
    std::swap(close_, o.close_);
    return *this;
  }
  ~Handle() {
    if (id_ >= 0 && close_) close_(id_);
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*close_)(hid_t) = nullptr;
};

// Reads either a dataset or an attribute; the two APIs differ only in these calls.
struct Readable {
  hid_t id;
  bool is_attribute;
  hid_t type() const { return is_attribute ? H5Aget_type(id) : H5Dget_type(id); }
  hid_t space() const { return is_attribute ? H5Aget_space(id) : H5Dget_space(id); }
  herr_t read(hid_t mem_type, void* buf) const {
    return is_attribute ? H5Aread(id, mem_type, buf)
                        : H5Dread(id, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  }
};

void reclaim_vlen(hid_t mem_type, hid_t space, void* buf) {
#if H5_VERSION_GE(1, 12, 0)
  H5Treclaim(mem_type, space, H5P_DEFAULT, buf);
#else
  H5Dvlen_reclaim(mem_type, space, H5P_DEFAULT, buf);
#endif
}

class TreeReader {
 public:
  explicit TreeReader(std::string file) : file_(std::move(file)) {}

  H5Node read_group(hid_t group, const std::string& path) {
    H5Node node;
    read_attributes(group, path, node.attrs);
    H5G_info_t info{};
    if (H5Gget_info(group, &info) < 0) fail(path, "cannot list the group");
    for (hsize_t i = 0; i < info.nlinks; ++i) {
      std::string name = link_name(group, i, path);
      std::string child_path = path == "/" ? "/" + name : path + "/" + name;
      Handle obj(H5Oopen(group, name.c_str(), H5P_DEFAULT), H5Oclose);
      if (!obj.ok()) fail(child_path, "cannot open the object");
      switch (H5Iget_type(obj.get())) {
        case H5I_GROUP:
          node.groups.emplace(name, read_group(obj.get(), child_path));
          break;
        case H5I_DATASET: {
          H5Value v = read_value({obj.get(), false}, child_path);
          read_attributes(obj.get(), child_path, v.attrs);
          node.datasets.emplace(name, std::move(v));
          break;
        }
        default:
          break;  // named datatypes carry no results
      }
    }
    return node;
  }

 private:
  [[noreturn]] void fail(const std::string& object, const std::string& what) const {
    throw InputError(file_, fmt::format("{}: {}", object, what));
  }

  std::string link_name(hid_t group, hsize_t i, const std::string& path) const {
    ssize_t n = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0,
                                   H5P_DEFAULT);
    if (n < 0) fail(path, "cannot read a link name");
    std::string name(static_cast<std::size_t>(n) + 1, '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(),
                       H5P_DEFAULT);
    name.resize(static_cast<std::size_t>(n));
    return name;
  }

  void read_attributes(hid_t obj, const std::string& path, std::map<std::string, H5Value>& out) {
    H5O_info_t oinfo{};
#if H5_VERSION_GE(1, 12, 0)
    if (H5Oget_info3(obj, &oinfo, H5O_INFO_NUM_ATTRS) < 0) fail(path, "cannot read object info");
#else
    if (H5Oget_info(obj, &oinfo) < 0) fail(path, "cannot read object info");
#endif
    for (hsize_t i = 0; i < oinfo.num_attrs; ++i) {
      Handle attr(H5Aopen_by_idx(obj, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, i, H5P_DEFAULT,
                                 H5P_DEFAULT),
                  H5Aclose);
      if (!attr.ok()) {
        // Creation order is only tracked when the writer asked for it; fall back to names.
        attr = Handle(H5Aopen_by_idx(obj, ".", H5_INDEX_NAME, H5_ITER_INC, i, H5P_DEFAULT,
                                     H5P_DEFAULT),
                      H5Aclose);
      }
      if (!attr.ok()) fail(path, "cannot open an attribute");
      ssize_t n = H5Aget_name(attr.get(), 0, nullptr);
      std::string name(static_cast<std::size_t>(n) + 1, '\0');
      H5Aget_name(attr.get(), name.size(), name.data());
      name.resize(static_cast<std::size_t>(n));
      H5Value v = read_value({attr.get(), true}, path + "@" + name);
      out.emplace(name, std::move(v));
    }
  }

  H5Value read_value(Readable r, const std::string& where) {
    Handle type(r.type(), H5Tclose);
    Handle space(r.space(), H5Sclose);
    if (!type.ok() || !space.ok()) fail(where, "cannot read type or shape");
    H5Value v;
    int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank < 0) fail(where, "bad dataspace");
    std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
    if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    v.dims.assign(dims.begin(), dims.end());
    if (H5Sget_simple_extent_type(space.get()) == H5S_NULL) return v;
    std::uint64_t count = v.size();
    if (count > kMaxReadElements) {
      v.skipped = true;
      return v;
    }
    read_typed(r, type.get(), space.get(), count, v, where);
    return v;
  }

  void read_typed(Readable r, hid_t type, hid_t space, std::uint64_t count, H5Value& v,
                  const std::string& where) {
    switch (H5Tget_class(type)) {
      case H5T_INTEGER:
      case H5T_FLOAT: {
        v.kind = H5Value::Kind::number;
        v.numbers.resize(count);
        if (count && r.read(H5T_NATIVE_DOUBLE, v.numbers.data()) < 0) fail(where, "cannot read numbers");
        return;
      }
      case H5T_ENUM: {
        // h5py stores bool as an enum over int8; enums do not convert to double, so read
        // them as their base integer type.
        Handle base(H5Tget_super(type), H5Tclose);
        std::size_t size = H5Tget_size(type);
        std::vector<unsigned char> raw(count * size);
        if (count && r.read(type, raw.data()) < 0) fail(where, "cannot read enum values");
        bool is_signed = H5Tget_sign(base.get()) == H5T_SGN_2;
        v.kind = H5Value::Kind::number;
        v.numbers.resize(count);
        for (std::uint64_t i = 0; i < count; ++i) {
          long long x = 0;
          const unsigned char* p = raw.data() + i * size;
          if (size == 1) x = is_signed ? static_cast<long long>(static_cast<std::int8_t>(*p)) : *p;
          else if (size == 2) { std::int16_t s; std::uint16_t u; std::memcpy(&s, p, 2); std::memcpy(&u, p, 2); x = is_signed ? s : u; }
          else if (size == 4) { std::int32_t s; std::uint32_t u; std::memcpy(&s, p, 4); std::memcpy(&u, p, 4); x = is_signed ? s : u; }
          else { std::int64_t s; std::memcpy(&s, p, 8); x = s; }
          v.numbers[i] = static_cast<double>(x);
        }
        return;
      }
      case H5T_STRING: {
        v.kind = H5Value::Kind::string;
        v.strings = read_strings(r, type, space, count, where);
        return;
      }
      case H5T_COMPOUND: {
        v.kind = H5Value::Kind::compound;
        int members = H5Tget_nmembers(type);
        for (int m = 0; m < members; ++m) {
          char* raw_name = H5Tget_member_name(type, static_cast<unsigned>(m));
          std::string name(raw_name);
          H5free_memory(raw_name);
          Handle member(H5Tget_member_type(type, static_cast<unsigned>(m)), H5Tclose);
          v.columns.emplace(name, read_member(r, space, count, name, member.get(), where + "." + name));
        }
        return;
      }
      default:
        v.kind = H5Value::Kind::other;  // references, opaque, arrays: not metrics
        return;
    }
  }

  // One member of a compound, read through a one-member memory compound type.
  H5Value read_member(Readable r, hid_t space, std::uint64_t count, const std::string& name,
                      hid_t member_type, const std::string& where) {
    H5Value col;
    col.dims = {count};
    H5T_class_t cls = H5Tget_class(member_type);
    if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
      Handle mem(H5Tcreate(H5T_COMPOUND, sizeof(double)), H5Tclose);
      H5Tinsert(mem.get(), name.c_str(), 0, H5T_NATIVE_DOUBLE);
      col.kind = H5Value::Kind::number;
      col.numbers.resize(count);
      if (count && r.read(mem.get(), col.numbers.data()) < 0) fail(where, "cannot read column");
    } else if (cls == H5T_STRING) {
      Handle str(H5Tcopy(member_type), H5Tclose);
      Handle mem(H5Tcreate(H5T_COMPOUND, H5Tget_size(member_type)), H5Tclose);
      H5Tinsert(mem.get(), name.c_str(), 0, str.get());
      col.kind = H5Value::Kind::string;
      col.strings = read_strings(r, member_type, space, count, where, mem.get());
    } else if (cls == H5T_ENUM) {
      std::size_t size = H5Tget_size(member_type);
      Handle mem(H5Tcreate(H5T_COMPOUND, size), H5Tclose);
      H5Tinsert(mem.get(), name.c_str(), 0, member_type);
      std::vector<signed char> raw(count * size);
      if (count && r.read(mem.get(), raw.data()) < 0) fail(where, "cannot read column");
      col.kind = H5Value::Kind::number;
      for (std::uint64_t i = 0; i < count; ++i) col.numbers.push_back(raw[i * size]);
    }
    return col;
  }

  // Fixed or variable length; `mem_override` reads a compound member instead.
  std::vector<std::string> read_strings(Readable r, hid_t type, hid_t space, std::uint64_t count,
                                        const std::string& where, hid_t mem_override = -1) {
    std::vector<std::string> out;
    if (count == 0) return out;
    if (H5Tis_variable_str(type) > 0) {
      std::vector<char*> ptrs(count, nullptr);
      Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
      H5Tset_size(mem.get(), H5T_VARIABLE);
      H5Tset_cset(mem.get(), H5Tget_cset(type));
      hid_t read_type = mem.get();
      Handle compound;
      if (mem_override >= 0) {
        compound = Handle(H5Tcreate(H5T_COMPOUND, sizeof(char*)), H5Tclose);
        char* raw_name = H5Tget_member_name(mem_override, 0);
        H5Tinsert(compound.get(), raw_name, 0, mem.get());
        H5free_memory(raw_name);
        read_type = compound.get();
      }
      if (r.read(read_type, ptrs.data()) < 0) fail(where, "cannot read strings");
      for (char* p : ptrs) out.emplace_back(p ? p : "");
      reclaim_vlen(read_type, space, ptrs.data());
      return out;
    }
    std::size_t size = H5Tget_size(type);
    std::vector<char> buf(count * size);
    hid_t read_type = mem_override >= 0 ? mem_override : type;
    if (r.read(read_type, buf.data()) < 0) fail(where, "cannot read strings");
    for (std::uint64_t i = 0; i < count; ++i) {
      const char* p = buf.data() + i * size;
      std::size_t len = strnlen(p, size);
      std::string s(p, len);
      while (!s.empty() && s.back() == ' ') s.pop_back();  // space-padded strings
      out.push_back(std::move(s));
    }
    return out;
  }

  std::string file_;
};

}  // namespace

void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::size_t H5Value::size() const {
  std::size_t n = 1;
  for (auto d : dims) n *= static_cast<std::size_t>(d);
  return n;
}

std::optional<double> H5Value::number() const {
  if (!is_number() || numbers.size() != 1) return std::nullopt;
  return numbers[0];
}

std::optional<std::string> H5Value::string() const {
  if (!is_string() || strings.size() != 1) return std::nullopt;
  return strings[0];
}

const H5Node* H5Node::group(const std::string& slash_path) const {
  const H5Node* node = this;
  std::size_t start = 0;
  while (node && start < slash_path.size()) {
    std::size_t end = slash_path.find('/', start);
    if (end == std::string::npos) end = slash_path.size();
    std::string part = slash_path.substr(start, end - start);
    start = end + 1;
    if (part.empty()) continue;
    auto it = node->groups.find(part);
    node = it == node->groups.end() ? nullptr : &it->second;
  }
  return node;
}

const H5Value* H5Node::dataset(const std::string& slash_path) const {
  auto slash = slash_path.rfind('/');
  const H5Node* parent = slash == std::string::npos ? this : group(slash_path.substr(0, slash));
  if (!parent) return nullptr;
  auto it = parent->datasets.find(slash == std::string::npos ? slash_path : slash_path.substr(slash + 1));
  return it == parent->datasets.end() ? nullptr : &it->second;
}

std::optional<std::string> H5Node::attr_string(const std::string& name) const {
  auto it = attrs.find(name);
  if (it == attrs.end()) return std::nullopt;
  return it->second.string();
}

std::optional<double> H5Node::attr_number(const std::string& name) const {
  auto it = attrs.find(name);
  if (it == attrs.end()) return std::nullopt;
  return it->second.number();
}

bool looks_like_hdf5(const std::filesystem::path& file) {
  silence_hdf5_errors();
  return H5Fis_hdf5(file.c_str()) > 0;
}

namespace {

constexpr std::array<unsigned char, 8> kSignature = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

// Runs `read` in a forked child and throws InputError when the child did not come back
// cleanly. Checksums make HDF5 refuse damaged metadata, but libhdf5 1.10 does not always
// refuse it cleanly: files of the unchecksummed format can make it copy out of bounds or
// allocate exabytes, and even in the checksummed one a checksum failure inside a group's
// link heap frees uninitialised pointers on the way out (H5G__link_release_table, found
// by the every-byte test). No check before the read can rule these out, so every file is
// read once in a child first. A child that returns, or throws InputError, leaves the
// real read (and its one-line error) to the caller: the fork holds the same memory, so
// the read goes the same way. Damaged metadata can also send libhdf5 round a loop for
// ever (found by fuzz_results), so the child has a deadline: 5 s plus 1 s per 10 MB,
// where an undamaged file takes milliseconds (seconds for the largest, with dumps).
void probe_in_child(const std::string& name, std::uintmax_t bytes, const std::function<void()>& read) {
  const auto deadline_s = static_cast<unsigned>(5 + bytes / 10'000'000);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw InputError(name, "cannot start a process to read the file");
  if (pid == 0) {
    // A crash or the deadline ends the child there and then: handlers installed by a
    // sanitizer or a fuzzer would report it as their own finding instead.
    for (int sig : {SIGALRM, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) std::signal(sig, SIG_DFL);
    ::alarm(deadline_s);
    int code = 0;
    try {
      read();
    } catch (const InputError&) {
      code = 0;
    } catch (...) {
      code = 3;
    }
    ::_exit(code);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw InputError(name, "lost the process reading the file");
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
    throw InputError(name, fmt::format("damaged: the HDF5 library was still reading it after {} s", deadline_s));
  }
  throw InputError(name, WIFSIGNALED(status)
                             ? fmt::format("damaged: the HDF5 library crashed reading it (signal {})",
                                           WTERMSIG(status))
                             : std::string("damaged: the HDF5 library failed reading it"));
}

H5Node read_open_file(hid_t file_id, const std::string& name) {
  Handle f(file_id, H5Fclose);
  if (!f.ok()) throw InputError(name, "cannot open the HDF5 file (truncated or damaged?)");
  Handle root(H5Gopen2(f.get(), "/", H5P_DEFAULT), H5Gclose);
  if (!root.ok()) throw InputError(name, "cannot open the root group");
  return TreeReader(name).read_group(root.get(), "/");
}

H5Node read_path(const std::filesystem::path& file) {
  return read_open_file(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), file.string());
}

H5Node read_image(std::span<const std::byte> bytes, const std::string& name) {
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  // The core driver reads from memory; no backing store, so nothing touches the disk.
  if (H5Pset_fapl_core(fapl.get(), 1 << 16, 0) < 0 ||
      H5Pset_file_image(fapl.get(), const_cast<std::byte*>(bytes.data()), bytes.size()) < 0) {
    throw InputError(name, "cannot hand the file image to HDF5");
  }
  return read_open_file(H5Fopen(name.c_str(), H5F_ACC_RDONLY, fapl.get()), name);
}

}  // namespace

H5Node read_h5_tree(const std::filesystem::path& file) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    throw InputError(file.string(), "no such results file");
  }
  if (!looks_like_hdf5(file)) throw InputError(file.string(), "not an HDF5 results file");
  const std::uintmax_t size = std::filesystem::file_size(file, ec);
  probe_in_child(file.string(), ec ? 0 : size, [&] { read_path(file); });
  return read_path(file);
}

H5Node read_h5_tree_image(std::span<const std::byte> bytes, const std::string& name) {
  silence_hdf5_errors();
  if (bytes.size() < kSignature.size() || std::memcmp(bytes.data(), kSignature.data(), kSignature.size()) != 0) {
    throw InputError(name, "not an HDF5 results file");
  }
  probe_in_child(name, bytes.size(), [&] { read_image(bytes, name); });
  return read_image(bytes, name);
}

}  // namespace fusecheck::results

// LeakSanitizer (ASan builds, the fuzz target): libhdf5 1.10.8 loses small blocks on some
// of its error paths (a damaged object header, a failed decode), allocated and lost
// inside the library, where fusecheck cannot free them; every damaged file would
// otherwise end a sanitized run in a leak report. Leaks of fusecheck's own code are
// still reported. Unused in other builds.
extern "C" const char* __lsan_default_suppressions() { return "leak:libhdf5_serial.so\n"; }
// ... and without the "Suppressions used:" table LeakSanitizer prints at exit when one
// matched: an error stays one line on stderr in sanitized builds too.
extern "C" const char* __lsan_default_options() { return "print_suppressions=0"; }
