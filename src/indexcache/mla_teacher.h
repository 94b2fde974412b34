#pragma once
// Teacher targets for indexer distillation on the DSA family (docs/DISTILL.md, "The DSA family"):
// the head-mean of MLA's own causal attention distribution, in the absorbed form the model runs
// (model/dsa_family/mla.h):
//   qa[t, h] = [W_uk[h]^T q_nope[t, h], q_rope[t, h]]            F32 [n, H, kv_lora + rope] ("q576")
//   p[t, s]  = mean_h softmax_s(scale * qa[t, h] . kv[s]),   s <= t, 0 for s > t
// with kv the layer's cache rows [latent, RoPE(kr)] ("kv576") and scale the model's own
// MlaMoeConfig::softmax_scale() (YaRN's mscale^2 included). Rows are made a block of queries at a
// time (mla_target_rows), so no [n, n] matrix is needed: a block of R rows costs 4 R n bytes plus
// 8 n bytes of per-head scores per thread; the layer's qa and kv cost 4 n (H + 1) (kv_lora + rope)
// bytes (576 floats per head and token at real size). Positions are 0 .. n-1.
#include <cstdint>
#include <span>

#include "core/tensor.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/weights.h"

namespace ic {

// One layer's teacher inputs for a window: qa F32 [n, H, kv_lora + rope], kv F32 [n, kv_lora + rope].
struct MlaTeacherInput {
  Tensor qa;
  Tensor kv;
};

// q: F32 [n, H, nope + rope] (mla_query's, RoPE applied) -> qa F32 [n, H, kv_lora + rope].
Tensor mla_absorbed_query(const MlaMoeConfig& c, const dsa::MlaWeights& w, const Tensor& q);

// Rows t0 .. t1-1 of p into out [(t1 - t0) * n] (row-major, n = kv rows), double accumulation,
// parallel over rows (each row by one thread in a fixed order: bitwise thread-count independent).
void mla_target_rows(const MlaTeacherInput& in, double scale, int64_t t0, int64_t t1, float* out);

// The mean over layers of their rows (L_multi's p_bar, teacher.h's mean_targets, by blocks):
// out = (1/m) sum_j rows_j, the sum in layer order in double.
void mean_target_rows(std::span<const MlaTeacherInput> layers, double scale, int64_t t0, int64_t t1, float* out);

// The plain reference in double from the naive form: every head's keys decompressed,
// k[s, h] = [W_uk[h] latent[s], kr[s]]; returns F32 [n, n]. For tests.
Tensor mla_targets_reference(const MlaMoeConfig& c, const dsa::MlaWeights& w, const Tensor& q, const Tensor& kv);

}  // namespace ic
