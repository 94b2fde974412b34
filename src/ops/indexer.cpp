#include "ops/indexer.h"

#include <limits>
#include <vector>

#include "core/error.h"
#include "ops/topk.h"

namespace ic::ops {
namespace {

IndexerParams check_indexer(const char* op, const Tensor& q, const Tensor& k, const Tensor& k_scale,
                            const Tensor& w) {
  const Device dev = q.device();
  IC_CHECK(q.defined(), "{}: q is empty", op);
  const DType dt = q.dtype();
  IC_CHECK(dt == DType::F32 || dt == DType::BF16 || dt == DType::F8_E4M3,
           "{}: q must be F32, BF16 or F8_E4M3, got {}", op, q.desc());
  check_tensor(q, "indexer q", dt, dev, 3);
  check_tensor(k, "indexer k", dt, dev, 2);
  check_tensor(w, "indexer w", DType::F32, dev, 2);
  IC_CHECK(k.dim(1) == q.dim(2), "{}: head dims differ, q {} k {}", op, q.desc(), k.desc());
  IC_CHECK(q.dim(2) >= 1 && q.dim(1) >= 1, "{}: q {} has no heads or no head dims", op, q.desc());
  IC_CHECK(w.dim(0) == q.dim(0) && w.dim(1) == q.dim(1), "{}: w {} must be [n_q, n_heads] of q {}",
           op, w.desc(), q.desc());
  IC_CHECK(k.dim(0) <= std::numeric_limits<int32_t>::max(), "{}: {} keys do not fit int32 indices",
           op, k.dim(0));
  const float* ks = nullptr;
  if (dt == DType::F8_E4M3) {
    IC_CHECK(q.dim(2) <= kFp8BlockSize,
             "{}: fp8 rows share one scale, so head_dim must be <= {}, got {}", op, kFp8BlockSize,
             q.dim(2));
    check_tensor(k_scale, "indexer k_scale", DType::F32, dev, 1);
    IC_CHECK(k_scale.dim(0) == k.dim(0), "{}: k_scale {} needs one scale per key row of k {}", op,
             k_scale.desc(), k.desc());
    ks = k_scale.data<float>();
  } else {
    IC_CHECK(!k_scale.defined(), "{}: k_scale {} given for {} keys", op, k_scale.desc(), dtype_name(dt));
  }
  IC_CHECK(dev == Device::CPU || dt != DType::F32,
           "{}: the GPU indexer takes BF16 or F8_E4M3 operands, got {}", op, q.desc());
  return IndexerParams{q.raw(), k.raw(), ks, w.data<float>(), dt, q.dim(0), q.dim(1), q.dim(2), k.dim(0), 0};
}

IndexerParams check_causal(const char* op, const Tensor& q, const Tensor& k, const Tensor& k_scale,
                           const Tensor& w, int64_t q_pos0) {
  IndexerParams p = check_indexer(op, q, k, k_scale, w);
  IC_CHECK(q_pos0 >= 0 && q_pos0 + q.dim(0) <= k.dim(0),
           "{}: queries at positions [{}, {}) exceed the {} cached keys", op, q_pos0,
           q_pos0 + q.dim(0), k.dim(0));
  p.q_pos0 = q_pos0;
  return p;
}

IndexerParams check_ragged(const char* op, const Tensor& q, const Tensor& k, const Tensor& k_scale,
                           const Tensor& w, const Tensor& row_start, const Tensor& row_end) {
  IndexerParams p = check_indexer(op, q, k, k_scale, w);
  const Device dev = q.device();
  check_tensor(row_start, "indexer row_start", DType::I32, dev, 1);
  check_tensor(row_end, "indexer row_end", DType::I32, dev, 1);
  IC_CHECK(row_start.dim(0) == q.dim(0) && row_end.dim(0) == q.dim(0),
           "{}: row_start {} and row_end {} need one entry per query of q {}", op, row_start.desc(),
           row_end.desc(), q.desc());
  p.row_start = row_start.data<int32_t>();
  p.row_end = row_end.data<int32_t>();
  if (dev == Device::CPU)  // GPU ranges stay on the GPU; the kernels clamp them to the key rows
    for (int64_t t = 0; t < p.n_q; ++t)
      IC_CHECK(p.row_start[t] >= 0 && p.row_start[t] < p.row_end[t] && p.row_end[t] <= p.n_keys,
               "{}: query {} has key range [{}, {}), outside [0, {}) or empty", op, t, p.row_start[t],
               p.row_end[t], p.n_keys);
  return p;
}

void check_scores(const char* op, const Tensor& scores, const IndexerParams& p, Device dev) {
  check_tensor(scores, "indexer scores", DType::F32, dev, 2);
  IC_CHECK(scores.dim(0) == p.n_q && scores.dim(1) == p.n_keys,
           "{}: scores {} must be [n_q, n_keys] = [{}, {}]", op, scores.desc(), p.n_q, p.n_keys);
}

void check_topk_out(const char* op, const Tensor& topk, int64_t n_rows, Device dev) {
  check_tensor(topk, "indexer topk", DType::I32, dev, 2);
  IC_CHECK(topk.dim(0) == n_rows && topk.dim(1) >= 1, "{}: topk {} must be [{}, k >= 1]", op, topk.desc(),
           n_rows);
}

}  // namespace

void indexer_scores(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                    int64_t q_pos0, Tensor& scores) {
  const IndexerParams p = check_causal("indexer_scores", q, k, k_scale, w, q_pos0);
  check_scores("indexer_scores", scores, p, q.device());
  if (q.device() == Device::CPU) return cpu::indexer_scores(p, scores.data<float>());
#ifdef IC_WITH_CUDA
  cuda::indexer_scores(p, scores.data<float>());
  cuda::mask_score_tails(scores.data<float>(), p.n_q, p.n_keys, nullptr, nullptr, p.q_pos0);
#else
  fail_no_cuda("indexer_scores");
#endif
}

void indexer_topk(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                  int64_t q_pos0, Tensor& topk) {
  const IndexerParams p = check_causal("indexer_topk", q, k, k_scale, w, q_pos0);
  check_topk_out("indexer_topk", topk, p.n_q, q.device());
  if (q.device() == Device::CPU) return cpu::indexer_topk(p, topk.data<int32_t>(), topk.dim(1));
#ifdef IC_WITH_CUDA
  cuda::indexer_topk(p, topk.data<int32_t>(), topk.dim(1));
#else
  fail_no_cuda("indexer_topk");
#endif
}

void indexer_scores_ragged(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                           const Tensor& row_start, const Tensor& row_end, Tensor& scores) {
  const IndexerParams p = check_ragged("indexer_scores_ragged", q, k, k_scale, w, row_start, row_end);
  check_scores("indexer_scores_ragged", scores, p, q.device());
  // No fast CPU path for ragged rows: the model's CPU prefill is one sequence (causal rows).
  if (q.device() == Device::CPU) return cpu::indexer_scores_reference(p, scores.data<float>());
#ifdef IC_WITH_CUDA
  cuda::indexer_scores(p, scores.data<float>());
  cuda::mask_score_tails(scores.data<float>(), p.n_q, p.n_keys, p.row_start, p.row_end, 0);
#else
  fail_no_cuda("indexer_scores_ragged");
#endif
}

void indexer_topk_ragged(const Tensor& q, const Tensor& k, const Tensor& k_scale, const Tensor& w,
                         const Tensor& row_start, const Tensor& row_end, Tensor& topk) {
  const IndexerParams p = check_ragged("indexer_topk_ragged", q, k, k_scale, w, row_start, row_end);
  check_topk_out("indexer_topk_ragged", topk, p.n_q, q.device());
  if (q.device() == Device::CPU) {
    std::vector<float> scores(static_cast<size_t>(p.n_q * p.n_keys));
    std::vector<int32_t> len(static_cast<size_t>(p.n_q));
    for (int64_t t = 0; t < p.n_q; ++t) len[t] = p.row_end[t] - p.row_start[t];
    cpu::indexer_scores_reference(p, scores.data());
    TopkParams tp{scores.data(), topk.data<int32_t>(), p.n_q, p.n_keys, 0, topk.dim(1)};
    tp.lengths = len.data();
    return cpu::topk(tp);
  }
#ifdef IC_WITH_CUDA
  cuda::indexer_topk(p, topk.data<int32_t>(), topk.dim(1));
#else
  fail_no_cuda("indexer_topk_ragged");
#endif
}

namespace {

IndexerPagedParams check_paged(const char* op, const Tensor& q, const Tensor& w, const Tensor& cache,
                               const Tensor& block_table, const Tensor& seq_lens, int64_t ld) {
  const Device dev = q.device();
  check_tensor(q, "indexer q", DType::F8_E4M3, dev, 3);
  check_tensor(w, "indexer w", DType::F32, dev, 2);
  check_tensor(cache, "indexer cache pages", DType::F8_E4M3, dev, 2);
  check_tensor(block_table, "indexer block_table", DType::I32, dev, 2);
  check_tensor(seq_lens, "indexer seq_lens", DType::I32, dev, 1);
  const int64_t n = q.dim(0), d = q.dim(2);
  IC_CHECK(d >= 1 && d <= kFp8BlockSize && q.dim(1) >= 1, "{}: q {} needs heads and 1 <= head_dim <= {}", op,
           q.desc(), kFp8BlockSize);
  IC_CHECK(w.dim(0) == n && w.dim(1) == q.dim(1), "{}: w {} must be [n_seq, n_heads] of q {}", op, w.desc(),
           q.desc());
  IC_CHECK(cache.dim(1) == indexer_page_bytes(d),
           "{}: cache {} must be [n_pages, {}]: 64 rows of {} e4m3 bytes, then 64 fp32 scales", op,
           cache.desc(), indexer_page_bytes(d), d);
  IC_CHECK(block_table.dim(0) == n && seq_lens.dim(0) == n,
           "{}: block_table {} and seq_lens {} need one row per sequence of q {}", op, block_table.desc(),
           seq_lens.desc(), q.desc());
  const int64_t max_pages = block_table.dim(1);
  IC_CHECK(ld >= 1 && ld <= max_pages * kIndexerPageTokens,
           "{}: score rows of {} exceed the {} pages of block_table {}", op, ld, max_pages, block_table.desc());
  IC_CHECK(ld <= std::numeric_limits<int32_t>::max(), "{}: {} keys do not fit int32 indices", op, ld);
  const IndexerPagedParams p{q.data<uint8_t>(), w.data<float>(), cache.data<uint8_t>(), block_table.data<int32_t>(),
                             seq_lens.data<int32_t>(), n, q.dim(1), d, max_pages, cache.dim(0), ld};
  if (dev == Device::CPU)
    for (int64_t b = 0; b < n; ++b) {
      IC_CHECK(p.seq_lens[b] >= 1 && p.seq_lens[b] <= ld, "{}: sequence {} has {} keys, outside [1, {}]", op, b,
               p.seq_lens[b], ld);
      for (int64_t i = 0; i < (p.seq_lens[b] + kIndexerPageTokens - 1) / kIndexerPageTokens; ++i)
        IC_CHECK(p.block_table[b * max_pages + i] >= 0 && p.block_table[b * max_pages + i] < p.n_pages,
                 "{}: sequence {} block {} names page {} of {}", op, b, i, p.block_table[b * max_pages + i],
                 p.n_pages);
    }
  return p;
}

}  // namespace

void indexer_scores_paged(const Tensor& q, const Tensor& w, const Tensor& cache, const Tensor& block_table,
                          const Tensor& seq_lens, Tensor& scores) {
  check_tensor(scores, "indexer scores", DType::F32, q.device(), 2);
  const IndexerPagedParams p =
      check_paged("indexer_scores_paged", q, w, cache, block_table, seq_lens, scores.dim(1));
  IC_CHECK(scores.dim(0) == p.n_seq, "indexer_scores_paged: scores {} need one row per sequence ({})",
           scores.desc(), p.n_seq);
  if (q.device() == Device::CPU) return cpu::indexer_scores_paged_reference(p, scores.data<float>());
#ifdef IC_WITH_CUDA
  cuda::indexer_scores_paged(p, scores.data<float>());
  cuda::mask_score_tails(scores.data<float>(), p.n_seq, p.ld, nullptr, p.seq_lens, 0);
#else
  fail_no_cuda("indexer_scores_paged");
#endif
}

void indexer_topk_paged(const Tensor& q, const Tensor& w, const Tensor& cache, const Tensor& block_table,
                        const Tensor& seq_lens, int64_t max_seq_len, Tensor& topk) {
  const IndexerPagedParams p =
      check_paged("indexer_topk_paged", q, w, cache, block_table, seq_lens, max_seq_len);
  check_topk_out("indexer_topk_paged", topk, p.n_seq, q.device());
  if (q.device() == Device::CPU) {
    std::vector<float> scores(static_cast<size_t>(p.n_seq * p.ld));
    cpu::indexer_scores_paged_reference(p, scores.data());
    TopkParams tp{scores.data(), topk.data<int32_t>(), p.n_seq, p.ld, 0, topk.dim(1)};
    tp.lengths = p.seq_lens;
    return cpu::topk(tp);
  }
#ifdef IC_WITH_CUDA
  cuda::indexer_topk_paged(p, topk.data<int32_t>(), topk.dim(1));
#else
  fail_no_cuda("indexer_topk_paged");
#endif
}

}  // namespace ic::ops
