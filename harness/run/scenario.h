// Scenario: what one `fusecheck run` does, read from YAML and validated (docs/scenarios.md).
// Every problem is an InputError naming the file, the line and the key.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "harness/core/dtype.h"
#include "harness/core/taps.h"
#include "harness/run/invariance.h"
#include "harness/run/metrics.h"

namespace fusecheck::run {

struct SynthModel {
  std::string profile;               // "qwen3-tiny", "qwen3-0.6b", ...
  std::optional<int> layers;         // profile default when absent
  std::uint64_t seed = 0;
  std::string dtype = "bf16";        // bf16 | f16 | f32
  std::map<std::string, std::string> overrides;  // passed to the synth writer as given
};

struct ModelSource {
  std::filesystem::path path;        // checkpoint (resolved against the scenario's folder)
  std::optional<SynthModel> synth;   // set when the scenario names a synthetic profile
};

struct TokenSource {
  std::vector<std::vector<std::int32_t>> ids;  // explicit ids: one list for every sequence, or one per sequence
  std::optional<std::int64_t> count;           // tokens per sequence when seeded
  std::optional<std::string> prompt;           // text, encoded by the model's tokenizer
};

enum class Phase { Prefill, Decode };

struct PhaseSpec {
  Phase kind = Phase::Prefill;
  int prefill_len = 0;   // prefill: N; decode: kv_len
  int decode_steps = 0;  // decode only
  int tokens_per_sequence() const { return prefill_len + decode_steps; }
};

// One path to compare: registry name, recipe (emulated-cpu), and its role in tables.
struct PathRequest {
  std::string name;    // "fused-cuda", "emulated-cpu", ...
  std::string recipe;  // "fused-v1", ... (empty: the path's default)
  std::string role;    // "fused", "standard" or "other"; inferred when not given
  std::string label() const { return recipe.empty() ? name : name + ":" + recipe; }
};

struct PerturbSpec {
  int layer = 0;
  Tap tap = Tap::k;
  double relative_size = 1e-3;
};

struct ModeSpec {
  bool isolated = true;
  bool propagated = true;
  std::optional<PerturbSpec> perturb;
  std::optional<InvarianceSpec> invariance;  // `invariance` in modes; the `invariance:` block
};

// Gate thresholds: scenario values override the per-dtype defaults (default_gates) key
// by key; `taps` overrides the scenario default for one tap.
struct GateSpec {
  GateThresholds all;                     // NaN fields: use the per-dtype default
  std::map<Tap, GateThresholds> per_tap;  // NaN fields: fall back to `all`, then default
  GateThresholds resolve(Tap tap, DType dtype) const;
};

struct TimingSpec {
  bool enabled = true;
  int warmup = 3;
  int repetitions = 20;
  bool cold_l2 = false;
  // Time the reference's ops with CUDA events too. Off by default: the reference is the
  // truth, not a candidate for speed, and its FP32/FP64 ops cost more to time than every
  // other path's together (docs/scenarios.md); without it the reference keeps the host
  // clock's layer times of its validated run.
  bool reference = false;
};

struct Seeds {
  std::uint64_t tokens = 1;
  std::uint64_t paths = 0;
  std::uint64_t perturbation = 2;
};

struct Scenario {
  std::filesystem::path file;  // as given
  std::string text;            // verbatim, for provenance
  std::string name;            // `name:` or the file stem
  ModelSource model;
  TokenSource tokens;
  int batch = 1;
  PhaseSpec phase;
  std::vector<std::filesystem::path> plugins;  // `plugins:`, resolved against the file's folder
  std::vector<PathRequest> paths;
  std::string reference = "auto";  // auto: ref32 on the run's device
  bool ref64 = false;
  ModeSpec modes;
  GateSpec gates;
  TimingSpec timing;
  int greedy_steps = 0;
  // end_to_end.kv_age: error against KV age of the emulated fp8-kv paths over the greedy
  // steps (harness/run/kv_age_mode.h); off by default (one more emulated run per path).
  bool kv_age = false;
  // end_to_end.scale_delivery: the scale delivery check of the emulated fp8-kv paths on the
  // run's prompt and greedy steps (harness/run/scale_delivery_mode.h); a check that does not
  // pass is a gate failure. Off by default (six more emulated runs per path).
  bool scale_delivery = false;
  Seeds seeds;
  bool force_fused = false;
  std::map<std::string, int> key_lines;  // 1-based line of each value read ("phase.prefill")

  // "FILE:LINE: KEY" (printable, bounded) for errors found after reading (sizes, model).
  std::string where(const std::string& key) const;
};

// Reads and validates `file`. Throws InputError("file:line: key", problem).
Scenario load_scenario(const std::filesystem::path& file);
// Same, from text (tests; `file` only names the source in errors and resolves paths).
Scenario parse_scenario(const std::string& text, const std::filesystem::path& file);

// Path names a scenario may use: the registry's, plus the CUDA names a CPU-only build
// substitutes (so a GPU scenario validates everywhere).
bool is_known_path_name(const std::string& name);
// Role of a path from its name and recipe when the scenario does not say.
std::string infer_role(const std::string& name, const std::string& recipe);
// Low-precision dtype of a path (ULPs, headroom, default gates).
DType path_dtype(const std::string& name, const std::string& recipe);

}  // namespace fusecheck::run
