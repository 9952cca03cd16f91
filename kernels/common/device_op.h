// DeviceOp: one device op of a layer call (a kernel, a cuBLAS call, or a few launches that
// only make sense together), as every CUDA path and benchmark lists them: its name, the
// least bytes it must move and the FLOPs it does (for GB/s, TFLOP/s and % of ceiling), and
// how to enqueue it. time_ops is the one per-op timing loop of the paths' time_layer.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "harness/core/path.h"

namespace fusecheck::cuda {

class Graph;

struct DeviceOp {
  std::string name;
  double bytes = 0;  // least bytes the op must move (each input read once, output written once)
  double flops = 0;
  std::function<void(cudaStream_t)> enqueue;
};

// Enqueues `ops` in order on `stream` (no synchronization).
void enqueue_all(const std::vector<DeviceOp>& ops, cudaStream_t stream);
void enqueue_all(const std::vector<const DeviceOp*>& ops, cudaStream_t stream);

// Captures `ops`, in order, into `graph` on `stream`.
void capture(const std::vector<const DeviceOp*>& ops, cudaStream_t stream, Graph& graph);

// Summed bytes and FLOPs of a list of ops.
struct OpWork {
  double bytes = 0, flops = 0;
};
OpWork total_work(const std::vector<const DeviceOp*>& ops);

// Whether time_ops launches each op alone as it is, or captured in a graph of its own.
enum class EachOp { launched, graphed };

// Times each op alone, then the whole list as one unit ("layer(graph)" when opts.graph:
// captured in one CUDA graph; "layer" otherwise): CUDA events, opts.warmup runs, median /
// p10 / p90 over opts.repetitions, L2 flushed before each repetition when opts.cold_l2
// (time_on_stream). Each op alone is captured in its own graph only when `each` is graphed
// and opts.graph. Synchronizes the stream.
std::vector<OpTiming> time_ops(const std::vector<DeviceOp>& ops, const TimingOptions& opts,
                               cudaStream_t stream, EachOp each);

}  // namespace fusecheck::cuda
