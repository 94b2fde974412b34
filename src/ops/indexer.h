#pragma once
// Lightning indexer of DeepSeek Sparse Attention (DeepSeek-V3.2 form). For query token t at
// absolute position q_pos0 + t and key token s <= q_pos0 + t:
//   I[t, s] = sum_h w[t, h] * ReLU(q[t, h, :] . k[s, :])
// with one key per token shared by the n_heads indexer heads; w already carries
// n_heads^-1/2 * head_dim^-1/2. Later keys are masked (-inf where scores are materialised).
//
// FP8 path (as the ecosystem does it): q and k are e4m3 with one fp32 scale per row of at
// most 128 values (a q row is one head of one token, a k row is one token); q's scale is
// folded into w, so
//   I[t, s] = k_scale[s] * sum_h w'[t, h] * ReLU(q8[t, h, :] . k8[s, :]),  w' = w * q_scale.
// BF16 path: q and k in bf16, no scales, f32 accumulation.
//
// Ragged rows (several sequences in one prefill launch, DeepGEMM's fp8_mqa_logits ks/ke):
// query t scores keys [row_start[t], row_end[t]) of the key array, and score column j holds key
// row_start[t] + j, so top-k indices are positions within the query's own sequence.
// Paged decode (IndexerPagedParams): one query per sequence against that sequence's keys in a
// paged indexer cache (64-token pages: 64 x head_dim e4m3 bytes, then 64 fp32 scales).
//
// The only consumer of I in inference is top-k, so indexer_topk fuses the two and never
// holds more than one chunk of query rows of scores (CPU: <= 64 rows, at most 4 MiB,
// indexer_cpu.cpp; CUDA: rows under kIndexerCudaChunkBytes); indexer_scores materialises
// [n_q, n_keys] for training losses and debugging.
#include <cstdint>

#include "core/tensor.h"

namespace ic::ops {

struct IndexerParams {
  const void* q;         // [n_q, n_heads, head_dim]; float, bf16, or e4m3 bytes (dtype)
  const void* k;         // [n_keys, head_dim] indexer key cache, same dtype as q; rows
                         // < q_pos0 + n_q are read (ragged: rows < max row_end)
  const float* k_scale;  // [n_keys] per-row fp8 scale; null unless dtype is F8_E4M3
  const float* w;        // [n_q, n_heads] head weights (fp8: q's scale folded in)
  DType dtype;           // F32 (CPU only), BF16 or F8_E4M3
  int64_t n_q;
  int64_t n_heads;
  int64_t head_dim;      // F8_E4M3: at most 128, one scale block per row
  int64_t n_keys;        // rows of the key cache, >= q_pos0 + n_q; also the score row stride
  int64_t q_pos0;        // ragged: unused (0)
  const int32_t* row_start = nullptr;  // [n_q] ragged rows: first key of query t; both null:
  const int32_t* row_end = nullptr;    // [n_q] causal rows [0, q_pos0 + t + 1). end > start
};

// Key range [start, end) of query t.
inline int64_t indexer_row_start(const IndexerParams& p, int64_t t) { return p.row_start ? p.row_start[t] : 0; }
inline int64_t indexer_row_end(const IndexerParams& p, int64_t t) {
  return p.row_end ? p.row_end[t] : p.q_pos0 + t + 1;
}

// Paged indexer cache of the decode step: one query per sequence.
constexpr int64_t kIndexerPageTokens = 64;
// Bytes of one page: 64 rows of head_dim e4m3 values, then their 64 fp32 scales.
inline int64_t indexer_page_bytes(int64_t head_dim) { return kIndexerPageTokens * (head_dim + 4); }

struct IndexerPagedParams {
  const uint8_t* q;            // [n_seq, n_heads, head_dim] e4m3
  const float* w;              // [n_seq, n_heads], q's scale folded in
  const uint8_t* cache;        // [n_pages, indexer_page_bytes(head_dim)]
  const int32_t* block_table;  // [n_seq, max_pages] page of each 64-token block of a sequence
  const int32_t* seq_lens;     // [n_seq] keys of each sequence, in [1, max_pages * 64]
  int64_t n_seq;
  int64_t n_heads;
  int64_t head_dim;            // <= 128
  int64_t max_pages;
  int64_t n_pages;
  int64_t ld;                  // score row stride, >= every seq_len
};

// Largest row of values sharing one fp8 scale.
constexpr int64_t kFp8BlockSize = 128;

// Tensor fronts. q: F32, BF16 or F8_E4M3 [n_q, n_heads, head_dim]; k: same dtype [n_keys, head_dim];
// k_scale: F32 [n_keys] for fp8, an undefined Tensor otherwise; w: F32 [n_q, n_heads].
// scores: F32 [n_q, n_keys]; topk: I32 [n_q, k] in ops::topk's canonical order.
// On the GPU: BF16 and F8_E4M3, n_heads <= 64, head_dim 64 or 128 (indexer_cuda.cu lists them).
void indexer_scores(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                    int64_t q_pos0, Tensor& scores);
void indexer_topk(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                  int64_t q_pos0, Tensor& topk);
// Ragged rows: row_start, row_end I32 [n_q]; scores[t, j] is key row_start[t] + j (-inf past
// the row), topk holds positions relative to row_start[t]. The CPU runs the reference.
void indexer_scores_ragged(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                           const Tensor& row_start, const Tensor& row_end, Tensor& scores);
void indexer_topk_ragged(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                         const Tensor& row_start, const Tensor& row_end, Tensor& topk);
// Paged decode. q: F8_E4M3 [n_seq, n_heads, head_dim]; w: F32 [n_seq, n_heads]; cache:
// F8_E4M3 [n_pages, indexer_page_bytes(head_dim)] (raw page bytes); block_table: I32
// [n_seq, max_pages]; seq_lens: I32 [n_seq]; scores: F32 [n_seq, ld >= max seq_len], -inf past
// each length; topk: I32 [n_seq, k].
void indexer_scores_paged(const Tensor& q, const Tensor& w, const Tensor& cache, const Tensor& block_table,
                          const Tensor& seq_lens, Tensor& scores);
void indexer_topk_paged(const Tensor& q, const Tensor& w, const Tensor& cache, const Tensor& block_table,
                        const Tensor& seq_lens, int64_t max_seq_len, Tensor& topk);

// Quantise rows of `dim` (<= 128) values to e4m3 with one scale per row:
// scale = max|x| / 448 (1 for an all-zero row), x8 = e4m3(x / scale), saturating.
void quantize_fp8_rows(const float* x, int64_t rows, int64_t dim, uint8_t* x8, float* scale);
// The indexer query: quantise q [n_q, n_heads, head_dim] per head row and fold the scales
// into w [n_q, n_heads], giving q8 and w_folded of the same shapes.
void quantize_indexer_query(const float* q, const float* w, int64_t n_q, int64_t n_heads,
                            int64_t head_dim, uint8_t* q8, float* w_folded);

namespace cpu {
// Causal rows only (no row_start/row_end); F32, BF16 or F8_E4M3.
void indexer_scores(const IndexerParams& p, float* scores /* [n_q, n_keys] */);
void indexer_topk(const IndexerParams& p, int32_t* topk /* [n_q, k] */, int64_t k);
// Double accumulation, one (t, s) at a time; materialises every score; causal or ragged rows.
void indexer_scores_reference(const IndexerParams& p, float* scores /* [n_q, n_keys] */);
// The paged decode step, by gathering each sequence's keys and scales from its pages.
void indexer_scores_paged_reference(const IndexerPagedParams& p, float* scores /* [n_seq, ld] */);
}  // namespace cpu
namespace cuda {
// Score chunks held by indexer_topk at once (query rows x longest row x 4 bytes).
constexpr int64_t kIndexerCudaChunkBytes = int64_t{1} << 30;
// Scores of valid entries only: columns past a row's length are left as they are.
void indexer_scores(const IndexerParams& p, float* scores);
// chunk_bytes: score rows held at once (tests pass a small value to run several chunks).
void indexer_topk(const IndexerParams& p, int32_t* topk, int64_t k, int64_t chunk_bytes = kIndexerCudaChunkBytes);
void indexer_scores_paged(const IndexerPagedParams& p, float* scores);
void indexer_topk_paged(const IndexerPagedParams& p, int32_t* topk, int64_t k);
// Writes -inf to scores[t, j] for j in [len(t), ld), len(t) = row_end[t] - row_start[t]
// (either may be null: end q_pos0 + t + 1, start 0): the materialised form of the fronts.
void mask_score_tails(float* scores, int64_t n_q, int64_t ld, const int32_t* row_start,
                      const int32_t* row_end, int64_t q_pos0);
}  // namespace cuda

}  // namespace ic::ops
