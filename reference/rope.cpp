// RoPE inverse frequencies (default, linear and llama3 scaling, as HF's
// modeling_rope_utils computes them) and the FP32-angle cos/sin table HF builds.
#include <cmath>
#include <numbers>

#include "harness/core/error.h"
#include "reference/ops.h"

namespace fusecheck::ref {

namespace {
int rotated_dims(const ModelSpec& spec) { return spec.rope_dim > 0 ? spec.rope_dim : spec.head_dim; }

// Applies the scaling of HF's rope init functions to unscaled inverse frequencies; T is
// double for the references and float for HF's FP32 computation.
template <class T>
void apply_rope_scaling(const RopeScaling& sc, std::vector<T>& inv) {
  if (sc.type == "none" || sc.type == "default" || sc.type.empty()) return;
  const T factor = static_cast<T>(sc.factor);
  if (sc.type == "linear") {
    for (T& f : inv) f = f / factor;
    return;
  }
  if (sc.type == "llama3") {
    const T old_len = static_cast<T>(sc.original_max_position);
    const T low = static_cast<T>(sc.low_freq_factor), high = static_cast<T>(sc.high_freq_factor);
    const T low_freq_wavelen = old_len / low;
    const T high_freq_wavelen = old_len / high;
    for (T& f : inv) {
      const T wavelen = static_cast<T>(2 * std::numbers::pi) / f;
      // Long wavelengths are divided by factor, short ones kept, the band between blended.
      T scaled = wavelen > low_freq_wavelen ? f / factor : f;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      if (medium) {
        const T smooth = (old_len / wavelen - low) / (high - low);
        scaled = (T(1) - smooth) * scaled / factor + smooth * scaled;
      }
      f = scaled;
    }
    return;
  }
  throw InputError("", "unsupported rope scaling type '" + sc.type + "' (supported: linear, llama3)");
}
}  // namespace

std::vector<double> rope_inv_freq(const ModelSpec& spec) {
  const int d = rotated_dims(spec);
  std::vector<double> inv(static_cast<std::size_t>(d / 2));
  for (int i = 0; i < d / 2; ++i) {
    inv[i] = 1.0 / std::pow(spec.rope_theta, static_cast<double>(2 * i) / d);
  }
  apply_rope_scaling(spec.rope_scaling, inv);
  return inv;
}

std::vector<float> rope_inv_freq_fp32(const ModelSpec& spec) {
  const int d = rotated_dims(spec);
  std::vector<float> inv(static_cast<std::size_t>(d / 2));
  const float base = static_cast<float>(spec.rope_theta);
  for (int i = 0; i < d / 2; ++i) {
    inv[i] = 1.0f / std::pow(base, static_cast<float>(2 * i) / static_cast<float>(d));
  }
  apply_rope_scaling(spec.rope_scaling, inv);
  return inv;
}

RopeTable<float> rope_table_fp32_angles(const ModelSpec& spec, std::int64_t first, Index count) {
  const std::vector<float> inv = rope_inv_freq_fp32(spec);
  const Index pairs = static_cast<Index>(inv.size());
  RopeTable<float> t{Mat<float>(count, pairs), Mat<float>(count, pairs)};
  for (Index p = 0; p < count; ++p) {
    const float pos = static_cast<float>(first + p);
    for (Index i = 0; i < pairs; ++i) {
      const float angle = inv[i] * pos;
      t.cos(p, i) = std::cos(angle);
      t.sin(p, i) = std::sin(angle);
    }
  }
  return t;
}

}  // namespace fusecheck::ref
