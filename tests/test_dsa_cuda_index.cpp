// The DSA indexer scores and top-k on the GPU against their CPU references, on fresh random
// inputs: causal, ragged (several sequences in one launch) and paged (decode) scores in fp8 and
// bf16, the radix top-k bit for bit against cpu::topk (one block per row and rows split over
// many blocks), the fused indexer + top-k, and the fronts' shape errors. Every GPU result is
// also compared bitwise with a second run. Skips without a GPU.
//
// Score tolerances (per (t, s)), as in test_dsa_ops.cpp: with A_h = sum_c |q_hc k_c| and
// B = sum_h |w_h| A_h, |gpu - ref| <= k_scale (g B + 2u |ref|), g = gamma'_d + gamma_H (1 + gamma'_d).
// The head sum is f32 FMAs and shuffles (gamma_H, u = 2^-24). The dot products run on tensor
// cores, whose products are exact (e4m3 x e4m3 and bf16 x bf16 fit f32) but whose accumulation
// is not IEEE round-to-nearest f32: bf16 MMA accumulates in f32 with truncation (Fasi et al.,
// "Numerical behavior of NVIDIA tensor cores", 2021), so gamma'_d uses 2u; Hopper's fp8 MMA keeps
// about 14 significant bits in its accumulation (DeepSeek-V3 report, section 3.3.2), so
// gamma'_d uses 2^-13 there.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <cstring>
#include <string>
#include <vector>

#include "op_test_util.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "ops/indexer.h"
#include "ops/topk.h"

namespace ic::ops {
namespace {

using test::Rng;
constexpr double kU = test::kU;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

#define IC_CUDA_OR_SKIP() \
  if (!::ic::cuda_available()) GTEST_SKIP() << "no usable CUDA device (or a CPU-only build)"

double gamma_u(double n, double u) { return n * u / (1.0 - n * u); }

template <typename T>
Tensor to_gpu(const std::vector<T>& v, const Shape& s, DType t) {
  return Tensor::borrow(const_cast<T*>(v.data()), s, t).to(Device::CUDA);
}
template <typename T>
std::vector<T> to_host(const Tensor& t) {
  const Tensor h = t.to(Device::CPU);
  return std::vector<T>(h.data<T>(), h.data<T>() + h.numel());
}
Tensor filled_gpu(const Shape& s, float v) {
  return to_gpu(std::vector<float>(static_cast<size_t>(s.numel()), v), s, DType::F32);
}
Tensor filled_gpu_i32(const Shape& s, int32_t v) {
  return to_gpu(std::vector<int32_t>(static_cast<size_t>(s.numel()), v), s, DType::I32);
}

// ---------------------------------------------------------------------------------------
// Top-k

std::vector<int32_t> cpu_topk(const std::vector<float>& s, int64_t n_q, int64_t stride, int64_t q_pos0, int64_t k,
                              const std::vector<int32_t>* lengths = nullptr) {
  std::vector<int32_t> out(static_cast<size_t>(n_q * k), -7);
  TopkParams p{s.data(), out.data(), n_q, stride, q_pos0, k};
  if (lengths) p.lengths = lengths->data();
  cpu::topk(p);
  return out;
}

// GPU top-k through the front, twice; both runs must equal the CPU's canonical answer bit for bit.
void check_topk(const std::vector<float>& s, int64_t n_q, int64_t stride, int64_t q_pos0, int64_t k,
                const std::vector<int32_t>* lengths = nullptr) {
  SCOPED_TRACE(testing::Message() << "n_q " << n_q << " stride " << stride << " q_pos0 " << q_pos0 << " k " << k
                                  << (lengths ? " ragged" : ""));
  const auto want = cpu_topk(s, n_q, stride, q_pos0, k, lengths);
  const Tensor gs = to_gpu(s, {n_q, stride}, DType::F32);
  for (int run = 0; run < 2; ++run) {
    Tensor out = filled_gpu_i32({n_q, k}, -7);
    if (lengths)
      topk(gs, to_gpu(*lengths, {n_q}, DType::I32), out);
    else
      topk(gs, q_pos0, out);
    const auto got = to_host<int32_t>(out);
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_EQ(got[i], want[i]) << "run " << run << " row " << i / k << " entry " << i % k;
  }
}

TEST(TopkCuda, ManyRowsMatchCpuBitwise) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  // 600 rows: one block per row. Causal rows from 1 to ~5K entries, k around and above them.
  for (int64_t k : {1, 64, 2048}) {
    const int64_t n_q = 600, q_pos0 = 4500, stride = q_pos0 + n_q + 3;
    check_topk(rng.normal(n_q * stride), n_q, stride, q_pos0, k);
  }
  check_topk(rng.normal(300 * 300), 300, 300, 0, 100);  // rows shorter than k, one-token row first
}

TEST(TopkCuda, SplitRowsMatchCpuBitwise) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  // Few rows: each is split over many blocks (decode). 200K and a non-multiple-of-64 length.
  check_topk(rng.normal(200000), 1, 200000, 199999, 2048);
  check_topk(rng.normal(4 * 60001), 4, 60001, 59997, 2048);
  check_topk(rng.normal(2 * 70000, 5.0f), 2, 70000, 69998, 777);
}

TEST(TopkCuda, TiesNegativeZeroAndInfinityFollowTheCanonicalOrder) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t n_q : {1, 300}) {  // split and one-block paths
    const int64_t stride = 50000, q_pos0 = stride - n_q;
    std::vector<float> s(static_cast<size_t>(n_q * stride));
    std::uniform_int_distribution<int> level(0, 15);
    for (auto& x : s) x = 0.25f * static_cast<float>(level(rng.gen) - 8);  // 16 values: heavy ties
    for (size_t i = 0; i < s.size(); i += 97) s[i] = -0.0f;
    for (size_t i = 5; i < s.size(); i += 1013) s[i] = std::numeric_limits<float>::infinity();
    for (size_t i = 7; i < s.size(); i += 501) s[i] = kNegInf;
    check_topk(s, n_q, stride, q_pos0, 2048);
    // Every score equal: the boundary bucket is the whole row until the index bits decide.
    std::fill(s.begin(), s.end(), 1.5f);
    check_topk(s, n_q, stride, q_pos0, 1000);
  }
}

TEST(TopkCuda, RaggedLengthsIncludingEmptyRows) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t n_q : {3, 400}) {
    const int64_t stride = 9000;
    std::vector<int32_t> len(static_cast<size_t>(n_q));
    std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(stride));
    for (auto& l : len) l = d(rng.gen);
    len[0] = 0;
    len[1] = 1;
    len[2] = static_cast<int32_t>(stride);
    check_topk(rng.normal(n_q * stride), n_q, stride, 0, 512, &len);
  }
}

TEST(TopkCuda, FrontRejectsUnsupportedK) {
  IC_CUDA_OR_SKIP();
  const Tensor s = filled_gpu({2, 3000}, 1.0f);
  Tensor out = filled_gpu_i32({2, 2049}, 0);
  EXPECT_THROW(topk(s, 0, out), Error);
}

// ---------------------------------------------------------------------------------------
// Indexer scores

struct HostIndexer {
  DType dt;
  int64_t n_q, heads, dim, n_keys;
  std::vector<uint8_t> q8, k8;      // F8_E4M3
  std::vector<uint16_t> qb, kb;     // BF16
  std::vector<float> w, k_scale;    // w: fp8 with q's scale folded in

  const void* q() const { return dt == DType::BF16 ? static_cast<const void*>(qb.data()) : q8.data(); }
  const void* k() const { return dt == DType::BF16 ? static_cast<const void*>(kb.data()) : k8.data(); }
  double qv(int64_t i) const { return dt == DType::BF16 ? bf16_to_f32(qb[i]) : f8e4m3_to_f32(q8[i]); }
  double kv(int64_t i) const { return dt == DType::BF16 ? bf16_to_f32(kb[i]) : f8e4m3_to_f32(k8[i]); }
  double ks(int64_t s) const { return dt == DType::BF16 ? 1.0 : k_scale[s]; }
  IndexerParams params(int64_t q_pos0) const {
    return {q(), k(), dt == DType::BF16 ? nullptr : k_scale.data(), w.data(), dt, n_q, heads, dim, n_keys, q_pos0};
  }
  Tensor gq() const { return to_gpu(dt == DType::BF16 ? as_bytes(qb) : q8, {n_q, heads, dim}, dt); }
  Tensor gk() const { return to_gpu(dt == DType::BF16 ? as_bytes(kb) : k8, {n_keys, dim}, dt); }
  Tensor gks() const { return dt == DType::BF16 ? Tensor() : to_gpu(k_scale, {n_keys}, DType::F32); }
  Tensor gw() const { return to_gpu(w, {n_q, heads}, DType::F32); }
  static std::vector<uint8_t> as_bytes(const std::vector<uint16_t>& v) {
    std::vector<uint8_t> b(v.size() * 2);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
  }
};

HostIndexer make_indexer(Rng& rng, DType dt, int64_t n_q, int64_t heads, int64_t dim, int64_t n_keys) {
  HostIndexer in{dt, n_q, heads, dim, n_keys};
  const auto q = rng.normal(n_q * heads * dim), k = rng.normal(n_keys * dim, 2.0f);
  const auto w = rng.normal(n_q * heads, 1.0f / std::sqrt(float(heads * dim)));
  if (dt == DType::BF16) {
    in.qb.resize(q.size());
    in.kb.resize(k.size());
    for (size_t i = 0; i < q.size(); ++i) in.qb[i] = f32_to_bf16(q[i]);
    for (size_t i = 0; i < k.size(); ++i) in.kb[i] = f32_to_bf16(k[i]);
    in.w = w;
  } else {
    in.q8.resize(q.size());
    in.k8.resize(k.size());
    in.w.resize(w.size());
    in.k_scale.resize(n_keys);
    quantize_indexer_query(q.data(), w.data(), n_q, heads, dim, in.q8.data(), in.w.data());
    quantize_fp8_rows(k.data(), n_keys, dim, in.k8.data(), in.k_scale.data());
  }
  return in;
}

// The bound of the header comment for query t against key row s of `in`.
double score_tolerance(const HostIndexer& in, int64_t t, int64_t s) {
  const double ua = in.dt == DType::BF16 ? 2 * kU : std::ldexp(1.0, -13);
  const double g = gamma_u(in.dim, ua) + gamma_u(in.heads, kU) * (1 + gamma_u(in.dim, ua));
  double b = 0.0, i_abs = 0.0;
  for (int64_t h = 0; h < in.heads; ++h) {
    double a = 0.0, dot = 0.0;
    for (int64_t c = 0; c < in.dim; ++c) {
      const double x = in.qv((t * in.heads + h) * in.dim + c), y = in.kv(s * in.dim + c);
      a += std::fabs(x * y);
      dot += x * y;
    }
    b += std::fabs(in.w[t * in.heads + h]) * a;
    i_abs += std::fabs(in.w[t * in.heads + h]) * std::max(dot, 0.0);
  }
  return in.ks(s) * (g * b + 2 * kU * i_abs) + 1e-30;
}

// got vs the reference, row t's column j being key start[t] + j; -inf exactly past the row.
void expect_scores_close(const HostIndexer& in, const std::vector<float>& got, const std::vector<float>& ref,
                         const std::vector<int64_t>& start, const std::vector<int64_t>& end) {
  for (int64_t t = 0; t < in.n_q; ++t)
    for (int64_t j = 0; j < in.n_keys; ++j) {
      const size_t i = t * in.n_keys + j;
      if (j >= end[t] - start[t]) {
        ASSERT_EQ(got[i], kNegInf) << "t " << t << " j " << j;
        continue;
      }
      ASSERT_NEAR(got[i], ref[i], score_tolerance(in, t, start[t] + j)) << "t " << t << " j " << j;
    }
}

struct Shape2 {
  int64_t heads, dim;
};
const Shape2 kShapes[] = {{4, 64}, {16, 128}, {32, 128}, {64, 128}, {64, 64}, {20, 64}};

TEST(IndexerCuda, CausalScoresMatchReferenceFp8AndBf16) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (DType dt : {DType::F8_E4M3, DType::BF16})
    for (const auto& sh : kShapes)
      for (auto [n_q, q_pos0] : {std::pair<int64_t, int64_t>{1, 0}, {1, 300}, {70, 130}}) {
        SCOPED_TRACE(testing::Message() << dtype_name(dt) << " H " << sh.heads << " d " << sh.dim << " n_q " << n_q
                                        << " q_pos0 " << q_pos0);
        const auto in = make_indexer(rng, dt, n_q, sh.heads, sh.dim, q_pos0 + n_q + 5);
        std::vector<float> ref(static_cast<size_t>(n_q * in.n_keys));
        cpu::indexer_scores_reference(in.params(q_pos0), ref.data());
        std::vector<int64_t> start(n_q, 0), end(n_q);
        for (int64_t t = 0; t < n_q; ++t) end[t] = q_pos0 + t + 1;
        std::vector<float> first;
        for (int run = 0; run < 2; ++run) {
          Tensor out = filled_gpu({n_q, in.n_keys}, NAN);
          indexer_scores(in.gq(), in.gk(), in.gks(), in.gw(), q_pos0, out);
          const auto got = to_host<float>(out);
          if (run == 0) {
            expect_scores_close(in, got, ref, start, end);
            first = got;
          } else {
            ASSERT_EQ(std::memcmp(got.data(), first.data(), got.size() * 4), 0) << "second run differs";
          }
        }
      }
}

// Three sequences in one launch (lengths 97, 1, 250), each query causal within its sequence.
struct RaggedLayout {
  std::vector<int32_t> start, end;
  int64_t n_keys = 0;
};
RaggedLayout ragged_layout(const std::vector<int64_t>& lens) {
  RaggedLayout r;
  for (int64_t len : lens) {
    for (int64_t i = 0; i < len; ++i) {
      r.start.push_back(static_cast<int32_t>(r.n_keys));
      r.end.push_back(static_cast<int32_t>(r.n_keys + i + 1));
    }
    r.n_keys += len;
  }
  return r;
}

TEST(IndexerCuda, RaggedSequencesInOneLaunchMatchReference) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const RaggedLayout lay = ragged_layout({97, 1, 250});
  const int64_t n_q = static_cast<int64_t>(lay.start.size());
  for (DType dt : {DType::F8_E4M3, DType::BF16})
    for (const Shape2& sh : {Shape2{32, 128}, Shape2{8, 64}}) {
      SCOPED_TRACE(testing::Message() << dtype_name(dt) << " H " << sh.heads << " d " << sh.dim);
      const auto in = make_indexer(rng, dt, n_q, sh.heads, sh.dim, lay.n_keys);
      IndexerParams p = in.params(0);
      p.row_start = lay.start.data();
      p.row_end = lay.end.data();
      std::vector<float> ref(static_cast<size_t>(n_q * in.n_keys));
      cpu::indexer_scores_reference(p, ref.data());
      const Tensor gs = to_gpu(lay.start, {n_q}, DType::I32), ge = to_gpu(lay.end, {n_q}, DType::I32);
      Tensor out = filled_gpu({n_q, in.n_keys}, NAN);
      indexer_scores_ragged(in.gq(), in.gk(), in.gks(), in.gw(), gs, ge, out);
      const auto got = to_host<float>(out);
      expect_scores_close(in, got, ref, std::vector<int64_t>(lay.start.begin(), lay.start.end()),
                          std::vector<int64_t>(lay.end.begin(), lay.end.end()));
      // Fused top-k: bitwise the top-k of the GPU's own scores, twice.
      for (int64_t k : {1, 64, 300}) {
        std::vector<int32_t> len(n_q);
        for (int64_t t = 0; t < n_q; ++t) len[t] = lay.end[t] - lay.start[t];
        const auto want = cpu_topk(got, n_q, in.n_keys, 0, k, &len);
        for (int run = 0; run < 2; ++run) {
          Tensor tk = filled_gpu_i32({n_q, k}, -7);
          indexer_topk_ragged(in.gq(), in.gk(), in.gks(), in.gw(), gs, ge, tk);
          ASSERT_EQ(to_host<int32_t>(tk), want) << "k " << k << " run " << run;
        }
      }
    }
}

TEST(IndexerCuda, FusedCausalTopkIsTopkOfItsScores) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (DType dt : {DType::F8_E4M3, DType::BF16}) {
    const int64_t n_q = 200, q_pos0 = 3000;
    const auto in = make_indexer(rng, dt, n_q, 64, 128, q_pos0 + n_q);
    Tensor scores = filled_gpu({n_q, in.n_keys}, NAN);
    indexer_scores(in.gq(), in.gk(), in.gks(), in.gw(), q_pos0, scores);
    const auto s = to_host<float>(scores);
    for (int64_t k : {16, 2048}) {
      const auto want = cpu_topk(s, n_q, in.n_keys, q_pos0, k);
      Tensor tk = filled_gpu_i32({n_q, k}, -7);
      indexer_topk(in.gq(), in.gk(), in.gks(), in.gw(), q_pos0, tk);
      ASSERT_EQ(to_host<int32_t>(tk), want) << dtype_name(dt) << " k " << k;
    }
  }
}

#ifdef IC_WITH_CUDA
// Query chunks: 200 causal rows selected 37 rows at a time (and ragged rows 50 at a time) give
// the same indices as one chunk.
TEST(IndexerCuda, ChunkedTopkEqualsOneChunk) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const int64_t n_q = 200, q_pos0 = 5000, k = 300;
  const auto in = make_indexer(rng, DType::F8_E4M3, n_q, 32, 128, q_pos0 + n_q);
  const Tensor gq = in.gq(), gk = in.gk(), gks = in.gks(), gw = in.gw();
  IndexerParams p{gq.raw(), gk.raw(), gks.data<float>(), gw.data<float>(), DType::F8_E4M3, n_q, 32, 128, in.n_keys,
                  q_pos0};
  Tensor one = filled_gpu_i32({n_q, k}, -7), many = filled_gpu_i32({n_q, k}, -7);
  cuda::indexer_topk(p, one.data<int32_t>(), k);
  cuda::indexer_topk(p, many.data<int32_t>(), k, 37 * (q_pos0 + n_q) * 4);
  ASSERT_EQ(to_host<int32_t>(one), to_host<int32_t>(many));
  const RaggedLayout lay = ragged_layout({120, 80});
  const auto rin = make_indexer(rng, DType::BF16, 200, 16, 64, lay.n_keys);
  const Tensor rq = rin.gq(), rk = rin.gk(), rw = rin.gw();
  const Tensor gs = to_gpu(lay.start, {200}, DType::I32), ge = to_gpu(lay.end, {200}, DType::I32);
  IndexerParams r{rq.raw(), rk.raw(), nullptr, rw.data<float>(), DType::BF16, 200, 16, 64, lay.n_keys, 0};
  r.row_start = gs.data<int32_t>();
  r.row_end = ge.data<int32_t>();
  Tensor r1 = filled_gpu_i32({200, 64}, -7), r2 = filled_gpu_i32({200, 64}, -7);
  cuda::indexer_topk(r, r1.data<int32_t>(), 64);
  cuda::indexer_topk(r, r2.data<int32_t>(), 64, 50 * lay.n_keys * 4);
  ASSERT_EQ(to_host<int32_t>(r1), to_host<int32_t>(r2));
  // And the ragged top-k agrees with the CPU top-k of the GPU's scores.
  Tensor sc = filled_gpu({200, lay.n_keys}, NAN);
  indexer_scores_ragged(rq, rk, Tensor(), rw, gs, ge, sc);
  std::vector<int32_t> len(200);
  for (int t = 0; t < 200; ++t) len[t] = lay.end[t] - lay.start[t];
  ASSERT_EQ(to_host<int32_t>(r2), cpu_topk(to_host<float>(sc), 200, lay.n_keys, 0, 64, &len));
}
#endif

// Paged decode: pages shuffled across sequences, lengths 1, 64, 65 and 1000.
TEST(IndexerCuda, PagedDecodeMatchesReference) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (const Shape2& sh : {Shape2{64, 128}, Shape2{32, 64}, Shape2{5, 128}}) {
    SCOPED_TRACE(testing::Message() << "H " << sh.heads << " d " << sh.dim);
    const std::vector<int32_t> lens = {1, 64, 65, 1000};
    const int64_t n_seq = 4, d = sh.dim, max_pages = 16, ld = 1000;
    int64_t n_pages = 0;
    for (int32_t l : lens) n_pages += (l + 63) / 64;
    n_pages += 3;  // unused pages
    std::vector<int32_t> perm(static_cast<size_t>(n_pages));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng.gen);
    std::vector<int32_t> table(static_cast<size_t>(n_seq * max_pages), 0);
    // The keys of all sequences as one dense array, to build the pages and the tolerance from.
    const int64_t total = std::accumulate(lens.begin(), lens.end(), int64_t{0});
    HostIndexer keys = make_indexer(rng, DType::F8_E4M3, 1, 1, d, total);
    HostIndexer in = make_indexer(rng, DType::F8_E4M3, n_seq, sh.heads, d, 1);
    const int64_t page_bytes = indexer_page_bytes(d);
    std::vector<uint8_t> cache(static_cast<size_t>(n_pages * page_bytes));
    for (auto& b : cache) b = static_cast<uint8_t>(rng.gen() % 0x7f);  // finite e4m3 junk
    int64_t next = 0, off = 0;
    for (int64_t b = 0; b < n_seq; ++b) {
      for (int64_t i = 0; i < (lens[b] + 63) / 64; ++i) table[b * max_pages + i] = perm[next++];
      for (int64_t s = 0; s < lens[b]; ++s) {
        uint8_t* pg = cache.data() + table[b * max_pages + s / 64] * page_bytes;
        std::memcpy(pg + (s % 64) * d, keys.k8.data() + (off + s) * d, static_cast<size_t>(d));
        std::memcpy(pg + 64 * d + (s % 64) * 4, &keys.k_scale[off + s], 4);
      }
      off += lens[b];
    }
    const IndexerPagedParams p{in.q8.data(), in.w.data(), cache.data(), table.data(), lens.data(),
                               n_seq,        sh.heads,    d,            max_pages,    n_pages, ld};
    std::vector<float> ref(static_cast<size_t>(n_seq * ld));
    cpu::indexer_scores_paged_reference(p, ref.data());
    const Tensor gq = in.gq(), gw = in.gw();
    const Tensor gc = to_gpu(cache, {n_pages, page_bytes}, DType::F8_E4M3);
    const Tensor gt = to_gpu(table, {n_seq, max_pages}, DType::I32), gl = to_gpu(lens, {n_seq}, DType::I32);
    Tensor out = filled_gpu({n_seq, ld}, NAN);
    indexer_scores_paged(gq, gw, gc, gt, gl, out);
    const auto got = to_host<float>(out);
    off = 0;
    for (int64_t b = 0; b < n_seq; ++b) {
      // Tolerance from a one-query view of this sequence against its dense keys.
      HostIndexer view = keys;
      view.n_q = 1;
      view.heads = sh.heads;
      view.q8.assign(in.q8.begin() + b * sh.heads * d, in.q8.begin() + (b + 1) * sh.heads * d);
      view.w.assign(in.w.begin() + b * sh.heads, in.w.begin() + (b + 1) * sh.heads);
      for (int64_t j = 0; j < ld; ++j) {
        const size_t i = b * ld + j;
        if (j >= lens[b]) {
          ASSERT_EQ(got[i], kNegInf) << b << " " << j;
          continue;
        }
        ASSERT_NEAR(got[i], ref[i], score_tolerance(view, 0, off + j)) << "seq " << b << " key " << j;
      }
      off += lens[b];
    }
    for (int64_t k : {1, 64, 2048}) {
      const auto want = cpu_topk(got, n_seq, ld, 0, k, &lens);
      for (int run = 0; run < 2; ++run) {
        Tensor tk = filled_gpu_i32({n_seq, k}, -7);
        indexer_topk_paged(gq, gw, gc, gt, gl, ld, tk);
        ASSERT_EQ(to_host<int32_t>(tk), want) << "k " << k << " run " << run;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Fronts: shape errors (CPU tensors need no GPU) and what the GPU does not compile.

TEST(IndexerFronts, RaggedAndPagedShapeErrors) {
  Rng rng;
  const auto in = make_indexer(rng, DType::F8_E4M3, 4, 8, 64, 10);
  auto cpu_t = [](const auto& v, const Shape& s, DType t) {
    return Tensor::borrow(const_cast<void*>(static_cast<const void*>(v.data())), s, t);
  };
  const Tensor q = cpu_t(in.q8, {4, 8, 64}, DType::F8_E4M3), k = cpu_t(in.k8, {10, 64}, DType::F8_E4M3);
  const Tensor ks = cpu_t(in.k_scale, {10}, DType::F32), w = cpu_t(in.w, {4, 8}, DType::F32);
  std::vector<int32_t> st = {0, 0, 3, 3}, en = {1, 2, 4, 11};  // the last range passes the 10 keys
  Tensor scores = Tensor::zeros({4, 10}, DType::F32);
  EXPECT_THROW(indexer_scores_ragged(q, k, ks, w, cpu_t(st, {4}, DType::I32), cpu_t(en, {4}, DType::I32), scores),
               Error);
  en[3] = 10;
  EXPECT_NO_THROW(
      indexer_scores_ragged(q, k, ks, w, cpu_t(st, {4}, DType::I32), cpu_t(en, {4}, DType::I32), scores));
  EXPECT_THROW(indexer_scores_ragged(q, k, ks, w, cpu_t(st, {3}, DType::I32), cpu_t(en, {4}, DType::I32), scores),
               Error);
  // Paged: page bytes must be 64 x (64 + 4).
  std::vector<uint8_t> cache(2 * 64 * 68, 0);
  std::vector<int32_t> table = {0, 1, 1, 0, 0, 0, 0, 0}, lens = {100, 3, 1, 64};
  Tensor out = Tensor::zeros({4, 128}, DType::F32);
  EXPECT_NO_THROW(indexer_scores_paged(q, w, cpu_t(cache, {2, 64 * 68}, DType::F8_E4M3),
                                       cpu_t(table, {4, 2}, DType::I32), cpu_t(lens, {4}, DType::I32), out));
  EXPECT_THROW(indexer_scores_paged(q, w, cpu_t(cache, {2 * 64 * 68 / 64, 64}, DType::F8_E4M3),
                                    cpu_t(table, {4, 2}, DType::I32), cpu_t(lens, {4}, DType::I32), out),
               Error);
  lens[0] = 129;  // more keys than the 2 pages of the table row
  EXPECT_THROW(indexer_scores_paged(q, w, cpu_t(cache, {2, 64 * 68}, DType::F8_E4M3),
                                    cpu_t(table, {4, 2}, DType::I32), cpu_t(lens, {4}, DType::I32), out),
               Error);
}

TEST(IndexerCuda, UnsupportedShapesAndF32AreClearErrors) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  const auto in = make_indexer(rng, DType::F8_E4M3, 2, 8, 96, 4);  // head_dim 96: not compiled
  Tensor out = filled_gpu({2, 4}, 0.0f);
  try {
    indexer_scores(in.gq(), in.gk(), in.gks(), in.gw(), 0, out);
    FAIL() << "head_dim 96 ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 64 or 128"), std::string::npos) << e.what();
  }
  const std::vector<float> qf(2 * 8 * 64, 1.0f), kf(4 * 64, 1.0f), w(16, 1.0f);
  EXPECT_THROW(indexer_scores(to_gpu(qf, {2, 8, 64}, DType::F32), to_gpu(kf, {4, 64}, DType::F32), Tensor(),
                              to_gpu(w, {2, 8}, DType::F32), 0, out),
               Error);
}

// BF16 on the CPU (fast path against the reference), which the GPU tests compare with.
TEST(IndexerCpuBf16, FastPathMatchesReference) {
  Rng rng;
  SCOPED_TRACE(rng.seed);
  const auto in = make_indexer(rng, DType::BF16, 37, 8, 64, 120);
  std::vector<float> fast(static_cast<size_t>(37 * 120)), ref(fast.size());
  cpu::indexer_scores(in.params(80), fast.data());
  cpu::indexer_scores_reference(in.params(80), ref.data());
  for (int64_t t = 0; t < 37; ++t)
    for (int64_t s = 0; s < 120; ++s) {
      const size_t i = t * 120 + s;
      if (s > 80 + t) {
        ASSERT_EQ(fast[i], kNegInf);
        continue;
      }
      // f32 arithmetic on exact bf16 inputs: the f32 bound of test_dsa_ops.cpp.
      const double g = test::gamma(64) + test::gamma(8) * (1 + test::gamma(64));
      double b = 0.0;
      for (int64_t h = 0; h < 8; ++h) {
        double a = 0.0;
        for (int64_t c = 0; c < 64; ++c) a += std::fabs(in.qv((t * 8 + h) * 64 + c) * in.kv(s * 64 + c));
        b += std::fabs(in.w[t * 8 + h]) * a;
      }
      ASSERT_NEAR(fast[i], ref[i], g * b + kU * std::fabs(ref[i]) + 1e-30) << t << " " << s;
    }
}

}  // namespace
}  // namespace ic::ops
