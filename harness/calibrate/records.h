// What calibration reads from a folder of `fusecheck run` results: per run, the sweep
// point it was (family, parameters, seed, from the scenario's description), both static
// scorers' figures, and per low-precision path its per-layer errors and end-to-end
// figures. The fusecheck scorer's components come from DIR/<run>.check.json (written by
// scripts/sweep) or, when absent, by scoring the run's checkpoint again.
#pragma once

#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "harness/calibrate/outcome.h"

namespace fusecheck::calibrate {

// One figure of the fusecheck scorer ("k_norm.ratio", "qk.amplification", ...).
struct StaticComponent {
  std::string name;
  int layer = -1;
  double value = 0;
};

struct StaticScore {
  double score = 1;
  std::string status;               // COMPATIBLE / WARNING / INCOMPATIBLE
  double estimated_amplification = 1;
  std::vector<double> layer_figure; // [n_layers], NaN where not analysed
};

struct PathRecord {
  std::string label;  // "emulated-cpu:fused-v1", "fused-cuda", ...
  std::string role;   // fused / standard / other
  std::string dtype;  // BF16 / F16 / F32
  double unit_roundoff = 0;          // of dtype: 2^-8 bf16, 2^-11 fp16
  std::vector<double> local_error;   // [n_layers] isolated rel_l2 at resid_out
  std::vector<double> propagated_error;  // [n_layers] propagated rel_l2 at resid_out
  double logits_propagated_error = 0;
  std::vector<double> propagated_rel_l2;  // [n_layers x taps] row-major (the claim's table)
  std::vector<double> head_propagated_rel_l2;  // [head taps]
  std::vector<double> kl, ref_margin, top1_match;  // per position
  long greedy_first_mismatch = -1;
  long greedy_steps = 0;
};

struct RunRecord {
  std::string file;
  std::string scenario_name;
  std::string family = "other";              // sweep family ("k_norm", "real", ...) or "other"
  std::map<std::string, std::string> params; // sweep axes of the point
  std::string seed;
  std::string model;                         // profile + options, or checkpoint path
  int n_layers = 0;
  std::vector<std::string> taps, head_taps;
  StaticScore braidinfer, fusecheck;
  std::vector<StaticComponent> components;   // fusecheck scorer's figures
  std::string components_source;             // the .check.json or the checkpoint
  std::vector<PathRecord> paths;
  // The static FP8 key bound's worst layer at the engines' default KV scale 1 (bound / 448,
  // check::fp8_key_bound), read from the checkpoint when the run has an FP8 recipe path
  // and the checkpoint is still there; NaN otherwise. The bound does not depend on the
  // recipe, only its thresholds do.
  double fp8_key_bound = std::numeric_limits<double>::quiet_NaN();
  const PathRecord* find_path(const std::string& label) const;
  // The path calibration labels a model by: the first with role fused and a bf16 dtype,
  // else the first fused one, else nullptr.
  const PathRecord* primary_path() const;
};

// The recipe a path label runs: "fp8-kv" of "emulated-cpu:fp8-kv" (a mix keeps its text,
// "fp8-w8a8+fused-v1@0-1"); the label itself when it names no recipe ("fused-cuda").
std::string recipe_of_path(const std::string& label);
// Whether the path's recipe (its base recipe, for a mix) is one of the FP8 recipes.
bool is_fp8_path(const std::string& label);

// Parses "calibration size=ci family=k_norm k_norm_max=96.5 seed=0" (a sweep scenario's
// description); false when the text is not one.
bool parse_point_description(const std::string& description, RunRecord& record);

// Sets "model.qk_depth" from the layers' qk.amplification components as this scorer
// computes it (check::qk_depth_figure), replacing the one a sidecar holds (an older
// fusecheck computed it differently, or not at all); none without q/k figures.
void add_qk_depth(std::vector<StaticComponent>& components);

// Reads one results file (a single run). InputError naming the file and the problem.
RunRecord load_run(const std::filesystem::path& file);

// Every *.h5 of `dir` (not recursive), sorted by name. InputError when none.
std::vector<RunRecord> load_results_dir(const std::filesystem::path& dir);

// Identity of a results folder: SHA-256 over the sorted file names and each file's
// bytes' SHA-256, so the thresholds fitted from it name exactly what they came from.
std::string results_identity(const std::vector<RunRecord>& runs);

}  // namespace fusecheck::calibrate
