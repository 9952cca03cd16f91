// `fusecheck advise` (docs/advise.md): the cheapest per-layer recipe assignment whose
// measured end-to-end KL against ref32-cpu stays under a target. Measures, on emulated-cpu,
// each candidate recipe in each layer alone (the base recipe everywhere else), predicts a
// mix's KL as the base's plus the sum of its layers' increases (additive model), picks
// layers greedily by modeled decode bytes saved per unit of KL, then runs the proposed mix
// and keeps it only when its measured KL meets the target (dropping the last pick and
// running again when it does not).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "harness/core/checkpoint.h"

namespace fusecheck::ref {

struct AdviseOptions {
  std::string base = "fused-v1";                        // every layer not switched
  std::vector<std::string> candidates = {"fp8-kv", "fp8-w8a8"};
  double target_kl = 1e-2;                              // mean next-token KL, nats
  int decode_steps = 16;  // teacher-forced steps after the prompt (ref32-cpu's greedy tokens)
  int kv_len = 1024;      // context of the modeled decode step (bytes per layer)
  int max_proof_runs = 4;
};

// One measured run: a recipe mix on the prompt and the reference's greedy continuation.
struct MixMeasurement {
  std::string mix;
  double kl_mean = 0, kl_max = 0;   // KL(ref32 || mix) per row, nats
  double top1 = 0;                  // share of rows whose argmax matches ref32's
  int greedy_match = 0;             // the mix's own greedy steps equal to ref32's before the first miss
  std::vector<double> layer_ms;     // emulated-cpu wall time per layer, summed over the run
  double decode_bytes = 0;          // modeled bytes one decode step reads (all layers)
};

struct LayerChoice {
  int layer = 0;
  std::string recipe;
  double kl_increase = 0;   // measured KL of the base with this layer switched, minus the base's
  double bytes_saved = 0;   // modeled decode bytes this switch saves in this layer
  double layer_ms = 0;      // emulated-cpu time of this layer under `recipe`
};

struct AdviseResult {
  AdviseOptions options;
  MixMeasurement base;
  std::vector<LayerChoice> measured;       // every (layer, candidate) measured
  std::vector<MixMeasurement> proof_runs;  // each proposal run, last = the answer
  bool met = false;                        // the last proof run's KL is under the target
  std::string proposed;                    // the mix proposed (the base when nothing else meets)
  double predicted_kl = 0;                 // additive prediction for `proposed`
};

// Modeled bytes one decode step of `layer` reads under `recipe` at `kv_len` keys: its GEMM
// weights (1 byte per value with FP8 GEMMs, else 2) and its K and V cache (1 byte per
// value with an FP8 cache, else 2). A decode layer is bound by memory traffic, so this is
// the time model; emulated-cpu times are reported, not used (the CPU emulates FP8 slowly).
double modeled_decode_bytes(const ModelSpec& spec, const std::string& recipe, int kv_len);

// Throws InputError for unknown recipes, a target that is not a positive finite number,
// or an empty prompt.
AdviseResult advise(const Checkpoint& ckpt, std::span<const std::int32_t> prompt, const AdviseOptions& options);

}  // namespace fusecheck::ref
