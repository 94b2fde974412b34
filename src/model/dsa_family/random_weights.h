#pragma once
// DSA-family models without a checkpoint (--random-weights): every tensor of the HF layout
// filled from a seed, so that speed is measured on the real shapes (speed does not depend on
// weight values; figures made this way are random-weight timings). A value is a pure function
// of (seed, tensor name, element index), so the host (the CPU reference path's f32 weights) and
// the GPU (bf16, filled in place: a 30B model never passes through host memory) hold the same
// numbers, rounded once to bf16 on the GPU; tests check that bitwise.
//   projection [out, in]: uniform(-a, a), a = sqrt(3 / in) (unit variance out of unit inputs)
//   router [E, D]: the same; e_score_correction_bias 0
//   embedding and lm_head [vocab, D]: uniform(-1, 1) and a = sqrt(3 / D)
//   norm weights 1; LayerNorm and projection biases 0
// With every block's input RMS-normalised, the residual stream grows like the square root of
// the depth: finite over 61+ layers (tests run the full depth of each preset's layer kinds).
#include <cstdint>
#include <string_view>

#include "core/tensor.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/weights.h"

#if defined(__CUDACC__)
#define IC_HOST_DEVICE __host__ __device__
#else
#define IC_HOST_DEVICE
#endif

namespace ic::dsa {

// splitmix64's finaliser.
IC_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Element i of the tensor keyed `key`: a multiple of 2^-23 in [-1, 1), exact in f32.
IC_HOST_DEVICE inline float random_unit(uint64_t key, uint64_t i) {
  const uint64_t r = mix64(key ^ mix64(i));
  return static_cast<float>(static_cast<int32_t>(r >> 40) - 8388608) * (1.0f / 8388608.0f);
}

// The key of tensor `name` (FNV-1a of the HF name, mixed with the seed).
uint64_t random_key(uint64_t seed, std::string_view name);
// The uniform bound of a projection with `fan_in` inputs: sqrt(3 / fan_in) as f32.
float random_bound(int64_t fan_in);

// Layer l of a random model in the CPU reference path's form (F32 host tensors, HF layout),
// its indexer included where the architecture has one.
LayerWeights random_layer_weights(const MlaMoeConfig& c, uint64_t seed, int64_t l);
// The whole-model tensors: embedding [vocab, D], final norm [D], lm_head [vocab, D] (F32 host).
Tensor random_embedding(const MlaMoeConfig& c, uint64_t seed);
Tensor random_lm_head(const MlaMoeConfig& c, uint64_t seed);

// Fills t (BF16 or F32, on its device) with element i = round(float(double(
// random_unit(key, i0 + i) * a) * post)): post folds a scale in after the f32 product, as the
// GPU path's upload folds the indexer's scales (post 1 leaves the product as it is).
void fill_random(Tensor& t, uint64_t key, float a, int64_t i0 = 0, double post = 1.0);
// Fills an F32 tensor with one value.
void fill_value(Tensor& t, float v);

namespace cuda {
void fill_random_bf16(uint16_t* dst, int64_t n, uint64_t key, float a, int64_t i0, double post);
void fill_random_f32(float* dst, int64_t n, uint64_t key, float a, int64_t i0, double post);
void fill_value_f32(float* dst, int64_t n, float v);
// Per head h of kv_b BF16 [H * (nope + v), L]: w_uk_t[h * L + i, j] = kv_b[h * (nope + v) + j, i].
void uk_transpose(const uint16_t* kv_b, int64_t H, int64_t nope, int64_t v, int64_t L, uint16_t* w_uk_t);
}  // namespace cuda

}  // namespace ic::dsa
