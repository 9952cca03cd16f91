// check_model: reads only the norm tensors a scorer needs from a memory-mapped checkpoint
// (projection weights are never touched), hashes their bytes for the result's identity,
// validates them, and hands plain numbers to the scorer.
#include "harness/check/check.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <fmt/core.h>
#include <openssl/evp.h>

#include "harness/check/scorers.h"
#include "harness/core/checkpoint.h"
#include "harness/core/dtype.h"
#include "harness/core/error.h"
#include "harness/core/tensor.h"

namespace fusecheck::check {

std::string_view scorer_name(Scorer s) { return s == Scorer::Braidinfer ? "braidinfer" : "fusecheck"; }

std::optional<Scorer> scorer_from_name(std::string_view name) {
  if (name == "braidinfer") return Scorer::Braidinfer;
  if (name == "fusecheck") return Scorer::Fusecheck;
  return std::nullopt;
}

std::string_view status_name(Status s) {
  switch (s) {
    case Status::Compatible: return "COMPATIBLE";
    case Status::Warning: return "WARNING";
    case Status::Incompatible: return "INCOMPATIBLE";
  }
  return "?";
}

int status_exit_code(Status s) {
  switch (s) {
    case Status::Compatible: return 0;
    case Status::Warning: return 1;
    case Status::Incompatible: return 2;
  }
  return 2;
}

Status status_from_score(double score, const StatusCutoffs& cutoffs) {
  if (score < cutoffs.incompatible_below) return Status::Incompatible;
  if (score < cutoffs.warning_below) return Status::Warning;
  return Status::Compatible;
}

std::string_view norm_role_name(NormRole r) {
  switch (r) {
    case NormRole::AttnNorm: return "attn_norm";
    case NormRole::QNorm: return "q_norm";
    case NormRole::KNorm: return "k_norm";
    case NormRole::MlpNorm: return "mlp_norm";
    case NormRole::FinalNorm: return "final_norm";
  }
  return "?";
}

const NormStats* LayerResult::find(NormRole role) const {
  for (const auto& n : norms) {
    if (n.role == role) return &n;
  }
  return nullptr;
}

namespace {

void require_finite_nonempty(const std::vector<double>& values, const std::string& where) {
  if (values.empty()) throw InputError(where, "norm weight tensor is empty");
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw InputError(where, fmt::format("norm weight has a non-finite value ({}) at index {}", values[i], i));
    }
  }
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) {
      throw std::runtime_error("OpenSSL: cannot initialise SHA-256");
    }
  }
  void update(std::span<const std::byte> bytes) {
    if (EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) != 1) {
      throw std::runtime_error("OpenSSL: SHA-256 update failed");
    }
  }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), md, &len) != 1) throw std::runtime_error("OpenSSL: SHA-256 final failed");
    std::string s;
    for (unsigned int i = 0; i < len; ++i) s += fmt::format("{:02x}", md[i]);
    return s;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

struct NormReader {
  Sha256 sha;
  ModelIdentity& identity;

  std::optional<NamedWeights> read(const TensorView* view) {
    if (!view) return std::nullopt;
    sha.update(view->bytes);
    ++identity.norm_tensors_read;
    identity.norm_bytes_read += view->bytes.size();
    NamedWeights w{view->name, view->to_double()};
    require_finite_nonempty(w.values, view->file + ": " + view->name);
    return w;
  }
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Rows [first, first + count) of a row-major 2-D tensor, as a view of the same bytes.
TensorView row_view(const TensorView& t, std::int64_t first, std::int64_t count) {
  const std::size_t row_bytes = static_cast<std::size_t>(t.cols()) * dtype_size(t.dtype);
  TensorView v = t;
  v.shape = {count, t.cols()};
  v.bytes = t.bytes.subspan(static_cast<std::size_t>(first) * row_bytes, static_cast<std::size_t>(count) * row_bytes);
  return v;
}

void require_finite_row(std::span<const float> row, const TensorView& t, std::int64_t first_row) {
  for (std::size_t i = 0; i < row.size(); ++i) {
    if (!std::isfinite(row[i])) {
      throw InputError(t.file + ": " + t.name,
                       fmt::format("non-finite value ({}) at element {}", row[i], first_row * t.cols() + static_cast<std::int64_t>(i)));
    }
  }
}

// TensorView::to_float, with bf16 (the usual dtype of projections) widened inline: a bf16
// is the top half of a float, and a call per element made --deep CPU-bound at ~4 s per GB.
void widen(const TensorView& t, std::span<float> out) {
  if (t.dtype != DType::BF16) {
    t.to_float(out);
    return;
  }
  const std::byte* p = t.bytes.data();
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::uint16_t half;
    std::memcpy(&half, p + 2 * i, 2);
    const std::uint32_t bits = static_cast<std::uint32_t>(half) << 16;
    std::memcpy(&out[i], &bits, 4);
  }
}

// |row j of gate| * |row j of up| (a factor is 1 when its tensor is absent).
double neuron_row_gain(const TensorView* gate, const TensorView* up, std::int64_t j, DeepRead& read,
                       std::vector<float>& buf) {
  double gain = 1;
  for (const TensorView* t : {gate, up}) {
    if (!t) continue;
    const TensorView row = row_view(*t, j, 1);
    buf.resize(static_cast<std::size_t>(t->cols()));
    widen(row, buf);
    require_finite_row(buf, *t, j);
    double sum_sq = 0;
    for (float x : buf) sum_sq += static_cast<double>(x) * x;
    gain *= std::sqrt(sum_sq);
    ++read.rows_read;
    read.bytes_read += row.bytes.size();
  }
  return gain;
}

}  // namespace

SuperWeight find_super_weight(const TensorView& down, const TensorView* gate, const TensorView* up, int layer,
                              DeepRead& read, int sample_rows) {
  const std::string where = down.file + ": " + down.name;
  if (down.shape.size() != 2 || down.rows() < 1 || down.cols() < 1) {
    throw InputError(where, "mlp down projection must be a non-empty 2-D tensor");
  }
  const std::int64_t hidden = down.rows(), inter = down.cols();
  for (const TensorView* t : {gate, up}) {
    if (t && (t->shape.size() != 2 || t->rows() != inter)) {
      throw InputError(t->file + ": " + t->name, fmt::format("has {} rows but the down projection {} has {} columns",
                                                             t->rows(), down.name, inter));
    }
  }
  SuperWeight w;
  w.layer = layer;
  w.tensor = down.name;
  // Row blocks of about a million entries: bounded memory on an 8B-shaped down_proj.
  const std::int64_t block = std::max<std::int64_t>(1, (1 << 20) / inter);
  std::vector<float> buf;
  double sum_sq = 0, largest = -1;
  for (std::int64_t r0 = 0; r0 < hidden; r0 += block) {
    const std::int64_t n = std::min(block, hidden - r0);
    const TensorView rows = row_view(down, r0, n);
    buf.resize(static_cast<std::size_t>(n * inter));
    widen(rows, buf);
    require_finite_row(buf, down, r0);
    for (std::size_t i = 0; i < buf.size(); ++i) {
      const double a = std::abs(static_cast<double>(buf[i]));
      sum_sq += a * a;
      if (a > largest) {
        largest = a;
        w.channel = r0 + static_cast<std::int64_t>(i) / inter;
        w.neuron = static_cast<std::int64_t>(i) % inter;
        w.value = buf[i];
      }
    }
  }
  ++read.tensors_read;
  read.bytes_read += down.bytes.size();
  // The scale is the rms of the *other* entries: with the entry itself in it, the gain
  // of one huge entry saturates at sqrt(numel) (1774 for a 1024 x 3072 down_proj, where
  // the GPU sweep's planted 128, 512 and 2048 all read 1720-1773), so the figure could
  // not tell a super weight of 128 from one of 2048.
  w.numel = hidden * inter;
  w.entry_gain = super_weight_entry_gain(largest, sum_sq, w.numel);
  if (gate || up) {
    // The neuron's rows against a typical neuron's: the median over rows spread evenly
    // through the tensor (the neuron's own excluded), so the figure needs no full read.
    std::vector<double> sample;
    const std::int64_t count = std::min<std::int64_t>(sample_rows, inter - 1);
    for (std::int64_t k = 0; k < count; ++k) {
      std::int64_t j = (2 * k + 1) * inter / (2 * count);
      if (j == w.neuron) j = (j + 1) % inter;
      sample.push_back(neuron_row_gain(gate, up, j, read, buf));
    }
    const double own = neuron_row_gain(gate, up, w.neuron, read, buf);
    if (!sample.empty()) {
      std::nth_element(sample.begin(), sample.begin() + static_cast<std::ptrdiff_t>(sample.size() / 2), sample.end());
      const double typical = sample[sample.size() / 2];
      w.neuron_gain = typical > 0 ? own / typical : 1.0;
    }
  }
  w.figure = w.entry_gain * w.neuron_gain;
  return w;
}

CompatibilityResult score_norm_weights(const ModelNormWeights& weights, const Thresholds& thresholds,
                                       Scorer scorer) {
  for (const auto& l : weights.layers) {
    for (const auto* w : {&l.attn_norm, &l.q_norm, &l.k_norm, &l.mlp_norm}) {
      if (*w) require_finite_nonempty((*w)->values, (*w)->tensor);
    }
  }
  if (weights.final_norm) require_finite_nonempty(weights.final_norm->values, weights.final_norm->tensor);
  return scorer == Scorer::Braidinfer ? detail::score_braidinfer(weights, thresholds)
                                      : detail::score_fusecheck(weights, thresholds);
}

CompatibilityResult check_model(const Checkpoint& checkpoint, const Thresholds& thresholds, Scorer scorer, bool deep) {
  if (deep && scorer != Scorer::Fusecheck) {
    throw InputError("--deep", "the braidinfer scorer reads q_norm and k_norm only, as the seed did");
  }
  const auto start = std::chrono::steady_clock::now();
  ModelIdentity identity;
  identity.path = checkpoint.path().string();
  identity.format = checkpoint.format();
  identity.architecture = checkpoint.spec().architecture;
  identity.n_layers = checkpoint.spec().n_layers;

  // Read order (hashed in this order): per layer attn_norm, q_norm, k_norm, mlp_norm, then
  // the final norm. The braidinfer scorer reads q_norm and k_norm only, as the seed did.
  const bool all_norms = scorer == Scorer::Fusecheck;
  NormReader reader{Sha256{}, identity};
  ModelNormWeights weights;
  const auto& model = checkpoint.model();
  for (std::size_t i = 0; i < model.layers.size(); ++i) {
    const LayerTensors& lt = model.layers[i];
    LayerNormWeights lw;
    lw.layer = static_cast<int>(i);
    if (all_norms) lw.attn_norm = reader.read(lt.attn_norm);
    lw.q_norm = reader.read(lt.q_norm);
    lw.k_norm = reader.read(lt.k_norm);
    if (all_norms) lw.mlp_norm = reader.read(lt.mlp_norm);
    weights.layers.push_back(std::move(lw));
  }
  if (all_norms) weights.final_norm = reader.read(model.final_norm);
  identity.norm_sha256 = reader.sha.hex();
  const double norm_seconds = seconds_since(start);

  std::optional<DeepRead> deep_read;
  if (deep) {
    const auto deep_start = std::chrono::steady_clock::now();
    deep_read.emplace();
    for (std::size_t i = 0; i < model.layers.size(); ++i) {
      const LayerTensors& lt = model.layers[i];
      if (!lt.w_down) continue;
      deep_read->layers.push_back(find_super_weight(*lt.w_down, lt.w_gate, lt.w_up, static_cast<int>(i), *deep_read));
    }
    weights.super_weights = deep_read->layers;
    deep_read->seconds = seconds_since(deep_start);
  }

  CompatibilityResult res = score_norm_weights(weights, thresholds, scorer);
  res.model = identity;
  res.deep = std::move(deep_read);
  res.norm_read_seconds = norm_seconds;
  return res;
}

}  // namespace fusecheck::check
