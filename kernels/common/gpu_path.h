// GpuPath: what every built-in CUDA path shares on top of Path: the device it runs on
// (selected and named once, at construction), the token-checked embedding lookup with the
// path's own rounding, and the keep_taps hint that decides which taps layer() downloads.
// ref32-cuda and standard-cuda (CudaDecoderPath) and fused-cuda (FusedPath) derive from it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "harness/core/checkpoint.h"
#include "harness/core/path.h"

namespace fusecheck::cuda {

class GpuPath : public Path {
 public:
  std::string device() const override { return device_name_; }
  // Only these taps (and resid_out) are downloaded from layer() until told otherwise.
  void keep_taps(std::optional<std::vector<Tap>> taps) override { keep_ = std::move(taps); }

 protected:
  // Makes `device_index` the current device and records its name.
  GpuPath(const Checkpoint& ckpt, int device_index);

  // Whether layer() downloads tap `t`: resid_out always, the rest unless keep_taps said not.
  bool wanted(Tap t) const;
  // Embedding rows for `tokens` ([tokens x hidden]), each stored value through `round`,
  // the path's rounding to its activation type. InputError for a token outside the vocabulary.
  TapMatrix embed_rows(std::span<const std::int32_t> tokens, double (*round)(double)) const;

  const Checkpoint& ckpt_;

 private:
  std::string device_name_;
  std::optional<std::vector<Tap>> keep_;
};

}  // namespace fusecheck::cuda
