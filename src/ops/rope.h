#pragma once
// Rotary position embedding on the leading rot_dim dims of each head, in place.
#include <string_view>

#include "core/tensor.h"

namespace ic::ops {

// Which dims form a rotating pair. kAdjacent: (2i, 2i+1), as GGUF llama weights are written
// (ggml rope mode 0; the converter permutes HF's Q/K rows for it) and GLM-5's interleaved
// indexer RoPE. kHalf: (i, i + rot_dim/2), the NeoX / HF layout (DeepSeek-V3.2's indexer).
enum class RopeStyle { kAdjacent, kHalf };
RopeStyle rope_style_from_string(std::string_view s);  // "adjacent"|"interleaved"|"half"|"neox"
std::string_view rope_style_name(RopeStyle s);

struct RopeParams {
  float* x;             // [n_tok, n_heads, head_dim] (rows of row_stride floats), rotated in place
  const int32_t* pos;   // [n_tok] absolute positions
  int64_t n_tok;
  int64_t n_heads;
  int64_t head_dim;
  int64_t row_stride;   // floats between consecutive tokens (>= n_heads * head_dim)
  int64_t rot_dim;      // leading dims rotated (even, <= head_dim)
  float theta_base;     // angle of pair i at position p: p * theta_base^(-2i / rot_dim)
  RopeStyle style;
};

// x: F32 [n_tok, n_heads, head_dim]; pos: I32 [n_tok] on the same device.
void rope(Tensor& x, const Tensor& pos, int64_t rot_dim, float theta_base, RopeStyle style);

namespace cpu {
void rope(const RopeParams& p);
void rope_reference(const RopeParams& p);
}  // namespace cpu
namespace cuda {
void rope(const RopeParams& p);
}

}  // namespace ic::ops
