// Synthetic checkpoint generator. Every tensor is cut into fixed chunks of 65536
// elements; each chunk has its own mt19937_64 seeded from (seed, tensor name, chunk), so
// chunks can be drawn on any number of threads and the bytes never change. Norm weights
// are small and drawn whole from their NormPlan.
#include "harness/checkpoint/synth.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <numbers>
#include <numeric>
#include <stdexcept>
#include <thread>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "harness/core/error.h"
#include "harness/core/hash.h"
#include "harness/core/temp_files.h"

namespace fusecheck {

namespace {

constexpr std::int64_t kChunkElements = 65536;
static_assert(kTensorFillPieceBytes % (kChunkElements * 8) == 0,
              "writer pieces must start on chunk boundaries for every dtype");

// ---- Normal sampling ----

// Acklam's rational approximation of the normal quantile (relative error 1.15e-9).
double acklam_quantile(double p) {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                 1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                 6.680131188771972e+01,  -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                 -2.549671010243138e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                 3.754408661907416e+00};
  constexpr double p_low = 0.02425;
  if (p < p_low || p > 1 - p_low) {
    const double q = std::sqrt(-2 * std::log(p < p_low ? p : 1 - p));
    const double x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
                     ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    return p < p_low ? x : -x;
  }
  const double q = p - 0.5;
  const double r = q * q;
  return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
         (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

// 4096 equal-probability bins; body bins interpolate linearly between their quantiles.
class NormalTable {
 public:
  static constexpr int kBins = 4096;

  NormalTable() {
    quantile_[kBins / 2] = 0.0f;
    for (int i = 1; i < kBins / 2; ++i) {
      quantile_[i] = static_cast<float>(normal_quantile(static_cast<double>(i) / kBins));
      quantile_[kBins - i] = -quantile_[i];  // exact symmetry: the mean is 0 by construction
    }
    for (int i = 1; i < kBins - 1; ++i) slope_[i] = quantile_[i + 1] - quantile_[i];
  }

  float operator()(std::uint32_t bits) const {
    const std::uint32_t bin = bits >> 20;
    const std::uint32_t low = bits & 0xfffffu;
    if (bin - 1 < kBins - 2) {
      const float t = (static_cast<float>(low) + 0.5f) * 0x1p-20f;
      return quantile_[bin] + t * slope_[bin];
    }
    // Outermost bins (probability 2^-12 each): the exact quantile of a 32-bit grid point.
    if (bin == 0) return static_cast<float>(normal_quantile((static_cast<double>(low) + 0.5) * 0x1p-32));
    return -static_cast<float>(normal_quantile((static_cast<double>(0xfffffu - low) + 0.5) * 0x1p-32));
  }

 private:
  std::array<float, kBins + 1> quantile_{};
  std::array<float, kBins> slope_{};
};

const NormalTable& normal_table() {
  static const NormalTable table;
  return table;
}

// Uniform integer in [0, n) by rejection (std::uniform_int_distribution is
// implementation-defined).
std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t n) {
  const std::uint64_t limit = std::numeric_limits<std::uint64_t>::max() -
                              std::numeric_limits<std::uint64_t>::max() % n;
  std::uint64_t x = rng();
  while (x >= limit) x = rng();
  return x % n;
}

double uniform_open01(std::mt19937_64& rng) { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1p-53; }

// ---- Tensor recipes ----

struct Edit {
  std::int64_t begin = 0;  // element range [begin, end)
  std::int64_t end = 0;
  double multiply = 1.0;
  std::optional<double> assign;  // replaces the value (after multiply)
};

struct Recipe {
  TensorLayout layout;
  float std = 0.0f;            // > 0: N(0, std^2), drawn chunk by chunk
  std::vector<double> values;  // otherwise: these values (norm weights, biases)
  std::vector<Edit> edits;
};

void store(DType dtype, const float* values, std::size_t n, std::byte* out) {
  switch (dtype) {
    case DType::F32: std::memcpy(out, values, n * 4); return;
    case DType::F64:
      for (std::size_t i = 0; i < n; ++i) {
        const double d = values[i];
        std::memcpy(out + 8 * i, &d, 8);
      }
      return;
    case DType::BF16:
    case DType::F16: {
      std::array<std::uint16_t, 4096> bits;
      for (std::size_t i = 0; i < n; i += bits.size()) {
        const std::size_t m = std::min(bits.size(), n - i);
        for (std::size_t j = 0; j < m; ++j) {
          bits[j] = dtype == DType::BF16 ? float_to_bf16(values[i + j]) : float_to_fp16(values[i + j]);
        }
        std::memcpy(out + 2 * i, bits.data(), 2 * m);
      }
      return;
    }
  }
}

void apply_edits(const Recipe& r, std::int64_t first, std::span<float> values) {
  const std::int64_t last = first + static_cast<std::int64_t>(values.size());
  for (const Edit& e : r.edits) {
    for (std::int64_t i = std::max(e.begin, first); i < std::min(e.end, last); ++i) {
      double v = values[i - first] * e.multiply;
      if (e.assign) v = *e.assign;
      values[i - first] = static_cast<float>(v);
    }
  }
}

// Draws chunk `chunk` of a random tensor into `out` (its bytes).
void draw_chunk(const Recipe& r, std::uint64_t seed, std::int64_t chunk, std::span<float> scratch,
                std::byte* out) {
  const std::int64_t numel = static_cast<std::int64_t>(r.layout.nbytes() / dtype_size(r.layout.dtype));
  const std::int64_t first = chunk * kChunkElements;
  const std::size_t n = static_cast<std::size_t>(std::min(kChunkElements, numel - first));
  std::mt19937_64 rng(chunk_seed(seed, r.layout.name, static_cast<std::uint64_t>(chunk)));
  const NormalTable& normal = normal_table();
  for (std::size_t i = 0; i < n; i += 2) {
    const std::uint64_t bits = rng();
    scratch[i] = r.std * normal(static_cast<std::uint32_t>(bits));
    if (i + 1 < n) scratch[i + 1] = r.std * normal(static_cast<std::uint32_t>(bits >> 32));
  }
  apply_edits(r, first, scratch.first(n));
  store(r.layout.dtype, scratch.data(), n, out);
}

void fill_piece(const Recipe& r, std::uint64_t seed, unsigned threads, std::uint64_t byte_offset,
                std::span<std::byte> out) {
  const std::size_t es = dtype_size(r.layout.dtype);
  const std::int64_t first = static_cast<std::int64_t>(byte_offset / es);
  const std::int64_t count = static_cast<std::int64_t>(out.size() / es);
  if (r.std == 0.0f) {
    std::vector<float> values(r.values.begin() + first, r.values.begin() + first + count);
    apply_edits(r, first, values);
    store(r.layout.dtype, values.data(), values.size(), out.data());
    return;
  }
  if (first % kChunkElements != 0) throw std::logic_error("synth: writer piece not on a chunk boundary");
  const std::int64_t first_chunk = first / kChunkElements;
  const std::int64_t chunks = (count + kChunkElements - 1) / kChunkElements;
  std::atomic<std::int64_t> next{0};
  auto worker = [&] {
    std::vector<float> scratch(kChunkElements);
    for (std::int64_t c = next++; c < chunks; c = next++) {
      draw_chunk(r, seed, first_chunk + c, scratch, out.data() + c * kChunkElements * es);
    }
  };
  const unsigned n_threads = static_cast<unsigned>(std::min<std::int64_t>(threads, chunks));
  std::vector<std::jthread> pool;
  for (unsigned t = 1; t < n_threads; ++t) pool.emplace_back(worker);
  worker();
}

// ---- Building the recipe list ----

struct Planned {
  std::vector<Recipe> recipes;
  std::vector<std::string> summary;
};

std::string layer_name(int l, const char* what) { return fmt::format("model.layers.{}.{}", l, what); }

std::vector<NormPlan> per_layer(const std::vector<NormPlan>& table, int layers) {
  std::vector<NormPlan> plans;
  for (int l = 0; l < layers; ++l) plans.push_back(table[static_cast<std::size_t>(l) % table.size()]);
  return plans;
}

void check_option(bool ok, const std::string& option, const std::string& problem) {
  if (!ok) throw InputError(option, problem);
}

Planned plan_checkpoint(const SynthProfile& p, const SynthOptions& o, int layers) {
  const std::int64_t hidden = p.hidden, inter = p.intermediate, vocab = p.vocab;
  const std::int64_t qw = p.q_width(), kvw = p.kv_width();
  const DType dt = o.dtype;
  Planned plan;
  auto random = [&](std::string name, std::vector<std::int64_t> shape, double fan_in_or_std, bool is_std) {
    Recipe r{{std::move(name), dt, std::move(shape)}, 0.0f, {}, {}};
    // Projections: std 1/sqrt(fan_in) keeps activations at unit scale through the layer.
    r.std = static_cast<float>(is_std ? fan_in_or_std : 1.0 / std::sqrt(fan_in_or_std));
    plan.recipes.push_back(std::move(r));
  };
  auto fixed = [&](std::string name, std::int64_t n, const NormPlan& norm) {
    std::mt19937_64 rng(chunk_seed(o.seed, name, 0));
    Recipe r{{name, dt, {n}}, 0.0f, draw_norm_weights(norm, static_cast<int>(n), rng), {}};
    plan.recipes.push_back(std::move(r));
  };

  if (!p.qk_norm) {
    check_option(!o.k_norm.active() && !o.q_norm.active(), "--k-norm-*/--q-norm-*",
                 "profile " + p.name + " has no q_norm/k_norm weights");
  }
  const auto k_plans = p.qk_norm ? apply_norm_override(per_layer(p.k_norm, layers), o.k_norm, p.head_dim, "--k-norm-*")
                                 : std::vector<NormPlan>{};
  const auto q_plans = p.qk_norm ? apply_norm_override(per_layer(p.q_norm, layers), o.q_norm, p.head_dim, "--q-norm-*")
                                 : std::vector<NormPlan>{};
  const auto attn_plans = apply_norm_override(per_layer(p.attn_norm, layers), o.attn_norm, p.hidden, "--attn-norm-*");
  const auto mlp_plans = per_layer(p.mlp_norm, layers);
  const auto final_plan = apply_norm_override({p.final_norm}, o.final_norm, p.hidden, "--final-norm-*")[0];

  // Order of HF's state_dict (module registration order).
  random("model.embed_tokens.weight", {vocab, hidden}, p.embed_std, true);
  constexpr double kBiasStd = 0.1;  // Qwen2 q/k/v biases: small next to the projections' outputs
  for (int l = 0; l < layers; ++l) {
    random(layer_name(l, "self_attn.q_proj.weight"), {qw, hidden}, static_cast<double>(hidden), false);
    if (p.qkv_bias) random(layer_name(l, "self_attn.q_proj.bias"), {qw}, kBiasStd, true);
    random(layer_name(l, "self_attn.k_proj.weight"), {kvw, hidden}, static_cast<double>(hidden), false);
    if (p.qkv_bias) random(layer_name(l, "self_attn.k_proj.bias"), {kvw}, kBiasStd, true);
    random(layer_name(l, "self_attn.v_proj.weight"), {kvw, hidden}, static_cast<double>(hidden), false);
    if (p.qkv_bias) random(layer_name(l, "self_attn.v_proj.bias"), {kvw}, kBiasStd, true);
    random(layer_name(l, "self_attn.o_proj.weight"), {hidden, qw}, static_cast<double>(qw), false);
    if (p.qk_norm) {
      fixed(layer_name(l, "self_attn.q_norm.weight"), p.head_dim, q_plans[l]);
      fixed(layer_name(l, "self_attn.k_norm.weight"), p.head_dim, k_plans[l]);
    }
    random(layer_name(l, "mlp.gate_proj.weight"), {inter, hidden}, static_cast<double>(hidden), false);
    random(layer_name(l, "mlp.up_proj.weight"), {inter, hidden}, static_cast<double>(hidden), false);
    random(layer_name(l, "mlp.down_proj.weight"), {hidden, inter}, static_cast<double>(inter), false);
    fixed(layer_name(l, "input_layernorm.weight"), hidden, attn_plans[l]);
    fixed(layer_name(l, "post_attention_layernorm.weight"), hidden, mlp_plans[l]);
  }
  fixed("model.norm.weight", hidden, final_plan);
  if (!p.tied) random("lm_head.weight", {vocab, hidden}, static_cast<double>(hidden), false);

  if (o.massive_activation) {
    const int layer = o.massive_layer;
    // Defaults away from the edges, fixed per shape so runs can name the channel.
    const std::int64_t channel = o.massive_channel.value_or(static_cast<int>(hidden * 3 / 8 + 1));
    const std::int64_t neuron = o.massive_neuron.value_or(static_cast<int>(inter / 2 + 7));
    check_option(layer >= 0 && layer < layers, "--massive-layer", fmt::format("{} is not a layer of 0..{}", layer, layers - 1));
    check_option(channel >= 0 && channel < hidden, "--massive-channel", fmt::format("{} is not a channel of 0..{}", channel, hidden - 1));
    check_option(neuron >= 0 && neuron < inter, "--massive-neuron", fmt::format("{} is not a neuron of 0..{}", neuron, inter - 1));
    check_option(std::isfinite(o.massive_value) && std::isfinite(o.massive_gain) && o.massive_gain > 0,
                 "--massive-value/--massive-gain", "must be finite (gain positive)");
    for (Recipe& r : plan.recipes) {
      if (r.layout.name == layer_name(layer, "mlp.gate_proj.weight") ||
          r.layout.name == layer_name(layer, "mlp.up_proj.weight")) {
        r.edits.push_back({neuron * hidden, (neuron + 1) * hidden, o.massive_gain, {}});
      } else if (r.layout.name == layer_name(layer, "mlp.down_proj.weight")) {
        r.edits.push_back({channel * inter + neuron, channel * inter + neuron + 1, 1.0, o.massive_value});
      }
    }
    plan.summary.push_back(fmt::format(
        "super weight: layer {} down_proj[{}, {}] = {}, gate/up row {} x {} (massive activation in channel {})",
        layer, channel, neuron, o.massive_value, neuron, o.massive_gain, channel));
  }
  return plan;
}

nlohmann::json override_json(const NormOverride& o) {
  nlohmann::json j = nlohmann::json::object();
  if (o.max) j["max"] = *o.max;
  if (o.outlier_layers) j["outlier_layers"] = *o.outlier_layers == NormOverride::kAllLayers ? nlohmann::json("all") : nlohmann::json(*o.outlier_layers);
  if (o.outlier_channels) j["outlier_channels"] = *o.outlier_channels;
  if (o.outlier_last) j["outlier_position"] = "last";
  if (o.outlier_start) j["outlier_position"] = *o.outlier_start;
  return j;
}

// The profile with its attention shape overridden; every value checked.
SynthProfile reshaped(SynthProfile p, const ShapeOverride& shape) {
  p.heads = shape.heads.value_or(p.heads);
  p.kv_heads = shape.kv_heads.value_or(p.kv_heads);
  p.head_dim = shape.head_dim.value_or(p.head_dim);
  check_option(p.heads >= 1 && p.heads <= 1024, "--heads", fmt::format("{} is not in 1..1024", p.heads));
  check_option(p.kv_heads >= 1 && p.heads % p.kv_heads == 0, "--kv-heads",
               fmt::format("{} must be at least 1 and divide the {} query heads", p.kv_heads, p.heads));
  // 8: the smallest width whose median stays in the bulk with one outlier channel.
  check_option(p.head_dim >= 8 && p.head_dim <= 1024 && p.head_dim % 2 == 0, "--head-dim",
               fmt::format("{} must be even and in 8..1024 (RoPE rotates pairs)", p.head_dim));
  // Qwen2's config.json has no head_dim: readers derive hidden / heads.
  check_option(p.model_type != "qwen2" || p.heads * p.head_dim == p.hidden, "--head-dim",
               fmt::format("a {} checkpoint derives head_dim from hidden {} / heads {}", p.model_type, p.hidden, p.heads));
  return p;
}

// synth.json: how the checkpoint was made, so a result can name its synthetic model.
// No build identity in it, so identical options give identical files across builds.
std::string provenance_json(const SynthProfile& p, const SynthOptions& o, int layers) {
  nlohmann::json j = {{"generator", "fusecheck synth"},
                      {"profile", p.name},
                      {"seed", o.seed},
                      {"layers", layers},
                      {"dtype", std::string(dtype_name(o.dtype))},
                      {"overrides",
                       {{"k_norm", override_json(o.k_norm)},
                        {"q_norm", override_json(o.q_norm)},
                        {"attn_norm", override_json(o.attn_norm)},
                        {"final_norm", override_json(o.final_norm)}}}};
  if (o.shape.heads || o.shape.kv_heads || o.shape.head_dim) {
    j["shape"] = {{"heads", p.heads}, {"kv_heads", p.kv_heads}, {"head_dim", p.head_dim}};
  }
  if (o.massive_activation) {
    j["massive_activation"] = {{"layer", o.massive_layer},
                               {"value", o.massive_value},
                               {"gain", o.massive_gain}};
    if (o.massive_channel) j["massive_activation"]["channel"] = *o.massive_channel;
    if (o.massive_neuron) j["massive_activation"]["neuron"] = *o.massive_neuron;
  }
  return j.dump(2) + "\n";
}

}  // namespace

void set_outlier_position(NormOverride& o, const std::string& text, const std::string& where) {
  o.outlier_last = text == "last";
  o.outlier_start.reset();
  if (text == "first" || text == "last") return;
  try {
    std::size_t used = 0;
    const int start = std::stoi(text, &used);
    if (used == text.size() && start >= 0) {
      o.outlier_start = start;
      return;
    }
  } catch (const std::exception&) {
  }
  throw InputError(where, "expected 'first', 'last' or a layer index, got '" + text + "'");
}

double normal_quantile(double p) {
  if (!(p > 0.0 && p < 1.0)) throw std::logic_error("normal_quantile: p outside (0, 1)");
  const double x = acklam_quantile(p);
  // One Halley step on the exact CDF takes Acklam's 1e-9 to about 1e-15.
  const double e = 0.5 * std::erfc(-x / std::numbers::sqrt2) - p;
  const double u = e * std::sqrt(2 * std::numbers::pi) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

float standard_normal_from_bits(std::uint32_t bits) { return normal_table()(bits); }

std::uint64_t chunk_seed(std::uint64_t seed, const std::string& tensor, std::uint64_t chunk) {
  return splitmix64(splitmix64(splitmix64(seed) ^ fnv1a64(tensor)) + chunk);
}

std::vector<double> draw_norm_weights(const NormPlan& plan, int n, std::mt19937_64& rng) {
  const bool fit_mean = plan.target_mean.has_value();
  const bool fit_std = fit_mean && plan.target_std.has_value();
  const int fit = fit_mean ? plan.fit_channels : 0;
  if (fit_mean && fit < 1) throw std::logic_error("NormPlan: a target mean needs fit channels");
  const int special = static_cast<int>(plan.outliers.size()) + fit + (fit_std ? 1 : 0);
  const int lo = (n - 1) / 2, hi = n / 2;
  const int bulk_count = n - special;
  if (bulk_count <= hi) throw std::logic_error(fmt::format("NormPlan: {} planted channels leave no median in {}", special, n));

  // Bulk: one lognormal draw per equal-probability stratum (stratified sampling), so its
  // sum varies little between seeds and the fit below always has room.
  std::vector<double> z(static_cast<std::size_t>(bulk_count));
  for (int i = 0; i < bulk_count; ++i) z[i] = normal_quantile((i + uniform_open01(rng)) / bulk_count);
  const double center = (z[lo] + z[hi]) / 2;
  for (double& v : z) v -= center;
  z[lo] = z[hi] = 0.0;  // the two middle order statistics are exactly the median
  std::vector<double> bulk(z.size());
  for (std::size_t i = 0; i < z.size(); ++i) bulk[i] = plan.median * std::exp(plan.spread * z[i]);

  std::vector<double> planted = plan.outliers;
  if (fit_mean) {
    const auto sum = [](const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); };
    const auto sumsq = [](const std::vector<double>& v) { return std::inner_product(v.begin(), v.end(), v.begin(), 0.0); };
    std::vector<double> ramp(static_cast<std::size_t>(fit));  // descending to half the top
    for (int j = 0; j < fit; ++j) ramp[j] = 1.0 - 0.5 * j / std::max(fit - 1, 1);
    const double w1 = sum(ramp), w2 = sumsq(ramp);
    const double s = n * *plan.target_mean - sum(bulk) - sum(planted);
    double a = 0.0, b = s / w1;
    if (fit_std) {
      // a + b w1 = s and a^2 + b^2 w2 = q; the smaller root keeps a the larger channel.
      const double q = (n - 1) * *plan.target_std * *plan.target_std +
                       n * *plan.target_mean * *plan.target_mean - sumsq(bulk) - sumsq(planted);
      const double qa = w1 * w1 + w2, qb = -2 * s * w1, qc = s * s - q;
      const double disc = qb * qb - 4 * qa * qc;
      if (disc < 0) throw std::logic_error("NormPlan: target std unreachable");
      b = (-qb - std::sqrt(disc)) / (2 * qa);
      a = s - b * w1;
      planted.push_back(a);
    }
    if (!(b * ramp.back() >= plan.median) || (fit_std && !(a >= plan.median))) {
      throw std::logic_error("NormPlan: fitted channels fall below the median");
    }
    for (double w : ramp) planted.push_back(b * w);
  }
  for (double& v : planted) v = plan.median + (v - plan.median) * plan.excess_scale;

  // Channels: a seeded permutation; planted channels first, then the bulk.
  std::vector<int> channel(static_cast<std::size_t>(n));
  std::iota(channel.begin(), channel.end(), 0);
  for (int i = n - 1; i > 0; --i) std::swap(channel[i], channel[uniform_below(rng, static_cast<std::uint64_t>(i) + 1)]);
  std::vector<double> out(static_cast<std::size_t>(n));
  for (int k = 0; k < special; ++k) out[channel[k]] = planted[k];
  for (int i = 0; i < bulk_count; ++i) out[channel[special + i]] = bulk[i];
  return out;
}

std::vector<NormPlan> apply_norm_override(std::vector<NormPlan> plans, const NormOverride& o,
                                          int channels_per_tensor, const std::string& where) {
  if (!o.active()) return plans;
  double top = -std::numeric_limits<double>::infinity();
  std::size_t top_layer = 0;
  for (std::size_t l = 0; l < plans.size(); ++l) {
    for (double v : plans[l].outliers) {
      const double scaled = plans[l].median + (v - plans[l].median) * plans[l].excess_scale;
      if (scaled > top) top = scaled, top_layer = l;
    }
  }
  const bool has_pattern = std::isfinite(top);
  if (o.max) check_option(std::isfinite(*o.max), where, "max must be finite");

  if (o.outlier_layers || o.outlier_channels || o.outlier_last || o.outlier_start || !has_pattern) {
    const int layers = static_cast<int>(plans.size());
    const int with = o.outlier_layers.value_or(NormOverride::kAllLayers) == NormOverride::kAllLayers
                         ? layers : *o.outlier_layers;
    const int count = o.outlier_channels.value_or(1);
    check_option(with >= 0 && with <= layers, where, fmt::format("outlier layers {} not in 0..{}", with, layers));
    const int most = (channels_per_tensor - 1) / 2 - 1;  // the median must stay in the bulk
    check_option(count >= 1 && count <= most, where,
                 fmt::format("outlier channels {} not in 1..{} (the weight has {} channels)", count, most, channels_per_tensor));
    check_option(o.max || has_pattern, where, "the profile has no outlier pattern here: give a max");
    const double x = o.max.value_or(top);
    check_option(!(o.outlier_last && o.outlier_start), where, "outliers cannot both start at a layer and sit last");
    const int first = o.outlier_start ? *o.outlier_start : (o.outlier_last ? layers - with : 0);
    check_option(first >= 0 && first + with <= layers, where,
                 fmt::format("{} outlier layers from layer {} do not fit in {} layers", with, first, layers));
    for (int l = 0; l < layers; ++l) {
      NormPlan uniform{plans[l].median, plans[l].spread, {}, {}, {}, 0, 1.0};
      if (l >= first && l < first + with) {
        check_option(x >= uniform.median, where, fmt::format("max {} is below the median {} of layer {}", x, uniform.median, l));
        for (int j = 0; j < count; ++j) uniform.outliers.push_back(uniform.median + (x - uniform.median) * (1.0 - 0.5 * j / count));
      }
      plans[l] = std::move(uniform);
    }
    return plans;
  }
  // Only a max: rescale the pattern about each layer's median.
  const double m_top = plans[top_layer].median;
  check_option(*o.max >= m_top, where, fmt::format("max {} is below the median {} of the layer it rescales", *o.max, m_top));
  const double factor = (*o.max - m_top) / (top - m_top);
  for (NormPlan& plan : plans) plan.excess_scale *= factor;
  return plans;
}

std::vector<std::string> synth_profile_names() {
  std::vector<std::string> names;
  for (const SynthProfile& p : synth_profiles()) names.push_back(p.name);
  return names;
}

SynthResult write_synthetic_checkpoint(const std::string& profile_name, const SynthOptions& options,
                                       const std::filesystem::path& out_dir) {
  const auto start = std::chrono::steady_clock::now();
  const SynthProfile profile = reshaped(synth_profile(profile_name), options.shape);
  const int layers = options.layers.value_or(profile.layers);
  check_option(layers >= 1 && layers <= kMaxSynthLayers, "--layers",
               fmt::format("{} is not in 1..{}", layers, kMaxSynthLayers));
  const Planned plan = plan_checkpoint(profile, options, layers);
  const unsigned threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());

  std::vector<TensorLayout> layouts;
  for (const Recipe& r : plan.recipes) layouts.push_back(r.layout);
  SynthResult result;
  result.files = write_hf_checkpoint_streamed(
      out_dir, hf_config_json(profile, layers, options.dtype), layouts,
      [&](std::size_t index, std::uint64_t offset, std::span<std::byte> out) {
        fill_piece(plan.recipes[index], options.seed, threads, offset, out);
      },
      options.shard_bytes);
  const std::string provenance = provenance_json(profile, options, layers);
  const auto synth_json = out_dir / "synth.json";
  std::ofstream out(synth_json, std::ios::binary);
  out << provenance;
  out.close();
  if (!out) throw InputError(synth_json.string(), "cannot write file");
  result.files.push_back({synth_json, provenance.size()});

  for (const WrittenFile& f : result.files) result.total_bytes += f.bytes;
  result.tensor_count = plan.recipes.size();
  result.layers = layers;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const std::string& line : plan.summary) result.summary += line + "\n";
  return result;
}

bool place_synthetic_checkpoint(const std::string& profile, const SynthOptions& options,
                                const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir / "config.json")) return false;
  std::error_code ec;
  std::filesystem::create_directories(dir.parent_path(), ec);
  if (ec) throw InputError(dir.parent_path().string(), "cannot create the synthetic model cache: " + ec.message());
  // Another run writing the same model keeps its folder (its pid is alive).
  reclaim_stale_temps(dir.parent_path(), [](const std::string&) { return true; });
  const RegisteredTemp tmp(temp_path_for(dir));
  try {
    std::filesystem::remove_all(tmp.path());
    write_synthetic_checkpoint(profile, options, tmp.path());
    std::filesystem::rename(tmp.path(), dir, ec);
    if (ec && !std::filesystem::exists(dir / "config.json")) {
      throw InputError(dir.string(), "cannot place the synthetic model in the cache: " + ec.message());
    }
    std::filesystem::remove_all(tmp.path(), ec);  // another run placed it first
  } catch (...) {
    std::filesystem::remove_all(tmp.path(), ec);
    throw;
  }
  return true;
}

}  // namespace fusecheck
