#pragma once
// The DSA family's weights as the CPU reference path holds them: F32 host tensors in HF's own
// [out, in] layout, read from an HF folder by the names HF saves them under (fp8 block-scaled
// weights dequantised by hf::Folder::read_f32). Biases are undefined Tensors where the model has none.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "model/dsa_family/config.h"

namespace ic {
namespace hf {
class Folder;
}

namespace dsa {

struct MlaWeights {
  Tensor q_proj;                     // [H * qk_head, hidden] when q_lora_rank is 0
  Tensor q_a, q_a_bias, q_a_norm;    // [q_lora, hidden], [q_lora], [q_lora]
  Tensor q_b;                        // [H * qk_head, q_lora]
  Tensor kv_a, kv_a_bias;            // [kv_lora + rope, hidden], [kv_lora + rope]
  Tensor kv_a_norm;                  // [kv_lora]
  Tensor kv_b;                       // [H * (nope + v), kv_lora]: per head nope key rows, then v rows
  Tensor o, o_bias;                  // [hidden, H * v], [hidden]
};

// The DeepSeek indexer of one layer (undefined tensors where the layer's indexer is not loaded).
struct IndexerWeights {
  Tensor wq_b;          // [Hi * Di, q_lora]
  Tensor wk;            // [Di, hidden]
  Tensor k_norm, k_bias;  // [Di] LayerNorm weight and bias
  Tensor weights_proj;  // [Hi, hidden]
  bool loaded() const { return wq_b.defined(); }
};

struct MlpWeights {
  Tensor gate, up;  // [inter, hidden]
  Tensor down;      // [hidden, inter]
  bool defined() const { return gate.defined(); }
};

struct MoeWeights {
  Tensor router;       // [E, hidden] (mlp.gate.weight)
  Tensor router_bias;  // [E] e_score_correction_bias
  std::vector<MlpWeights> experts;  // [E]
  MlpWeights shared;   // intermediate moe_intermediate * n_shared_experts; empty when 0 shared
};

struct LayerWeights {
  Tensor input_norm, post_norm;  // [hidden]
  MlaWeights attn;
  IndexerWeights indexer;
  bool moe = false;
  MlpWeights mlp;  // dense layers
  MoeWeights experts;  // MoE layers
  int64_t bytes() const;  // of everything held
};

// "model.layers.<l>."
std::string layer_prefix(int64_t l);

// Layer l's weights except the indexer. Errors name the folder, the tensor and both shapes.
LayerWeights load_layer(const hf::Folder& f, const MlaMoeConfig& c, int64_t l);
// Layer l's indexer (has_indexer_arch() configs only).
IndexerWeights load_indexer(const hf::Folder& f, const MlaMoeConfig& c, int64_t l);
// True when the folder holds every tensor of layer l's indexer.
bool folder_has_indexer(const hf::Folder& f, int64_t l);
int64_t indexer_bytes(const IndexerWeights& w);

}  // namespace dsa
}  // namespace ic
