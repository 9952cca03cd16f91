// Host-computed RoPE cos/sin tables for the CUDA paths, [positions x head_dim / 2],
// row-major. Built with the reference's own frequency code (reference/rope.cpp) so that
// scaling (linear, llama3) is defined in one place.
#pragma once

#include <vector>

#include "harness/core/model_spec.h"

namespace fusecheck::cuda {

enum class RopeAngles {
  fp64,  // angles and cos/sin in FP64, rounded once (ref32-cuda, like ref64/ref32-cpu)
  fp32,  // inv_freq, angle and cos/sin in FP32 as HF computes them (hf-bf16)
};

struct RopeTableHost {
  std::vector<float> cos, sin;
};

RopeTableHost make_rope_table(const ModelSpec& spec, int positions, RopeAngles angles);

}  // namespace fusecheck::cuda
