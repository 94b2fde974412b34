#pragma once
// SwiGLU gate: out = silu(gate) * up, silu(g) = g / (1 + exp(-g)).
#include "core/tensor.h"

namespace ic::ops {

struct SwigluParams {
  const float* gate;  // [n]
  const float* up;    // [n]
  float* out;         // [n]; may alias gate or up
  int64_t n;
};

// gate, up, out: F32 of one shape.
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out);

namespace cpu {
void swiglu(const SwigluParams& p);
void swiglu_reference(const SwigluParams& p);
}  // namespace cpu
namespace cuda {
void swiglu(const SwigluParams& p);
}

}  // namespace ic::ops
