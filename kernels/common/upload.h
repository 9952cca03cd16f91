// Checkpoint tensors to the device as FP32, for the paths that keep FP32 weights
// (ref32-cuda, ref64-cuda): element for element what TensorView::to_float gives. Stored
// BF16 and F16 travel as their stored bits, half the bytes of FP32, and are widened on the
// device (exact: both formats are subsets of FP32); F32 travels as stored; anything else
// (block-quantized, F64) is decoded on the host in chunks (float_chunks.h). Issue 18: the
// host conversion and the 2x bytes were most of ref32-cuda's creation time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <cuda_runtime.h>

#include "harness/core/tensor.h"
#include "kernels/common/device_buffer.h"

namespace fusecheck::cuda {

// What one upload_weights reuses across its tensors: a device buffer for stored bits and
// a host buffer for decoded chunks. Both grow, never shrink.
struct FloatUploadScratch {
  DeviceBuffer<std::uint16_t> bits;
  std::vector<float> host;
};

// Writes t's numel() values to dst (device) and synchronizes `s` before returning (the
// scratch is reused by the next call).
void upload_as_float(const TensorView& t, float* dst, cudaStream_t s, FloatUploadScratch& scratch);

}  // namespace fusecheck::cuda

namespace fusecheck::cuda {

// Copies n host bytes to device memory and synchronizes `s`: through two pinned buffers
// of the calling thread, the next chunk copied into one (on every OpenMP thread) while the
// DMA reads the other, for large copies (pageable cudaMemcpy ran at about 6 GB/s on the
// H200 machine: 0.2 s per 1.2 GB weight set); small ones, or where pinned memory cannot be
// had, by a plain cudaMemcpyAsync.
void upload_bytes(void* dst, const void* src, std::size_t n, cudaStream_t s);

}  // namespace fusecheck::cuda
