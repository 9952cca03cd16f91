// DeviceOp helpers and time_ops, the per-op timing of every CUDA path (device_op.h).
#include "kernels/common/device_op.h"

#include <cstddef>
#include <memory>

#include "kernels/common/cuda_check.h"
#include "kernels/common/stream.h"
#include "kernels/common/timing.h"

namespace fusecheck::cuda {

void enqueue_all(const std::vector<DeviceOp>& ops, cudaStream_t stream) {
  for (const DeviceOp& op : ops) op.enqueue(stream);
}

void enqueue_all(const std::vector<const DeviceOp*>& ops, cudaStream_t stream) {
  for (const DeviceOp* op : ops) op->enqueue(stream);
}

void capture(const std::vector<const DeviceOp*>& ops, cudaStream_t stream, Graph& graph) {
  graph.begin_capture(stream);
  enqueue_all(ops, stream);
  graph.end_capture(stream);
}

OpWork total_work(const std::vector<const DeviceOp*>& ops) {
  OpWork w;
  for (const DeviceOp* op : ops) {
    w.bytes += op->bytes;
    w.flops += op->flops;
  }
  return w;
}

std::vector<OpTiming> time_ops(const std::vector<DeviceOp>& ops, const TimingOptions& opts,
                               cudaStream_t stream, EachOp each) {
  std::unique_ptr<L2Flusher> flusher;
  if (opts.cold_l2) {
    int dev = 0, l2 = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    flusher = std::make_unique<L2Flusher>(static_cast<std::size_t>(l2));
  }
  // Times `list` as one unit: captured in one graph (`graphed`) or launched op by op.
  auto time_list = [&](const std::string& name, const std::vector<const DeviceOp*>& list, bool graphed) {
    Graph graph;
    if (graphed) capture(list, stream, graph);
    const TimingStats t = time_on_stream(
        [&](cudaStream_t s) {
          if (graphed) {
            graph.launch(s);
          } else {
            enqueue_all(list, s);
          }
        },
        stream, opts.warmup, opts.repetitions, flusher.get());
    const OpWork w = total_work(list);
    return OpTiming{name, t.median_ms, t.p10_ms, t.p90_ms, t.repetitions, w.bytes, w.flops};
  };
  std::vector<OpTiming> out;
  std::vector<const DeviceOp*> all;
  for (const DeviceOp& op : ops) {
    out.push_back(time_list(op.name, {&op}, opts.graph && each == EachOp::graphed));
    all.push_back(&op);
  }
  out.push_back(time_list(opts.graph ? "layer(graph)" : "layer", all, opts.graph));
  return out;
}

}  // namespace fusecheck::cuda
