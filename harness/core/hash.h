// The project's two non-cryptographic hashes, in one place on the host:
//  - splitmix64: the finalizer of Vigna's SplitMix64 generator; a seed and an index (or a
//    tensor name's hash and a chunk) become independent-looking 64-bit words. The synthetic
//    checkpoint writer (harness/checkpoint/synth.cpp) uses it, so it must never change:
//    every synthetic weight depends on its bits. The seeded device fills
//    (kernels/common/random_fill.cu) keep their own __device__ copy with the same
//    constants: moving them onto this header waits for a GPU run of scripts/gpu-test.
//  - fnv1a64: FNV-1a over bytes, for stable names (the synth cache folder, per-tensor
//    streams of the synth writer). The cache folder's copy had its offset basis mistyped
//    one digit short until 2026-12-03; that key also holds the build's sha, so only the
//    folder name of a cache made by an older build changed.
#pragma once

#include <cstdint>
#include <string_view>

namespace fusecheck {

constexpr std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

constexpr std::uint64_t fnv1a64(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

// Known answers (the reference values of both algorithms), checked at compile time.
static_assert(splitmix64(0) == 0xe220a8397b1dcdafull);
static_assert(fnv1a64("") == 0xcbf29ce484222325ull);
static_assert(fnv1a64("a") == 0xaf63dc4c8601ec8cull);

}  // namespace fusecheck
