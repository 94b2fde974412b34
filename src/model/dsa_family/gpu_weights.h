#pragma once
// The DSA family's weights as the GPU path holds them, uploaded once at load from the CPU
// path's f32 tensors (model/dsa_family/weights.h): every projection bf16 (an fp8 block-scaled
// checkpoint has been dequantised to f32 by the folder reader, so it is bf16 here too), norms,
// biases and the router f32 (the router's choice is discrete: f32 keeps it as close to the
// reference as the inputs allow). Layouts stay HF's [out, in], except:
//   w_uk_t   [H * L, nope]: per head the transpose of kv_b's nope rows, so that
//            q_abs = q_nope W_uk is one gemm_bf16 (y = x W^T) per head;
//   gate_up  [E, 2I, D] and down [E, D, I]: the routed experts stacked as ops::moe_experts takes them;
//   ix_weights: weights_proj times Hi^-1/2 Di^-1/2, the indexer's scales folded in before rounding.
// W_uv is read in place from kv_b (its v rows of each head are contiguous).
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/weights.h"

namespace ic::dsa {

struct GpuMlp {
  Tensor gate, up, down;  // BF16 [I, D], [I, D], [D, I]
  bool defined() const { return gate.defined(); }
};

struct GpuIndexer {
  Tensor wq_b;             // BF16 [Hi * Di, q_lora]
  Tensor wk;               // BF16 [Di, D]
  Tensor k_norm, k_bias;   // F32 [Di]
  Tensor weights;          // BF16 [Hi, D], scales folded
  bool loaded() const { return wq_b.defined(); }
};

struct GpuLayer {
  Tensor input_norm, post_norm;       // F32 [D]
  Tensor q_proj;                      // BF16 [H * qk, D] without q LoRA
  Tensor q_a, q_b;                    // BF16 [q_lora, D], [H * qk, q_lora]
  Tensor q_a_bias, q_a_norm;          // F32 [q_lora]
  Tensor kv_a;                        // BF16 [L + R, D]
  Tensor kv_a_bias, kv_a_norm;        // F32 [L + R], [L]
  Tensor kv_b;                        // BF16 [H * (nope + v), L]
  Tensor w_uk_t;                      // BF16 [H * L, nope]
  Tensor o, o_bias;                   // BF16 [D, H * v], F32 [D]
  GpuIndexer indexer;                 // F layers only
  bool moe = false;
  GpuMlp mlp;                         // dense layers
  Tensor router, router_bias;         // F32 [E, D], [E]
  Tensor gate_up, down;               // BF16 [E, 2I, D], [E, D, I]
  GpuMlp shared;                      // empty without shared experts
  int64_t bytes() const;
};

// Throws ic::Error naming the folder, the config's dims and the kernels' where the GPU path
// cannot run this configuration (the sparse MLA kernels are built for kv_lora_rank 512 + rope 64;
// the GPU indexer takes index_head_dim 64 or 128 and at most 64 heads; top-k at most 2048).
void check_gpu_dims(const MlaMoeConfig& c, const std::string& dir);

// F32 host tensor -> BF16 (round to nearest even) on `dev` (the GPU; the CPU where the path's
// arithmetic is tested on the host); undefined stays undefined.
Tensor upload_bf16(const Tensor& host_f32, Device dev);
// F32 host tensor -> F32 on `dev`; undefined stays undefined.
Tensor upload_f32(const Tensor& host_f32, Device dev);

GpuLayer upload_layer(const MlaMoeConfig& c, const LayerWeights& w, Device dev);
// Layer l of a random model (random_weights.h) made in place on `dev`: bitwise what
// upload_layer makes of random_layer_weights(c, seed, l), without the host copy.
GpuLayer random_gpu_layer(const MlaMoeConfig& c, uint64_t seed, int64_t l, Device dev);
// The indexer's scales folded into weights_proj: (index_n_heads * index_head_dim)^-1/2.
double indexer_weight_scale(const MlaMoeConfig& c);
GpuIndexer upload_indexer(const MlaMoeConfig& c, const IndexerWeights& w, Device dev);

}  // namespace ic::dsa
