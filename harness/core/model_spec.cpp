#include "harness/core/model_spec.h"

namespace fusecheck {

std::string rope_style_name(RopeStyle s) {
  return s == RopeStyle::NeoxHalfSplit ? "neox-half-split" : "interleaved";
}

}  // namespace fusecheck
