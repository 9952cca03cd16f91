// CUDA-event timing helpers.
#include "kernels/common/timing.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/common/stream.h"

namespace fusecheck::cuda {

namespace {
__global__ void spin_kernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}
}  // namespace

void enqueue_delay(cudaStream_t stream, double microseconds) {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  // The clock rate is queried once per device: this runs before every timed repetition.
  static thread_local int cached_dev = -1, khz = 0;
  if (dev != cached_dev) {
    CUDA_CHECK(cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, dev));
    cached_dev = dev;
  }
  spin_kernel<<<1, 1, 0, stream>>>(static_cast<long long>(microseconds * khz / 1000.0));
  CUDA_CHECK_LAUNCH();
}

L2Flusher::L2Flusher(std::size_t l2_bytes) : scratch_(std::max<std::size_t>(2 * l2_bytes, 1 << 20)) {}

void L2Flusher::flush(cudaStream_t s) {
  CUDA_CHECK(cudaMemsetAsync(scratch_.data(), 0x3C, scratch_.bytes(), s));
}

TimingStats summarize_ms(std::vector<float>& ms) {
  if (ms.empty()) throw std::logic_error("summarize_ms: no repetitions");
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    const auto i = static_cast<std::size_t>(std::lround(q * static_cast<double>(ms.size() - 1)));
    return static_cast<double>(ms[i]);
  };
  TimingStats t;
  t.median_ms = ms.size() % 2 ? ms[ms.size() / 2]
                              : 0.5 * (static_cast<double>(ms[ms.size() / 2 - 1]) + ms[ms.size() / 2]);
  t.p10_ms = at(0.1);
  t.p90_ms = at(0.9);
  t.repetitions = static_cast<int>(ms.size());
  return t;
}

TimingStats time_on_stream(const std::function<void(cudaStream_t)>& work, cudaStream_t stream,
                           int warmup, int repetitions, L2Flusher* flusher) {
  for (int i = 0; i < warmup; ++i) work(stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  // Every repetition is queued with its own pair of events and read back after one
  // synchronization: a host round trip per repetition would cost more than most ops.
  std::vector<Event> start(static_cast<std::size_t>(repetitions)), stop(static_cast<std::size_t>(repetitions));
  for (int i = 0; i < repetitions; ++i) {
    if (flusher) flusher->flush(stream);
    enqueue_delay(stream);
    start[static_cast<std::size_t>(i)].record(stream);
    work(stream);
    stop[static_cast<std::size_t>(i)].record(stream);
  }
  std::vector<float> ms;
  ms.reserve(static_cast<std::size_t>(repetitions));
  for (int i = 0; i < repetitions; ++i)
    ms.push_back(elapsed_ms(start[static_cast<std::size_t>(i)], stop[static_cast<std::size_t>(i)]));
  return summarize_ms(ms);
}

}  // namespace fusecheck::cuda
