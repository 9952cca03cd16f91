// GpuPath (gpu_path.h): device selection, embedding lookup and the keep_taps hint of the
// built-in CUDA paths.
#include "kernels/common/gpu_path.h"

#include <algorithm>

#include <cuda_runtime.h>
#include <fmt/format.h>

#include "harness/core/error.h"
#include "kernels/common/cuda_check.h"

namespace fusecheck::cuda {

GpuPath::GpuPath(const Checkpoint& ckpt, int device_index) : ckpt_(ckpt) {
  CUDA_CHECK(cudaSetDevice(device_index));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device_index));
  device_name_ = prop.name;
}

bool GpuPath::wanted(Tap t) const {
  return t == Tap::resid_out || !keep_ || std::find(keep_->begin(), keep_->end(), t) != keep_->end();
}

TapMatrix GpuPath::embed_rows(std::span<const std::int32_t> tokens, double (*round)(double)) const {
  const ModelSpec& s = ckpt_.spec();
  const TensorView* table = ckpt_.model().embed;
  TapMatrix out(static_cast<Eigen::Index>(tokens.size()), s.hidden);
  for (std::size_t r = 0; r < tokens.size(); ++r) {
    const std::int32_t id = tokens[r];
    if (id < 0 || id >= s.vocab) {
      throw InputError("", fmt::format("token id {} is outside the vocabulary (0..{})", id, s.vocab - 1));
    }
    for (int c = 0; c < s.hidden; ++c) {
      out(static_cast<Eigen::Index>(r), c) = round(table->at(static_cast<std::int64_t>(id) * s.hidden + c));
    }
  }
  return out;
}

}  // namespace fusecheck::cuda
