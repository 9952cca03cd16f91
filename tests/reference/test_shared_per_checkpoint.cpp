// shared_per_checkpoint (harness/core/shared_per_checkpoint.h): the cache through which a
// path's instances share one upload of a checkpoint's weights.
#include <memory>

#include <gtest/gtest.h>

#include "harness/core/shared_per_checkpoint.h"
#include "reference/random_checkpoint.h"

namespace fusecheck {
namespace {

ModelSpec tiny() {
  ModelSpec s;
  s.architecture = "llama";
  s.n_layers = 1;
  s.hidden = 8;
  s.n_heads = 2;
  s.n_kv_heads = 1;
  s.head_dim = 4;
  s.intermediate = 12;
  s.vocab = 10;
  s.rms_eps = 1e-6;
  s.rope_theta = 1e4;
  s.rope_dim = 4;
  return s;
}

struct Weights {
  int id;
};

TEST(SharedPerCheckpoint, InstancesOnOneCheckpointAndDeviceShareOneUpload) {
  const ref::RandomCheckpoint a(tiny(), 1), b(tiny(), 2);
  int uploads = 0;
  auto make = [&] { return std::make_shared<const Weights>(Weights{++uploads}); };
  const auto first = shared_per_checkpoint<Weights>(a, 0, make);
  const auto second = shared_per_checkpoint<Weights>(a, 0, make);
  EXPECT_EQ(first, second);
  EXPECT_EQ(uploads, 1);
  // Another checkpoint or another device is another upload.
  EXPECT_NE(shared_per_checkpoint<Weights>(b, 0, make), first);
  EXPECT_NE(shared_per_checkpoint<Weights>(a, 1, make), first);
  EXPECT_EQ(uploads, 3);
}

TEST(SharedPerCheckpoint, TheEntryExpiresWithItsLastHolder) {
  const ref::RandomCheckpoint a(tiny(), 3);
  int uploads = 0;
  auto make = [&] { return std::make_shared<const Weights>(Weights{++uploads}); };
  auto held = shared_per_checkpoint<Weights>(a, 0, make);
  EXPECT_EQ(held->id, 1);
  held.reset();  // no instance holds it any more: the next one uploads again
  EXPECT_EQ(shared_per_checkpoint<Weights>(a, 0, make)->id, 2);
}

}  // namespace
}  // namespace fusecheck
