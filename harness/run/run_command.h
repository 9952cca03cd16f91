// `fusecheck run SCENARIO`: loads the scenario, prepares the model (opening it, or
// writing a synthetic one into a cache), checks it statically, plans the paths
// (device substitution, fallback), runs the driver, cross-checks, writes the HDF5 file
// and formats the summary. The CLI (harness/cli/cli_run.cpp) only parses flags.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "harness/run/driver.h"
#include "harness/run/scenario.h"

namespace fusecheck::check {
struct FallbackDecision;
}

namespace fusecheck::run {

// Whether `fusecheck run --device cuda` computes the tap metrics on the device without
// being asked: on since the device route's GPU equality test (tests/gpu/
// test_gpu_device_route.cpp) passed on an NVIDIA H200 (2026-12-03; docs/gpu.md).
// `--host-metrics` still forces the host route.
inline constexpr bool kDeviceMetricsByDefault = true;

struct RunOptions {
  std::filesystem::path scenario;
  std::string device;                 // "cuda", "cpu", or "" (cuda when a GPU is usable)
  std::optional<std::filesystem::path> out;  // default: results_dir/<date>-<name>.h5 (run_output.h)
  std::filesystem::path results_dir = "results/runs";
  bool force_fused = false;
  bool dump_failing = false;
  // Where the tap metrics run on cuda (docs/gpu.md "Tap metrics on the device"): nullopt
  // takes kDeviceMetricsByDefault; true the device route (--device-metrics), false the host
  // route (--host-metrics). --device cpu always takes the host route.
  std::optional<bool> device_metrics;
  bool ref64 = false;                 // also run ref64-cpu (noise floor)
  bool progress = true;
  std::vector<std::string> argv;      // for provenance
  std::vector<std::filesystem::path> plugins;  // --plugin FILE.so, loaded before the scenario is read
  // --check-json FILE: also write what `fusecheck check MODEL --deep --format json` prints
  // for the run's model (default thresholds, fusecheck scorer), from the checkpoint the run
  // already opened; the calibration sweep keeps it beside each point (scripts/sweep).
  std::optional<std::filesystem::path> check_json;
};

struct RunOutcome {
  int exit_code = 0;                  // 0 every gate holds, 1 a gate failed
  std::filesystem::path file;
  std::string summary;
};

// Throws InputError for bad input (exit code 2 at the CLI).
RunOutcome run_scenario(const RunOptions& options);

// The paths that will run for `scenario` on `device`: GPU paths become their emulated
// counterparts on the CPU, and a fused path becomes the standard one when `fallback`
// says so (unless forced). `notes` receives one line per change.
std::vector<PathSlot> plan_paths(const Scenario& scenario, const std::string& device,
                                 bool use_fused, std::vector<std::string>& notes);

// Tokens for the scenario: its ids, or seeded uniform ids in [0, vocab). InputError when
// an id is past the vocabulary.
std::vector<std::vector<std::int32_t>> scenario_tokens(const Scenario& scenario, int vocab);

// Why CUDA paths cannot run here ("this build has no CUDA", no device visible); empty
// when a CUDA device is usable.
std::string cuda_unusable_reason();

// Folder a synthetic model is cached in: <cache_root>/<profile>-<hash of options>.
std::filesystem::path synth_cache_dir(const SynthModel& synth, const std::filesystem::path& cache_root);

}  // namespace fusecheck::run
