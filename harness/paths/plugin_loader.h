// Loading path plug-ins: shared libraries built against include/fusecheck/path_plugin.h,
// opened with dlopen, checked (entry point, ABI version, table, path names), and adapted
// to the Path interface so that every command drives them like the built-in paths. Every
// problem with a plug-in is an InputError naming its file (exit 2): a plug-in is input.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace fusecheck {

class Checkpoint;
class Path;
struct PathOptions;

// What a results file records about one loaded plug-in.
struct PluginProvenance {
  std::string file;      // absolute path as loaded
  std::string name;      // the plug-in's own name and version
  std::string version;
  std::string sha256;    // of the file's bytes
  std::vector<std::string> paths;                          // path names it registered
  std::vector<std::pair<std::string, std::string>> env;    // switch -> value ("<unset>")
};

// Loads `file` once (a second call with the same file is a no-op) and registers its paths.
// Throws InputError naming the file: not loadable, not a plug-in, ABI mismatch, a bad
// table, or a path name that is already registered.
const PluginProvenance& load_plugin(const std::filesystem::path& file);

// Every plug-in loaded in this process, in load order.
const std::vector<PluginProvenance>& loaded_plugins();

// One line per plug-in ("name version sha256 file; env A=1, B=<unset>") for results files.
std::string plugins_provenance_text();

// The built-in CUDA paths (ref32-cuda, standard-cuda, fused-cuda) live in libfusecheck_cuda.so,
// a plug-in of the same ABI, so that commands that run no CUDA path never load CUDA. It is
// looked for beside the binary, in ../lib beside the binary, in the install prefix's lib,
// and in the build tree this binary came from; or only at $FUSECHECK_CUDA_PLUGIN when set.
std::vector<std::filesystem::path> cuda_plugin_candidates();
// Creates a built-in CUDA path, loading the library on first use (recorded like any
// plug-in); InputError saying what to build or install when the library is absent.
std::unique_ptr<Path> make_builtin_cuda_path(const std::string& name, const Checkpoint& ckpt,
                                             const PathOptions& opts);
// CUDA devices the library can use; 0 when the library is absent or sees none.
int cuda_device_count();
// Whether an NVIDIA driver shows itself (/dev/nvidiactl, /proc/driver/nvidia, WSL's
// /dev/dxg): a check that loads nothing, so that choosing a default device on a machine
// without a GPU does not load CUDA.
bool gpu_driver_present();
// Why cuda_device_count() is 0: the library is missing (and what to build), or no device.
std::string no_cuda_device_reason();

struct DeviceDescription {
  std::string name, library_versions;
  int driver_version = 0, runtime_version = 0, sm_clock_peak_mhz = 0, mem_clock_peak_mhz = 0;
  double copy_bandwidth_gbs = 0;  // 0 = not measured
  std::uint64_t global_mem_bytes = 0;  // 0 = unknown
};
// Provenance of CUDA device `index` (the copy bandwidth measured when asked).
DeviceDescription describe_cuda_device(int index, bool measure_bandwidth);

}  // namespace fusecheck
