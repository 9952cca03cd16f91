// RoPE tables from the reference's frequency code.
#include "kernels/standard/rope_table.h"

#include "reference/ops.h"

namespace fusecheck::cuda {

RopeTableHost make_rope_table(const ModelSpec& spec, int positions, RopeAngles angles) {
  RopeTableHost out;
  auto copy = [&](const auto& t) {
    out.cos.assign(static_cast<std::size_t>(t.cos.size()), 0.0f);
    out.sin.assign(static_cast<std::size_t>(t.sin.size()), 0.0f);
    for (Eigen::Index i = 0; i < t.cos.size(); ++i) {
      out.cos[static_cast<std::size_t>(i)] = static_cast<float>(t.cos.data()[i]);
      out.sin[static_cast<std::size_t>(i)] = static_cast<float>(t.sin.data()[i]);
    }
  };
  if (angles == RopeAngles::fp64) {
    copy(ref::rope_table<float>(spec, 0, positions));
  } else {
    copy(ref::rope_table_fp32_angles(spec, 0, positions));
  }
  return out;
}

}  // namespace fusecheck::cuda
