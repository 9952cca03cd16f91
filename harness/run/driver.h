// The side-by-side driver: runs the reference and every path layer by layer (layer-major,
// so only one layer's taps live at a time), in isolated and propagated mode, computes the
// metrics at every tap, amplification, perturbation sensitivity, end-to-end agreement
// and timings. It knows paths only through the Path interface and a factory, so tests
// drive it with small fake paths.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "harness/core/path.h"
#include "harness/run/invariance.h"
#include "harness/run/metrics.h"
#include "harness/run/scenario.h"

namespace fusecheck::run {

// A path as it will run: what the scenario asked for, and what runs in its place.
struct PathSlot {
  PathRequest requested;
  std::string name;    // registry name that runs
  std::string recipe;
  std::string role;    // fused | standard | other
  DType dtype = DType::BF16;
  std::string note;    // why it differs from the request (substitution, fallback); empty if not
  std::string label() const { return recipe.empty() ? name : name + ":" + recipe; }
};

using PathMaker =
    std::function<std::unique_ptr<Path>(const std::string& name, const std::string& recipe)>;

inline constexpr int kNumLayerTaps = static_cast<int>(kLayerTaps.size());
inline constexpr int kNumHeadTaps = static_cast<int>(kHeadTaps.size());
int layer_tap_index(Tap t);  // column in kLayerTaps, -1 for head taps
int head_tap_index(Tap t);   // column in kHeadTaps, -1 for layer taps

// Metrics of one (path, mode) against the reference. Absent cell: tap not on both sides.
struct ModeTable {
  std::vector<std::array<std::optional<TapMetrics>, kNumLayerTaps>> layers;
  std::array<std::optional<TapMetrics>, kNumHeadTaps> head;
  std::vector<std::array<std::int8_t, kNumLayerTaps>> gate;  // 1 pass, 0 fail, -1 absent
  std::array<std::int8_t, kNumHeadTaps> head_gate{-1, -1};
  int first_divergent_layer = -1;         // -1: none; n_layers: the head
  std::optional<Tap> first_divergent_tap;
  int gate_failures = 0;
};

// At resid_out, per layer (definitions in docs/amplification.md).
struct Amplification {
  std::vector<double> local_error, propagated_error, amplification, accumulated_local, layer_gain;
  double end_to_end = kNaN;
  double logits_local_error = kNaN, logits_propagated_error = kNaN, logits_amplification = kNaN;
};

struct Timing {
  std::string clock;                 // "cuda-events", "cpu-steady-clock", "host-steady-clock"
  std::vector<double> layer_ms;      // per layer
  std::vector<std::string> op_names; // GPU paths: columns of `ops`
  std::vector<std::vector<OpTiming>> ops;  // [layer][op], aligned with op_names
  double copy_bandwidth_gbps = kNaN;
};

// Overflow headroom at every rounding point of a recipe (emulated paths), per layer and
// the head (row n_layers): values seen before rounding, over the whole run.
struct HeadroomPoint {
  double ratio = kNaN;      // max |x| / largest finite value of the recipe's format
  double overflow = kNaN;   // finite values that rounded to Inf
  double saturated = kNaN;  // values that rounded to the largest finite value
  double flushed = kNaN;    // FP8 points: nonzero values stored as zero (0 elsewhere)
};
struct RecipeHeadroom {
  std::vector<std::string> points;                     // columns
  std::vector<std::vector<HeadroomPoint>> by_layer;    // [n_layers + 1][points]
};

// Error against KV age (fp8-kv recipes, harness/run/kv_age_mode.h): one bucket of ages.
struct KvAgeRow {
  int lo = 0, hi = 0;                   // ages (query position - key position)
  double keys = 0;                      // (query, head, key) triples counted
  double rel_error = 0;                 // over all layers
  std::vector<double> rel_error_by_layer;
};

// The scale delivery check of an fp8-kv recipe (harness/run/scale_delivery_mode.h): one
// entry per multiplier of ref::kScaleDeliveryMultipliers.
struct ScaleDeliveryRecord {
  std::vector<double> multipliers, clipped, judged, rel_l2;  // judged: 1 or 0
  double reference_multiplier = 0, fp8_rel_l2 = 0, limit = 0;
  int decode_steps = 0;
  std::string verdict;  // "pass", "fail" or "inconclusive"
};

struct Dump {
  std::string mode;
  int layer = 0;  // n_layers for head taps
  Tap tap = Tap::resid_out;
  TapMatrix reference, path;
};

struct PathResult {
  PathSlot slot;
  std::string device;  // Path::device()
  std::optional<ModeTable> isolated, propagated;
  Amplification amplification;
  std::optional<NextTokenAgreement> end_to_end;
  std::vector<std::int32_t> greedy_tokens;
  int greedy_first_mismatch = -1;
  Timing timing;
  RecipeHeadroom recipe_headroom;  // empty when the path has no recipe
  // The same over greedy decoding alone (the prompt's prefill, then one token a step);
  // empty without greedy steps or a recipe.
  RecipeHeadroom greedy_headroom;
  std::vector<KvAgeRow> kv_age;    // empty unless an fp8-kv recipe ran greedy steps
  std::optional<ScaleDeliveryRecord> scale_delivery;  // end_to_end.scale_delivery, fp8-kv recipes
  std::vector<Dump> dumps;
};

struct PerturbResult {
  PerturbSpec spec;
  std::uint64_t seed = 0;
  std::string path;  // the path perturbed
  std::vector<std::array<double, kNumLayerTaps>> sensitivity;
  std::array<double, kNumHeadTaps> head_sensitivity{kNaN, kNaN};
};

struct RunConfig {
  int n_layers = 0;
  std::vector<std::vector<std::int32_t>> tokens;  // [batch][tokens_per_sequence]
  PhaseSpec phase;
  std::string reference;  // path name of the reference ("ref32-cpu", "ref32-cuda")
  bool ref64 = false;
  std::string ref64_path = "ref64-cpu";  // the FP64 truth: ref64-cuda when the run is on cuda
  ModeSpec modes;
  GateSpec gates;
  TimingSpec timing;
  int greedy_steps = 0;
  Seeds seeds;
  bool dump_failing = false;
  // Tap metrics where the taps are when the reference offers device taps (docs/gpu.md);
  // false: every tap crosses to the host (--host-metrics).
  bool device_metrics = false;
  // Called after each (layer, path) step and at the end: done of total units.
  std::function<void(int done, int total)> progress;
};

// Where a run's time goes: named phases in first-seen order, each with its wall seconds
// and the process's CPU seconds (all threads) over the same spans. Repeated spans of one
// phase add up. CPU seconds next to wall seconds tell host work (CPU >= wall with
// threads) from waiting on the GPU (CPU well below wall) on any machine, loaded or not.
struct PhaseTime {
  std::string name;
  double wall_s = 0, cpu_s = 0;
  int spans = 0;
};
class PhaseTimes {
 public:
  void add(const std::string& name, double wall_s, double cpu_s);
  const std::vector<PhaseTime>& entries() const { return entries_; }
  const PhaseTime* find(const std::string& name) const;
  // Times one span from construction to destruction (or stop()).
  class Span {
   public:
    Span(PhaseTimes& times, std::string name);
    ~Span() { stop(); }
    Span(const Span&) = delete;
    Span& operator=(const Span&) = delete;
    void stop();

   private:
    PhaseTimes* times_;
    std::string name_;
    double wall0_, cpu0_;
  };
  Span span(std::string name) { return Span(*this, std::move(name)); }

 private:
  std::vector<PhaseTime> entries_;
};
double process_cpu_seconds();  // CPU time of every thread of this process so far
double wall_seconds();         // a steady clock, seconds

struct RunResult {
  std::string reference_label, reference_device;
  std::string ref64_label;  // the FP64 path of the noise floor (empty without ref64)
  std::vector<PathResult> paths;
  std::optional<ModeTable> noise_floor_isolated, noise_floor_propagated;  // reference vs ref64
  Timing reference_timing;
  std::vector<std::int32_t> reference_greedy;
  std::optional<PerturbResult> perturb;
  std::optional<InvarianceResult> invariance;  // invariance mode (filled by run_scenario)
  int gate_failures = 0;
  int measured_rows = 0;
  bool device_metrics = false;  // the device route ran (RunConfig::device_metrics and a reference that offers it)
  PhaseTimes phases;  // the driver's phases; the caller adds its own (checkpoint, writing)
};

// Runs everything the config asks. Throws InputError for inputs the paths reject
// (token id past the vocabulary, ...).
RunResult run_side_by_side(const RunConfig& cfg, const std::vector<PathSlot>& slots,
                           const PathMaker& make);

// Amplification figures from the two mode tables (either may be absent).
Amplification compute_amplification(const ModeTable* isolated, const ModeTable* propagated,
                                    int n_layers);

}  // namespace fusecheck::run
