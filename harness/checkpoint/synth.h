// Synthetic checkpoints: writes a Hugging Face directory for a profile (profiles.h) with
// weights whose statistics look trained (fan-in scaled projections, norm weights around
// their median with planted outlier channels), deterministic for a seed whatever the
// thread count. Overrides reshape the norm outliers for calibration sweeps and can plant
// a super weight (a massive-activation channel). docs/synthetic-models.md explains it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "harness/checkpoint/profiles.h"
#include "harness/checkpoint/safetensors_writer.h"
#include "harness/core/dtype.h"

namespace fusecheck {

// Reshapes one family of norm weights (k_norm, q_norm, input_layernorm, final norm).
// - Only `max`: the profile's outlier pattern is rescaled about each layer's median so the
//   largest weight of the family becomes `max` (1x of the median up to anything).
// - `outlier_layers` or `outlier_channels`: a uniform pattern replaces the profile's: the
//   first `outlier_layers` layers (all when kAllLayers) get `outlier_channels` outlier
//   channels (default 1) descending from `max` (default: the profile's largest) to half
//   way to the median; the other layers keep only their bulk. `outlier_last` puts them
//   in the last `outlier_layers` layers instead (calibration's late-layer family);
//   `outlier_start` S in layers S..S+N-1 (calibration's mid-stack families).
struct NormOverride {
  static constexpr int kAllLayers = -1;
  std::optional<double> max;
  std::optional<int> outlier_layers;
  std::optional<int> outlier_channels;
  bool outlier_last = false;
  std::optional<int> outlier_start;
  bool active() const { return max || outlier_layers || outlier_channels || outlier_last || outlier_start; }
};

// Sets where `o`'s outlier layers sit from "first" (the default), "last" or a layer
// index (the first outlier layer); anything else is an InputError naming `where`.
void set_outlier_position(NormOverride& o, const std::string& text, const std::string& where);

// Attention shape other than the profile's (calibration's GQA / head-dim family): the
// norm plans keep their statistics and are drawn over the new head_dim.
struct ShapeOverride {
  std::optional<int> heads;
  std::optional<int> kv_heads;
  std::optional<int> head_dim;
};

// Most layers a synthetic checkpoint may have (fusecheck synth --layers, model.synth.layers).
inline constexpr int kMaxSynthLayers = 1000;

struct SynthOptions {
  std::uint64_t seed = 0;
  std::optional<int> layers;               // default: the profile's
  DType dtype = DType::BF16;
  std::uint64_t shard_bytes = 5'000'000'000;  // HF's default max_shard_size "5GB"; 0 = never shard
  NormOverride k_norm;
  NormOverride q_norm;
  NormOverride attn_norm;   // input_layernorm of every layer
  NormOverride final_norm;  // model.norm
  ShapeOverride shape;
  // Super weight: one large entry of layer `massive_layer`'s down_proj, at
  // [massive_channel, massive_neuron], with that neuron's gate and up rows scaled by
  // massive_gain so it fires strongly. Defaults for channel and neuron are fixed per shape.
  bool massive_activation = false;
  int massive_layer = 1;
  std::optional<int> massive_channel;
  std::optional<int> massive_neuron;
  double massive_value = 128.0;
  double massive_gain = 4.0;
  unsigned threads = 0;  // 0: all hardware threads; output does not depend on it
};

struct SynthResult {
  std::vector<WrittenFile> files;  // config.json, safetensors file(s), index, synth.json
  std::uint64_t total_bytes = 0;
  std::size_t tensor_count = 0;
  int layers = 0;
  double seconds = 0;
  std::string summary;  // what was planted where (massive channel, overrides), one line each
};

std::vector<std::string> synth_profile_names();

// Writes the checkpoint into `out_dir` (created if needed). Throws InputError for bad
// options (naming the option) or an unwritable directory.
SynthResult write_synthetic_checkpoint(const std::string& profile, const SynthOptions& options,
                                       const std::filesystem::path& out_dir);

// Writes the checkpoint into the cache folder `dir` unless a complete one is there (it has
// config.json): into "<dir>.tmp-<pid>", registered for removal on SIGINT/SIGTERM
// (harness/core/temp_files.h) and renamed into place only when complete, so that an
// interrupted run never leaves a half-written model to be trusted later. Temporary
// folders that dead processes left beside `dir` are reclaimed first. Returns whether it
// wrote the model (false: the cache had it).
bool place_synthetic_checkpoint(const std::string& profile, const SynthOptions& options,
                                const std::filesystem::path& dir);

// ---- Building blocks, exposed for tests ----

// Inverse of the standard normal CDF, accurate to about 1e-15 for p in (0, 1).
double normal_quantile(double p);

// N(0,1) from 32 random bits by inverse CDF: linear interpolation between 4096 quantiles
// in the body, the exact quantile in the two outermost bins (tails reach about 6.3).
// Only IEEE + and * at draw time, so values agree across standard libraries, unlike
// std::normal_distribution.
float standard_normal_from_bits(std::uint32_t bits);

// Seed of the generator for one chunk of one tensor: a hash of the run's seed, the tensor
// name and the chunk index, so each chunk is reproducible on its own.
std::uint64_t chunk_seed(std::uint64_t seed, const std::string& tensor, std::uint64_t chunk);

// Draws `n` norm weights following `plan` (see NormPlan), in double before rounding.
std::vector<double> draw_norm_weights(const NormPlan& plan, int n, std::mt19937_64& rng);

// The per-layer plans of one norm family after an override; `where` names the option in
// errors.
std::vector<NormPlan> apply_norm_override(std::vector<NormPlan> plans, const NormOverride& override_,
                                          int channels_per_tensor, const std::string& where);

}  // namespace fusecheck
