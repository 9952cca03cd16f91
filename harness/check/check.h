// The weights-only compatibility check (`fusecheck check`): per-tensor statistics of a
// checkpoint's norm weights, two scorers (the seed's `braidinfer` formula reproduced
// exactly, and our `fusecheck` scorer, docs/static-score.md) and the result that the
// command, the harness's cross-check and the fallback decision all consume.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "harness/check/thresholds.h"

namespace fusecheck {
class Checkpoint;
struct TensorView;
}

namespace fusecheck::check {

enum class Scorer { Braidinfer, Fusecheck };
enum class Status { Compatible, Warning, Incompatible };

std::string_view scorer_name(Scorer s);  // "braidinfer" / "fusecheck"
std::optional<Scorer> scorer_from_name(std::string_view name);
std::string_view status_name(Status s);  // "COMPATIBLE" / "WARNING" / "INCOMPATIBLE"
// The seed's exit codes: 0 compatible, 1 warning, 2 incompatible (3, errors, is the CLI's).
int status_exit_code(Status s);
// score < incompatible_below: INCOMPATIBLE; < warning_below: WARNING; else COMPATIBLE.
Status status_from_score(double score, const StatusCutoffs& cutoffs);

enum class NormRole { AttnNorm, QNorm, KNorm, MlpNorm, FinalNorm };
std::string_view norm_role_name(NormRole r);  // "attn_norm", "q_norm", "k_norm", "mlp_norm", "final_norm"

// Statistics of one norm weight tensor. The braidinfer scorer fills them from signed
// values (its quirk); the fusecheck scorer from absolute values.
struct NormStats {
  NormRole role = NormRole::AttnNorm;
  std::string tensor;        // stored name ("" when braidinfer assumed an absent tensor)
  std::int64_t numel = 0;
  double max = 0;            // braidinfer: max w; fusecheck: max |w|
  double median = 0;         // braidinfer: torch.median (lower middle); fusecheck: median |w|
  double ratio = 1;          // max / median; inf when median == 0 != max, 1 when both 0
  double mean = 0;           // braidinfer: mean w; fusecheck: mean |w|
  double rms = 0;            // sqrt(mean w^2)
  double peak_gain = 1;      // max|w| / rms(w) (1 for an all-zero tensor); fusecheck only
  bool extreme = false;      // fusecheck: one of its components is past its warn threshold
  bool assumed_ones = false; // braidinfer: tensor absent, taken as all ones (max = median = 1)
};

// Seed semantics: signed max, torch.median (the lower of the two middle values for an
// even count), ratio rules above. Throws std::invalid_argument on an empty span.
NormStats signed_stats(std::span<const double> w);
// Absolute values: max|w|, true median of |w| (mean of the two middle values), mean|w|,
// rms, peak gain.
NormStats absolute_stats(std::span<const double> w);

struct LayerResult {
  int layer = 0;
  std::vector<NormStats> norms;   // every analysed norm tensor of the layer, in model order
  bool extreme = false;           // braidinfer: max_k > 10 or max_q > 10; fusecheck: any norm extreme
  double qk_amplification = 1;    // fusecheck: rms_i(wq_i * wk_i), 1 without q/k norms
  // The per-layer static figure that the harness's cross-check holds against observed
  // error. braidinfer: the layer's factor in the seed's product, 1 + 0.001 (max_k +
  // max_q) / 2 when extreme, else 1. fusecheck: the layer's estimated amplification,
  // max(attn_norm gain, mlp_norm gain, qk amplification).
  double amplification = 1;
  const NormStats* find(NormRole role) const;
};

// One term of the score. braidinfer: "ratio" (R), "extreme_fraction" (E), "max_weight"
// (M), value = r, x, w. fusecheck: one per figure ("k_norm.ratio", "qk.amplification",
// "model.amplification", ...), value = the figure, score = its ramp.
struct Component {
  std::string name;
  int layer = -1;       // -1: not tied to a decoder layer (final norm, model-wide)
  double value = 0;
  double score = 1;
  double warn = 0;      // fusecheck: the ramp's warn / fail points (0 for braidinfer)
  double fail = 0;
};

// --deep, one layer: the largest |entry| of the MLP down projection (the super-weight
// candidate, Yu et al. 2024) and the rows that feed its neuron. down_proj[channel, neuron]
// adds (gate_j . x) silu'd times (up_j . x) to residual channel `channel`, so a huge entry
// fed by a strong neuron writes a massive activation (Sun et al. 2024) into that channel.
struct SuperWeight {
  int layer = 0;
  std::string tensor;              // the down_proj's stored name
  std::int64_t channel = 0;        // row of down_proj (residual channel written)
  std::int64_t neuron = 0;         // column of down_proj (intermediate neuron read)
  double value = 0;                // the entry
  std::int64_t numel = 0;          // entries of down_proj
  double entry_gain = 1;           // |value| / rms of down_proj's other entries
  double neuron_gain = 1;          // |gate_j| |up_j| over the median of sampled rows' |gate_i| |up_i| (1 without gate/up)
  double figure = 1;               // entry_gain * neuron_gain: the scored figure
};

// What --deep read beyond the norms, and how long it took (wall clock, page cache as found).
struct DeepRead {
  std::vector<SuperWeight> layers;
  int tensors_read = 0;            // down projections read whole
  int rows_read = 0;               // gate / up rows read (the neuron's and the sample)
  std::uint64_t bytes_read = 0;
  double seconds = 0;
};

struct ModelIdentity {
  std::string path;
  std::string format;        // "hf-safetensors" / "gguf" ("" for in-memory weights)
  std::string architecture;
  int n_layers = 0;
  std::string norm_sha256;   // SHA-256 of the raw bytes of the norm tensors read, in read order
  int norm_tensors_read = 0;
  std::uint64_t norm_bytes_read = 0;
};

struct CompatibilityResult {
  Scorer scorer = Scorer::Fusecheck;
  Status status = Status::Compatible;
  double score = 1;
  std::string reason;
  std::vector<LayerResult> layers;        // braidinfer: analysed layers only (as the seed)
  std::optional<NormStats> final_norm;    // fusecheck only
  double estimated_amplification = 1;     // braidinfer: seed's product; fusecheck: model figure
  std::vector<std::string> recommendations;
  std::vector<Component> components;
  Thresholds thresholds;
  ModelIdentity model;
  std::optional<DeepRead> deep;           // --deep only (fusecheck scorer)
  double norm_read_seconds = 0;           // reading and hashing the norm tensors
  int analysed_layers() const { return static_cast<int>(layers.size()); }
};

// Norm weights of a model as plain numbers: the scorers' whole input.
struct NamedWeights {
  std::string tensor;
  std::vector<double> values;
};
struct LayerNormWeights {
  int layer = 0;
  std::optional<NamedWeights> attn_norm, q_norm, k_norm, mlp_norm;
};
struct ModelNormWeights {
  std::vector<LayerNormWeights> layers;
  std::optional<NamedWeights> final_norm;
  std::vector<SuperWeight> super_weights;  // --deep only: scored as "mlp.super_weight"
};

// model.qk_depth from the q/k amplification A_i of each layer with q/k norms, in depth
// order, and the final norm's peak gain G when the model has one:
// exp((sum_i w_i ln max(A_i, 1) + ln max(G, 1)) / n), w_i = 0.25 + 0.75 (1 - i/n)^2 (1
// without layers). The top layer weighs 1, as in the plain geometric mean; a layer counts
// less the less depth is left after it, down to 0.25; the final norm is one more stage of
// the product (docs/static-score.md).
double qk_depth_figure(std::span<const double> qk_per_layer, std::optional<double> final_gain = std::nullopt);

// Scores plain weights (pure; no files). Throws InputError on non-finite weights or on
// q_norm / k_norm of different lengths.
CompatibilityResult score_norm_weights(const ModelNormWeights& weights, const Thresholds& thresholds,
                                       Scorer scorer);

// Gain of the most extreme entry of `down` ([hidden x intermediate]) and of the neuron it
// reads, from `gate` / `up` ([intermediate x hidden], either may be null): the neuron's
// rows and `sample_rows` rows spread evenly over the others. InputError on a non-finite
// entry or mismatched shapes. Adds what it read to `read`.
// |largest| over the rms of the other numel - 1 entries, from the sum of squares of all
// numel entries (1 when there is no other entry or they are all zero).
double super_weight_entry_gain(double largest, double sum_sq, std::int64_t numel);

SuperWeight find_super_weight(const TensorView& down, const TensorView* gate, const TensorView* up, int layer,
                              DeepRead& read, int sample_rows = 64);

// Reads only the norm tensors the scorer uses (braidinfer: q_norm and k_norm; fusecheck:
// every norm), hashes their bytes, scores them and fills in the model's identity. `deep`
// (fusecheck scorer only) also reads every layer's MLP down projection and the rows
// feeding its largest entry (find_super_weight), timed in result.deep.
CompatibilityResult check_model(const Checkpoint& checkpoint, const Thresholds& thresholds,
                                Scorer scorer = Scorer::Fusecheck, bool deep = false);

}  // namespace fusecheck::check
