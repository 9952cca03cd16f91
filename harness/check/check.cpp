// check_model: reads only the norm tensors a scorer needs from a memory-mapped checkpoint
// (projection weights are never touched), hashes their bytes for the result's identity,
// validates them, and hands plain numbers to the scorer.
#include "harness/check/check.h"

#include <cmath>
#include <memory>
#include <stdexcept>

#include <fmt/core.h>
#include <openssl/evp.h>

#include "harness/check/scorers.h"
#include "harness/core/checkpoint.h"
#include "harness/core/error.h"

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

}  // namespace

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

CompatibilityResult check_model(const Checkpoint& checkpoint, const Thresholds& thresholds, Scorer scorer) {
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

  CompatibilityResult res = score_norm_weights(weights, thresholds, scorer);
  res.model = identity;
  return res;
}

}  // namespace fusecheck::check
