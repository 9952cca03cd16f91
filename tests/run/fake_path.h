// A toy decoder behind the Path interface, for driving the harness without a model: one
// RMS norm, one matrix, tanh, residual. The "low precision" variant rounds every tap to
// bf16 (its output feeds the next layer, as a bf16 residual stream would); another can
// plant NaN at one layer. Weights come from a fixed seed so all instances agree.
#pragma once

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

#include "harness/core/dtype.h"
#include "harness/core/path.h"

namespace fusecheck::test {

struct FakeModel {
  int hidden = 24;
  int vocab = 37;
  int layers = 3;
};

class FakePath : public Path {
 public:
  enum class Kind { Exact, Float32, Bf16 };
  FakePath(std::string name, FakeModel m, Kind kind, int nan_layer = -1)
      : name_(std::move(name)), m_(m), kind_(kind), nan_layer_(nan_layer) {
    std::mt19937_64 rng(42);
    std::normal_distribution<double> normal(0.0, 1.0);
    embed_ = TapMatrix(m.vocab, m.hidden);
    for (auto& v : embed_.reshaped()) v = normal(rng);
    for (int l = 0; l < m.layers; ++l) {
      TapMatrix w(m.hidden, m.hidden);
      for (auto& v : w.reshaped()) v = normal(rng) / std::sqrt(double(m.hidden));
      w_.push_back(w);
    }
    out_ = TapMatrix(m.hidden, m.vocab);
    for (auto& v : out_.reshaped()) v = normal(rng) / std::sqrt(double(m.hidden));
  }

  std::string name() const override { return name_; }
  std::string device() const override { return "cpu"; }
  std::vector<Tap> taps() const override { return {Tap::attn_norm, Tap::q, Tap::act, Tap::resid_out}; }
  void reset(int batch, int capacity) override {
    batch_ = batch;
    capacity_ = capacity;
    calls_.assign(m_.layers, 0);
  }
  TapMatrix embed(std::span<const std::int32_t> tokens) override {
    TapMatrix out(static_cast<Eigen::Index>(tokens.size()), m_.hidden);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] < 0 || tokens[i] >= m_.vocab) throw std::out_of_range("token id");
      out.row(static_cast<Eigen::Index>(i)) = embed_.row(tokens[i]);
    }
    return out;
  }
  TapSet layer(int layer, const TapMatrix& input) override {
    ++calls_.at(layer);
    TapSet t;
    t[Tap::attn_norm] = round(rms_norm(input), layer, Tap::attn_norm);
    t[Tap::q] = round(t[Tap::attn_norm] * w_[layer], layer, Tap::q);
    t[Tap::act] = round(t[Tap::q].array().tanh().matrix(), layer, Tap::act);
    if (layer == nan_layer_) t[Tap::act](0, 0) = std::numeric_limits<double>::quiet_NaN();
    t[Tap::resid_out] = round(input + 0.5 * t[Tap::act], layer, Tap::resid_out);
    return t;
  }
  TapSet head(const TapMatrix& hidden) override {
    TapSet t;
    t[Tap::final_norm] = round(rms_norm(hidden), -1, Tap::final_norm);
    t[Tap::logits] = round(t[Tap::final_norm] * out_, -1, Tap::logits);
    return t;
  }
  void set_perturbation(std::optional<Perturbation> p) override {
    if (p && name_.rfind("ref", 0) != 0) throw std::logic_error(name_ + " does not support perturbation");
    perturbation_ = p;
  }
  int layer_calls(int layer) const { return calls_.at(layer); }

 private:
  static TapMatrix rms_norm(const TapMatrix& x) {
    TapMatrix y = x;
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      y.row(r) /= std::sqrt(x.row(r).squaredNorm() / double(x.cols()) + 1e-6);
    }
    return y;
  }
  TapMatrix round(TapMatrix x, int layer, Tap tap) {
    if (perturbation_ && perturbation_->layer == layer && perturbation_->tap == tap) {
      std::mt19937_64 rng(perturbation_->seed);
      std::normal_distribution<double> normal(0.0, 1.0);
      const double rms = std::sqrt(x.squaredNorm() / double(x.size()));
      for (auto& v : x.reshaped()) v += perturbation_->relative_size * rms * normal(rng);
    }
    if (kind_ == Kind::Exact) return x;
    for (auto& v : x.reshaped()) {
      v = kind_ == Kind::Bf16 ? round_to_bf16(static_cast<float>(v)) : static_cast<float>(v);
    }
    return x;
  }

  std::string name_;
  FakeModel m_;
  Kind kind_;
  int nan_layer_;
  int batch_ = 0, capacity_ = 0;
  std::vector<int> calls_;
  TapMatrix embed_, out_;
  std::vector<TapMatrix> w_;
  std::optional<Perturbation> perturbation_;
};

}  // namespace fusecheck::test
