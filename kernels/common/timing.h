// CUDA-event timing shared by the paths' per-op timing and the benchmarks: warm-up,
// median/p10/p90 of repetitions, optional L2 flush before each repetition (cold numbers).
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include <cuda_runtime.h>

#include "kernels/common/device_buffer.h"

namespace fusecheck::cuda {

struct TimingStats {
  double median_ms = 0, p10_ms = 0, p90_ms = 0;
  int repetitions = 0;
  // The gate that holds the repetitions until all are queued opened on its timeout (the
  // launch queue was full): the first repetitions may have waited on the host's launches.
  bool gate_timed_out = false;
};

// Evicts L2 by writing a buffer twice the L2 size (the write is outside the timed region).
class L2Flusher {
 public:
  explicit L2Flusher(std::size_t l2_bytes);
  void flush(cudaStream_t s);

 private:
  DeviceBuffer<unsigned char> scratch_;
};

// Enqueues a kernel that spins for `microseconds`, so that the host can queue the events
// and the timed work behind it: the start event then fires right before the work instead
// of measuring the host's launch latency.
void enqueue_delay(cudaStream_t stream, double microseconds = 20.0);

// Runs `work(stream)` `warmup` times, then `repetitions` times each between two events;
// flushes L2 before each timed run when `flusher` is given. The repetitions are all queued
// behind a host gate before the GPU may start them, so they run back to back and the
// host's launch latency is not timed. Synchronizes the stream.
TimingStats time_on_stream(const std::function<void(cudaStream_t)>& work, cudaStream_t stream,
                           int warmup, int repetitions, L2Flusher* flusher = nullptr);

// Median, p10 and p90 of a list of times (ms); the list is reordered.
TimingStats summarize_ms(std::vector<float>& ms);

}  // namespace fusecheck::cuda
