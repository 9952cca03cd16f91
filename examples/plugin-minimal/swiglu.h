// Host side of the example's CUDA kernel (swiglu.cu); no CUDA headers, so the C++ plug-in
// code builds with the host compiler.
#pragma once

#include <cstddef>

// act[i] = bf16(silu(gate[i]) * up[i]) on the GPU; host arrays in and out; throws on a CUDA error.
void swiglu_cuda(const float* gate, const float* up, float* act, std::size_t n);
// Usable CUDA devices; 0 when there is no driver or device.
int swiglu_device_count();
