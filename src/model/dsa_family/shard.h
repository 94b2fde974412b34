#pragma once
// Tensor and expert parallelism of the DSA family's CPU forward (docs/PARALLEL.md): the weights of
// one rank of N, cut at load time from the one full model.
//   MLA:        by heads. Rank r holds heads [r H/N, (r+1) H/N): their rows of q_b_proj (or
//               q_proj) and kv_b_proj (views) and their columns of o_proj (a copy), o_proj's bias
//               on rank 0 only; o_proj's partial outputs are summed by an all-reduce. q_a_proj,
//               kv_a_proj_with_mqa and the LoRA norms are replicated, so the latent cache row of
//               a token (one per token, shared by every head) is computed and held on every rank.
//   Indexer:    replicated (the full layer's weights): every rank scores and picks the same top-k.
//   Dense MLP and shared experts: split on the intermediate dim (gate/up rows, down columns),
//               partial outputs all-reduced.
//   Routed experts: the router replicated; ep == N: rank r owns experts [r E/N, (r+1) E/N) whole;
//               ep == 1: every expert split on its intermediate dim as the dense MLP. Each rank
//               adds its experts' weighted outputs for every token, then one all-reduce (with
//               the shared expert's part) combines them; with a2a (ep == tp) the block runs by
//               all-to-all dispatch/combine instead (moe_forward_a2a).
// The embedding, final norm and lm_head stay replicated (the model's own tensors).
#include <cstdint>
#include <string>
#include <vector>

#include "model/dsa_family/config.h"
#include "model/dsa_family/moe.h"
#include "model/dsa_family/weights.h"
#include "parallel/communicator.h"

namespace ic::dsa {

struct ParallelSpec {
  int tp = 1;  // ranks; attention heads, dense MLP and shared experts split N ways
  int ep = 1;  // 1: routed experts split on their intermediate dim; tp: split by expert
  // ep == tp > 1 only: the MoE block by all-to-all instead of an all-reduce (moe_forward_a2a):
  // each rank takes 1/N of the tokens, dispatches their rows to the experts' owners, gets the
  // outputs back, adds the shared experts (whole on every rank), and an all-gather replicates the
  // block's output. The same bits as one rank's MoE block.
  bool a2a = false;
  int ranks() const { return tp; }
  bool single() const { return tp == 1 && ep == 1 && !a2a; }
};

struct RankLayer {
  MlaWeights attn;     // the rank's heads (q_b or q_proj rows, kv_b rows, o columns); the rest shared
  MlpWeights mlp;      // dense layers: the rank's intermediate slice
  MlpWeights shared;   // MoE layers: the shared experts' intermediate slice, whole with a2a (undefined without any)
  std::vector<MlpWeights> experts;  // [E]: the experts this rank computes (undefined elsewhere)
  int64_t expert_begin = 0, expert_end = 0;  // [begin, end) of the experts this rank computes
};

struct RankShard {
  int rank = 0, size = 1;
  bool a2a = false;  // the MoE block by moe_forward_a2a
  MlaMoeConfig cfg;  // the full config with n_heads = H / tp: what MLA's functions iterate over
  std::vector<RankLayer> layers;
};

// The spec's constraints on the config: ep is 1 or tp, and every split dim divides by its N. The
// error names `where`, the dim, its config key and N.
void check_parallel(const MlaMoeConfig& c, const ParallelSpec& p, const std::string& where);
// Rank `rank`'s weights of every layer of `full` (check_parallel first).
RankShard shard_model(const MlaMoeConfig& c, const std::vector<LayerWeights>& full, const ParallelSpec& p, int rank);
// The MoE block of an a2a spec on rank comm.rank() (every rank calls it with the same h and
// routing, both replicated): F32 [n, hidden], the same on every rank and bit for bit moe_forward's.
// Rank r's tokens are [r n/N, (r+1) n/N); for each of them and each choice i, the row of h and the
// expert id go to the expert's owner (all_to_all of the counts, then all_to_all_v of rows of
// hidden + 1 floats), which returns expert(row) unweighted (all_to_all_v); the token's rank adds
// them, weighted, in choice order in double onto the shared experts' output as moe_forward does,
// and all_gather replicates the n rows.
Tensor moe_forward_a2a(parallel::Communicator& comm, const RankLayer& r, const Routing& routing, const Tensor& h);

// The bytes a shard holds of its own (the column copies); views of the full weights count nothing.
int64_t shard_copy_bytes(const RankShard& s);

}  // namespace ic::dsa
