#pragma once
// Indexer distillation loss with a hand-written backward (INDEXCACHE.md, "Indexer training
// signal"; main model frozen, so only the indexer weights get gradients). For one sequence of
// n tokens with layer input x (the attention-norm output) and target p (teacher.h):
//   loss = sum_t KL(p_t || q_t),  q_t = softmax_s(I[t, s]) over the row's support,
// natural log, terms with p = 0 contribute 0, p's entropy included (so loss >= 0).
// Support of row t: dense, s <= t; sparse (DeepSeek's sparse stage), the selected set
// {topk[t, j] >= 0, <= t}. In both cases p_t is L1-renormalised over the support, r = p / P
// (a no-op for teacher rows in the dense case), so each term is a true KL between two
// distributions on the support; a row whose p has no mass there contributes nothing.
// The gradient w.r.t. the scores is dL/dI[t, s] = q_s - r_s on the support, 0 elsewhere;
// from there it flows through the weighted ReLU sum, RoPE (its transpose is the inverse
// rotation), the key LayerNorm (full backward with mean and variance) and the projections.
#include <span>

#include "core/tensor.h"
#include "model/indexer.h"

namespace ic {

// Per-sequence statistics; add() sums over a batch.
struct DistillStats {
  double loss = 0.0;        // sum over rows of KL(p_t || q_t), nats
  int64_t rows = 0;         // rows with target mass on their support
  double recall_sum = 0.0;  // sum over those rows of p_t's mass on the indexer's top-k (cfg.topk)
                            // of its causal row (all of s <= t when t < topk)

  double mean_kl() const { return rows ? loss / static_cast<double>(rows) : 0.0; }
  double recall() const { return rows ? recall_sum / static_cast<double>(rows) : 0.0; }
  void add(const DistillStats& o) {
    loss += o.loss;
    rows += o.rows;
    recall_sum += o.recall_sum;
  }
};

struct DistillInput {
  Tensor x;         // F32 [n, dim] layer input (host; distill_loss_cuda: host or device)
  Tensor p;         // F32 [n, n] target rows (>= 0; entries s > t are ignored); same
  Tensor selected;  // I32 [n, k_sel], -1 = no token; undefined = the dense loss; same
};

// The f32 fast path: projections, scores and backward in f32 over OpenMP threads, one [n, n]
// score buffer per sequence and [n, n_heads, *] per-token buffers, never [n, n, n_heads].
// Deterministic: bitwise independent of the thread count. grad: null for the loss only, else
// IndexerWeights-shaped (zeros(cfg, dim) to start) and the gradient is ADDED to it.
DistillStats distill_loss(const IndexerConfig& cfg, const IndexerWeights& w, const DistillInput& in,
                          IndexerWeights* grad);

// The plain reference: everything in double and materialised ([n, n_heads, n] pre-activations
// included), one loop per formula. Same contract as distill_loss; grad is rounded to F32 when
// added. For tests and small problems only.
DistillStats distill_loss_reference(const IndexerConfig& cfg, const IndexerWeights& w, const DistillInput& in,
                                    IndexerWeights* grad);

// The GPU path (distill_loss_cuda.cu), same contract and math as distill_loss, f32 arithmetic
// throughout (cuBLAS with CUBLAS_COMPUTE_32F, no TF32), per-row reductions in double:
//   projections and weight gradients: cuBLAS GEMMs over all n tokens;
//   scores a[(t, h), s] = q[t, h] . k[s] for a block of R query rows: ONE GEMM [R H, d] x [d, t1]
//   (t1 = the block's last row + 1: columns past it are never needed), then one CUDA block per
//   row for the head sum, the support's log-softmax, KL, dL/dI, recall@k (radix select) and
//   dL/dw, rewriting the scores in place as b = dL/dI w [a > 0]; then dq = b k and
//   dk += b^T q as two more GEMMs over the same block.
// Tensors may be on the host or the device: x, p, selected and w are uploaded when on the
// host (tests; the trainer passes device tensors), grad may be on either (on the host the
// gradient is computed on the device and added on the host). Device memory besides the inputs,
// R = rows per block (chunk_rows, or 0 = the largest R with R H n 4 B <= 1 GiB):
//   4 R n (H + 1) + R n + 8 n H d + 16 n d + 8 n H + 24 n bytes,
// e.g. n 8192, H 16, d 128: R = 2048, ~1.3 GiB (+ 256 MiB for p itself); n 2048, H 4: R = n, 86 MiB.
// Deterministic: the same inputs give the same bits (fixed reduction trees, no float atomics,
// cuBLAS in its default, deterministic mode on one stream). In a build without CUDA it throws
// ic::Error saying so.
DistillStats distill_loss_cuda(const IndexerConfig& cfg, const IndexerWeights& w, const DistillInput& in,
                               IndexerWeights* grad, int64_t chunk_rows = 0);

// A deep copy of every tensor of w on `device` (uploads/downloads the indexer weights once).
IndexerWeights weights_to(const IndexerWeights& w, Device device);

// Multi-layer loss of an F layer serving S layers l+1..l+m, targets = {p^(l), ..., p^(l+m)}:
//   L_multi = sum_j 1/(m+1) sum_t KL(p^(l+j)_t || q^(l)_t).
// kAverageOfKls evaluates it as written (one loss and gradient per target); kMeanTarget
// distils toward p_bar = mean_j p^(l+j) once. Cross-entropy is linear in p, so the gradients
// are equal; the losses differ by the entropy gap H(p_bar) - mean_j H(p^(l+j)) >= 0 (per row),
// which kMeanTarget does not include. Stats' recall is that of p_bar in both forms.
enum class MultiLayerForm { kAverageOfKls, kMeanTarget };
DistillStats distill_loss_multi(const IndexerConfig& cfg, const IndexerWeights& w, const Tensor& x,
                                std::span<const Tensor> targets, const Tensor& selected, MultiLayerForm form,
                                IndexerWeights* grad);

// Adds a * src to dst, tensor by tensor (both IndexerWeights-shaped).
void axpy_weights(float a, const IndexerWeights& src, IndexerWeights& dst);

namespace distill_detail {
// Shared by both host implementations. Checks shapes, dtypes and p >= 0 / finite, selected in
// [-1, n); throws ic::Error naming the argument. Returns n.
int64_t check_input(const IndexerConfig& cfg, const IndexerWeights& w, const DistillInput& in,
                    const IndexerWeights* grad);
// The shape-only part of check_input, for tensors on any device (the CUDA path checks the
// values of p and selected on the device). Returns n.
int64_t check_shapes(const IndexerConfig& cfg, const IndexerWeights& w, const DistillInput& in,
                     const IndexerWeights* grad);
}  // namespace distill_detail

}  // namespace ic
