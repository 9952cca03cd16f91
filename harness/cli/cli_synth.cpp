// `fusecheck synth PROFILE OUT_DIR`: writes a synthetic Hugging Face checkpoint
// (harness/checkpoint/synth.h) and says what it wrote; `--list` shows the profiles.
#include <memory>
#include <optional>
#include <string>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include "harness/checkpoint/synth.h"
#include "harness/cli/command.h"
#include "harness/core/error.h"

namespace fusecheck::cli {

namespace {

struct SynthArgs {
  bool list = false;
  std::string profile;
  std::string out_dir;
  std::optional<int> layers;
  std::uint64_t seed = 0;
  std::string dtype = "bf16";
  std::uint64_t shard_bytes = SynthOptions{}.shard_bytes;
  unsigned threads = 0;
  // Per norm family: max, outlier layers ("all" or N), outlier channels.
  std::optional<double> k_max, q_max, attn_max, final_max;
  std::optional<std::string> k_layers, q_layers;
  std::optional<int> k_channels, q_channels;
  std::optional<std::string> k_position, q_position;
  bool massive = false;
  SynthOptions massive_defaults;
};

DType parse_dtype(const std::string& s) {
  if (s == "bf16" || s == "BF16") return DType::BF16;
  if (s == "f16" || s == "fp16" || s == "F16") return DType::F16;
  if (s == "f32" || s == "fp32" || s == "F32") return DType::F32;
  throw InputError("--dtype", "'" + s + "' is not one of bf16, f16, f32");
}

std::optional<int> parse_layers(const std::optional<std::string>& s, const std::string& option) {
  if (!s) return std::nullopt;
  if (*s == "all") return NormOverride::kAllLayers;
  try {
    std::size_t used = 0;
    const int n = std::stoi(*s, &used);
    if (used == s->size() && n >= 0) return n;
  } catch (const std::exception&) {
  }
  throw InputError(option, "'" + *s + "' is neither 'all' nor a layer count");
}

void list_profiles() {
  fmt::print("{:<16} {:>6} {:>6} {:>7} {:>8} {:>6} {:>7}  {}\n", "profile", "layers", "hidden", "heads",
             "head_dim", "inter", "vocab", "description");
  for (const SynthProfile& p : synth_profiles()) {
    fmt::print("{:<16} {:>6} {:>6} {:>7} {:>8} {:>6} {:>7}  {}\n", p.name, p.layers, p.hidden,
               fmt::format("{}/{}", p.heads, p.kv_heads), p.head_dim, p.intermediate, p.vocab, p.description);
  }
}

int run_synth(const SynthArgs& a) {
  if (a.list) {
    list_profiles();
    return 0;
  }
  if (a.profile.empty() || a.out_dir.empty()) {
    throw InputError("", "give PROFILE and OUT_DIR (or --list); profiles: " + fmt::format("{}", fmt::join(synth_profile_names(), ", ")));
  }
  SynthOptions o = a.massive_defaults;
  o.seed = a.seed;
  o.layers = a.layers;
  o.dtype = parse_dtype(a.dtype);
  o.shard_bytes = a.shard_bytes;
  o.threads = a.threads;
  o.k_norm = {a.k_max, parse_layers(a.k_layers, "--k-norm-outlier-layers"), a.k_channels, false, std::nullopt};
  o.q_norm = {a.q_max, parse_layers(a.q_layers, "--q-norm-outlier-layers"), a.q_channels, false, std::nullopt};
  if (a.k_position) set_outlier_position(o.k_norm, *a.k_position, "--k-norm-outlier-position");
  if (a.q_position) set_outlier_position(o.q_norm, *a.q_position, "--q-norm-outlier-position");
  o.attn_norm.max = a.attn_max;
  o.final_norm.max = a.final_max;
  o.massive_activation = a.massive;

  const SynthResult r = write_synthetic_checkpoint(a.profile, o, a.out_dir);
  fmt::print("{} ({} layers, {}, seed {}) -> {}\n", a.profile, r.layers, dtype_name(o.dtype), o.seed, a.out_dir);
  for (const WrittenFile& f : r.files) fmt::print("  {:<36} {:>14} bytes\n", f.path.filename().string(), f.bytes);
  if (!r.summary.empty()) fmt::print("{}", r.summary);
  fmt::print("wrote {} files, {} tensors, {} bytes in {:.2f} s ({:.0f} MB/s)\n", r.files.size(), r.tensor_count,
             r.total_bytes, r.seconds, r.seconds > 0 ? r.total_bytes / r.seconds / 1e6 : 0.0);
  return 0;
}

const CommandRegistrar registrar{CommandSpec{
    "synth", "Write a synthetic Hugging Face checkpoint (published shapes, trained-like statistics)",
    [](CLI::App& sub) -> std::function<int()> {
      auto a = std::make_shared<SynthArgs>();
      sub.add_option("profile", a->profile, "Profile (see --list)");
      sub.add_option("out_dir", a->out_dir, "Output directory (created; stale model files in it are replaced)");
      sub.add_flag("--list", a->list, "List the profiles and exit");
      sub.add_option("--layers", a->layers, "Number of layers (default: the profile's)");
      sub.add_option("--seed", a->seed, "Seed of every random draw (default 0)");
      sub.add_option("--dtype", a->dtype, "Storage dtype: bf16 (default), f16 or f32");
      sub.add_option("--shard-size", a->shard_bytes, "Shard past this many bytes (5GB default, 0 = never; K/M/G = 1000s)")
          ->transform(CLI::AsSizeValue(true));
      sub.add_option("--threads", a->threads, "Generator threads (default: all); output does not depend on it");
      sub.add_option("--k-norm-max", a->k_max, "Largest k_norm weight (rescales the profile's outliers)");
      sub.add_option("--k-norm-outlier-layers", a->k_layers, "k_norm outliers in the first N layers, or 'all'");
      sub.add_option("--k-norm-outlier-channels", a->k_channels, "k_norm outlier channels per outlier layer");
      sub.add_option("--k-norm-outlier-position", a->k_position,
                     "Where the k_norm outlier layers sit: first (default), last, or from layer S");
      sub.add_option("--q-norm-max", a->q_max, "Largest q_norm weight (rescales the profile's outliers)");
      sub.add_option("--q-norm-outlier-layers", a->q_layers, "q_norm outliers in the first N layers, or 'all'");
      sub.add_option("--q-norm-outlier-channels", a->q_channels, "q_norm outlier channels per outlier layer");
      sub.add_option("--q-norm-outlier-position", a->q_position,
                     "Where the q_norm outlier layers sit: first (default), last, or from layer S");
      sub.add_option("--attn-norm-max", a->attn_max, "Largest input_layernorm weight");
      sub.add_option("--final-norm-max", a->final_max, "Largest final norm (model.norm) weight");
      sub.add_flag("--massive-activation", a->massive, "Plant a super weight that makes a massive activation");
      sub.add_option("--massive-layer", a->massive_defaults.massive_layer, "Layer of the super weight (default 1)");
      sub.add_option("--massive-channel", a->massive_defaults.massive_channel, "Hidden channel it drives");
      sub.add_option("--massive-neuron", a->massive_defaults.massive_neuron, "MLP neuron it reads");
      sub.add_option("--massive-value", a->massive_defaults.massive_value, "Value of the super weight (default 128)");
      sub.add_option("--massive-gain", a->massive_defaults.massive_gain, "Gain on the neuron's gate/up rows (default 4)");
      return [a] { return run_synth(*a); };
    }}};

}  // namespace

}  // namespace fusecheck::cli
