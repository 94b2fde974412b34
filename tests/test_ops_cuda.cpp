// CUDA operations against the plain CPU references on fresh random inputs. Every call goes
// through the op fronts with tensors on the GPU, so this file also builds without CUDA; each
// test skips when no GPU is usable (always, in a CPU-only build). Outputs are poisoned with NaN
// before each run, so an element the kernel never writes fails the comparison.
//
// Tolerances come from float32 rounding bounds, as in test_ops_cpu.cpp: a length-n sum of
// products in f32 errs by at most gamma_n * sum|a_i b_i| in any summation order, FMA or not,
// gamma_n = n u / (1 - n u), u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms,
// eq. 3.5). GPU summation orders differ from the CPU's, so nothing here is compared bitwise
// against the CPU; each kernel is compared bitwise against a second run of itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "op_test_util.h"
#include "core/device.h"
#include "core/error.h"
#include "core/tensor.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/layer_norm.h"
#include "ops/rms_norm.h"
#include "ops/rope.h"
#include "ops/swiglu.h"
#include "ops/token_logprob.h"

namespace ic::ops {
namespace {

using test::gamma;
using test::kU;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

#define IC_CUDA_OR_SKIP() \
  if (!::ic::cuda_available()) GTEST_SKIP() << "no usable CUDA device (or a CPU-only build)"

using test::Rng;

template <typename T>
Tensor to_gpu(const std::vector<T>& v, const Shape& s, DType t = DType::F32) {
  return Tensor::borrow(const_cast<T*>(v.data()), s, t).to(Device::CUDA);
}

Tensor nan_gpu(const Shape& s) { return to_gpu(std::vector<float>(static_cast<size_t>(s.numel()), kNaN), s); }

std::vector<float> to_host(const Tensor& t) {
  const Tensor h = t.to(Device::CPU);
  return std::vector<float>(h.data<float>(), h.data<float>() + h.numel());
}

TEST(RmsNormCuda, MatchesReference) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t n : {1, 13})
    for (int64_t dim : {1, 7, 64, 576, 1000, 4097}) {
      auto x = rng.normal(n * dim, 3.0f), w = rng.normal(dim);
      std::vector<float> ref(x.size());
      cpu::rms_norm_reference({x.data(), w.data(), ref.data(), n, dim, 1e-5f});
      const Tensor gx = to_gpu(x, {n, dim}), gw = to_gpu(w, {dim});
      Tensor out = nan_gpu({n, dim});
      rms_norm(gx, gw, 1e-5f, out);
      const auto got = to_host(out);
      // The sum of positive squares errs by gamma_dim relatively in any order, halved by the
      // square root; rsqrtf (2 ulp), the mean, eps and the two products add at most 6u: 8u allowed.
      const double rel = gamma(dim) / 2 + 8 * kU;
      for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(got[i], ref[i], rel * std::fabs(ref[i]) + 1e-30) << i;
      // In place (out aliases x), as the model never does but the header allows.
      Tensor inplace = to_gpu(x, {n, dim});
      rms_norm(inplace, gw, 1e-5f, inplace);
      ASSERT_EQ(to_host(inplace), got);
    }
}

TEST(LayerNormCuda, MatchesCpu) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t n : {1, 13, 300})
    for (int64_t dim : {1, 8, 64, 128, 577}) {
      auto x = rng.normal(n * dim, 3.0f), w = rng.normal(dim), b = rng.normal(dim);
      for (float& v : x) v += 2.0f;
      std::vector<float> ref(x.size());
      cpu::layer_norm({x.data(), w.data(), b.data(), ref.data(), n, dim, 1e-6f});
      const Tensor gx = to_gpu(x, {n, dim}), gw = to_gpu(w, {dim}), gb = to_gpu(b, {dim});
      Tensor out = nan_gpu({n, dim});
      layer_norm(gx, gw, gb, 1e-6f, out);
      const auto got = to_host(out);
      for (int64_t r = 0; r < n; ++r) {
        // f32 statistics on the GPU: the mean errs by gamma_dim * mean|x| (plus u|mean|), the
        // centred sum of squares by gamma_dim relatively (halved by the square root, plus
        // rsqrtf's 2 ulp and a few roundings); each output then by those times |w|, plus u|b|.
        double abs_mean = 0, mean = 0, var = 0;
        for (int64_t c = 0; c < dim; ++c) abs_mean += std::fabs(x[r * dim + c]) / dim, mean += x[r * dim + c];
        mean /= dim;
        for (int64_t c = 0; c < dim; ++c) var += (x[r * dim + c] - mean) * (x[r * dim + c] - mean) / dim;
        const double inv = 1.0 / std::sqrt(var + 1e-6);
        const double mean_err = gamma(dim) * abs_mean + kU * std::fabs(mean);
        const double rel_inv = gamma(dim) / 2 + 2 * mean_err * abs_mean * inv * inv + 8 * kU;
        for (int64_t c = 0; c < dim; ++c) {
          const size_t i = static_cast<size_t>(r * dim + c);
          const double centred = std::fabs(x[i] - mean);
          const double tol = std::fabs(w[c]) * ((kU * std::fabs(x[i]) + mean_err) * inv + centred * inv * rel_inv) +
                             4 * kU * (std::fabs(ref[i]) + std::fabs(b[c])) + 1e-30;
          ASSERT_NEAR(got[i], ref[i], tol) << r << "," << c;
        }
      }
      Tensor inplace = to_gpu(x, {n, dim});
      layer_norm(inplace, gw, gb, 1e-6f, inplace);
      ASSERT_EQ(to_host(inplace), got);
    }
}

TEST(TokenLogprobCuda, MatchesCpuAndRepeatsBitwise) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t V : {1, 7, 1000, 49152})
    for (int64_t n : {1, 37}) {
      auto logits = rng.normal(n * V, 4.0f);
      std::vector<int32_t> target(n);
      for (int64_t i = 0; i < n; ++i) target[i] = static_cast<int32_t>(rng.gen() % V);
      std::vector<float> ref(n);
      cpu::token_logprob({logits.data(), target.data(), ref.data(), n, V});
      const Tensor gl = to_gpu(logits, {n, V});
      const Tensor ht = Tensor::borrow(target.data(), {n}, DType::I32);
      Tensor out = nan_gpu({n});
      token_logprob(gl, ht, out);
      const auto got = to_host(out);
      for (int64_t i = 0; i < n; ++i) {
        const float* row = logits.data() + i * V;
        float mx = row[0];
        for (int64_t v = 0; v < V; ++v) mx = std::max(mx, row[v]);
        double spread = 0, sum = 0;
        for (int64_t v = 0; v < V; ++v) {
          spread = std::max(spread, static_cast<double>(mx) - row[v]);
          sum += std::exp(static_cast<double>(row[v]) - mx);
        }
        // f32 on the GPU: x - max rounds by u|x - max| (so exp by that relatively), expf adds
        // 2 ulp (up to 4u relatively); each thread sums ceil(V/256) terms, then 5 warp levels and
        // 8 warps: gamma of that count relatively. log(sum) carries the sum's relative error plus
        // an ulp; the two subtractions round at u of their operands.
        const double terms = static_cast<double>((V + 255) / 256 + 5 + 8);
        const double rel_sum = gamma(static_cast<int64_t>(terms)) + (spread + 4) * kU;
        const double tol = 1.01 * rel_sum + 3 * kU * (std::fabs(row[target[i]]) + std::fabs(mx) + std::log(sum) + std::fabs(ref[i])) + 1e-30;
        ASSERT_NEAR(got[i], ref[i], tol) << "V " << V << " row " << i;
      }
      // Targets already on the device, and a second run: the same bits.
      Tensor out2 = nan_gpu({n});
      token_logprob(gl, ht.to(Device::CUDA), out2);
      ASSERT_EQ(to_host(out2), got);
    }
}

TEST(RopeCuda, MatchesReferenceForBothStylesAndPartialRotation) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (RopeStyle style : {RopeStyle::kAdjacent, RopeStyle::kHalf})
    for (int64_t hd : {64, 128})
      for (int64_t rot : {hd, int64_t{32}})
        for (int64_t n : {1, 9}) {
          const int64_t heads = 3, half = rot / 2;
          auto x = rng.normal(n * heads * hd);
          std::vector<int32_t> pos(n);
          for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(rng.gen() % 200000);
          auto ref = x;
          cpu::rope_reference({ref.data(), pos.data(), n, heads, hd, heads * hd, rot, 100000.0f, style});
          Tensor gx = to_gpu(x, {n, heads, hd});
          rope(gx, to_gpu(pos, {n}, DType::I32), rot, 100000.0f, style);
          const auto got = to_host(gx);
          for (int64_t t = 0; t < n * heads; ++t)
            for (int64_t c = 0; c < hd; ++c) {
              const size_t i = t * hd + c;
              if (c >= rot) {
                ASSERT_EQ(got[i], x[i]) << "dims past rot_dim are untouched";
                continue;
              }
              // Partner of dim c in its rotating pair.
              const int64_t in_pair = style == RopeStyle::kAdjacent ? (c ^ 1) : (c < half ? c + half : c - half);
              const double pair = std::fabs(x[i]) + std::fabs(x[t * hd + in_pair]);
              // cos and sin rounded to f32 (u each), two products and a sum (2u, FMA or not);
              // the reference's own rounding to f32 adds u/2 of the result: 4u allowed on the pair.
              ASSERT_NEAR(got[i], ref[i], 4 * kU * pair + kU * std::fabs(ref[i])) << i;
            }
        }
}

TEST(SwigluCuda, MatchesReferenceAlsoInPlace) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  for (int64_t n : {1, 4099}) {
    auto g = rng.normal(n, 4.0f), u = rng.normal(n);
    std::vector<float> ref(n);
    cpu::swiglu_reference({g.data(), u.data(), ref.data(), n});
    const Tensor gg = to_gpu(g, {n}), gu = to_gpu(u, {n});
    Tensor out = nan_gpu({n});
    swiglu(gg, gu, out);
    const auto got = to_host(out);
    // expf (2 ulp), the sum, the division and the product (u each): 6u, 8u allowed as on the CPU.
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(got[i], ref[i], 8 * kU * std::fabs(ref[i]) + 1e-30) << g[i];
    Tensor inplace = to_gpu(g, {n});  // out aliases gate, as the model calls it
    swiglu(inplace, gu, inplace);
    ASSERT_EQ(to_host(inplace), got);
  }
}

TEST(AddInplaceCuda, IsExactFloatAddition) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  for (int64_t n : {1, 100003}) {
    auto a = rng.normal(n), b = rng.normal(n);
    Tensor ga = to_gpu(a, {n});
    add_inplace(ga, to_gpu(b, {n}));
    const auto got = to_host(ga);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], a[i] + b[i]) << i;  // one correctly rounded add
  }
}

TEST(KvStoreCuda, WritesHeadMajorRowsAndNothingElse) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  const int64_t n = 5, heads = 3, hd = 64, cap = 16, pos0 = 7;
  auto src = rng.normal(n * heads * hd);
  Tensor cache = to_gpu(std::vector<float>(heads * cap * hd, -7.0f), {heads, cap, hd});
  kv_store(to_gpu(src, {n, heads, hd}), cache, pos0);
  const auto got = to_host(cache);
  for (int64_t g = 0; g < heads; ++g)
    for (int64_t p = 0; p < cap; ++p)
      for (int64_t c = 0; c < hd; ++c) {
        const float want = p >= pos0 && p < pos0 + n ? src[((p - pos0) * heads + g) * hd + c] : -7.0f;
        ASSERT_EQ(got[(g * cap + p) * hd + c], want) << g << " " << p << " " << c;
      }
}

// y = x W^T through cuBLAS in f32: each element within gamma_{n_in} * sum_i |x_i w_i| of the
// exact value, in any order (the f64 reference's own rounding adds u/2 of |y|). TF32 would miss
// this by two orders of magnitude, so the test also guards the compute type.
TEST(LinearCuda, MatchesFloat64Reference) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  struct Case { int64_t n_tok, n_out, n_in; };
  for (const Case c : {Case{1, 576, 576}, Case{7, 1536, 576}, Case{37, 576, 1536}, Case{3, 17, 33},
                       Case{4, 49152, 576}}) {
    auto w = rng.normal(c.n_out * c.n_in, 0.05f), x = rng.normal(c.n_tok * c.n_in);
    const LinearWeight lw = LinearWeight::load(DType::F32, w.data(), c.n_out, c.n_in, Device::CUDA);
    Tensor y = nan_gpu({c.n_tok, c.n_out});
    linear(lw, to_gpu(x, {c.n_tok, c.n_in}), y);
    const auto got = to_host(y);
    double worst = 0;
    for (int64_t t = 0; t < c.n_tok; ++t)
      for (int64_t o = 0; o < c.n_out; ++o) {
        double acc = 0, mag = 0;
        for (int64_t i = 0; i < c.n_in; ++i) {
          const double p = double(x[t * c.n_in + i]) * w[o * c.n_in + i];
          acc += p;
          mag += std::fabs(p);
        }
        const double err = std::fabs(got[t * c.n_out + o] - acc);
        ASSERT_LE(err, gamma(c.n_in) * mag + kU * std::fabs(acc)) << t << " " << o;
        worst = std::max(worst, err / (gamma(c.n_in) * mag));
      }
    std::printf("[ linear %lldx%lldx%lld ] worst error / bound = %.3f\n", (long long)c.n_tok, (long long)c.n_out,
                (long long)c.n_in, worst);
  }
}

// Bound for attention output element (i, h, c) against the double reference. Scores: a length-d
// f32 dot product and the scale multiply err by delta <= gamma_{d+1} * scale * d * max|q| max|k|;
// that perturbs each softmax weight by at most 2 delta relatively. expf (2 ulp), the online
// rescalings (one per 32-key tile), the running sum over n keys and the weighted sum of v add at
// most (n + 8) u relatively. Output error <= 2 max|v| (2 delta + (n + 8) u); the log-sum-exp errs
// by at most delta + (n + 8) u + u |lse|.
void check_attention(Rng& rng, int64_t n_q, int64_t q_pos0, int64_t heads, int64_t kv_heads, int64_t hd, float sd) {
  SCOPED_TRACE(testing::Message() << "n_q " << n_q << " q_pos0 " << q_pos0 << " heads " << heads << "/" << kv_heads
                                  << " head_dim " << hd);
  const int64_t cap = q_pos0 + n_q + 5;
  auto q = rng.normal(n_q * heads * hd, sd), k = rng.normal(kv_heads * cap * hd, sd),
       v = rng.normal(kv_heads * cap * hd);
  // Positions past the last query are not part of the context: NaN there must never be read.
  for (int64_t g = 0; g < kv_heads; ++g)
    for (int64_t p = q_pos0 + n_q; p < cap; ++p)
      for (int64_t c = 0; c < hd; ++c) k[(g * cap + p) * hd + c] = v[(g * cap + p) * hd + c] = kNaN;
  std::vector<float> ref(q.size()), lse_ref(n_q * heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  cpu::attention_reference(
      {q.data(), k.data(), v.data(), ref.data(), lse_ref.data(), n_q, heads, kv_heads, hd, cap, q_pos0, scale});

  const Tensor gq = to_gpu(q, {n_q, heads, hd}), gk = to_gpu(k, {kv_heads, cap, hd}), gv = to_gpu(v, {kv_heads, cap, hd});
  Tensor out = nan_gpu({n_q, heads, hd}), lse = nan_gpu({n_q, heads});
  attention(gq, gk, gv, q_pos0, scale, out, &lse);
  const auto got = to_host(out), got_lse = to_host(lse);

  double vmax = 0, qmax = 0, kmax = 0;
  for (int64_t g = 0; g < kv_heads; ++g)
    for (int64_t p = 0; p < q_pos0 + n_q; ++p)
      for (int64_t c = 0; c < hd; ++c) {
        vmax = std::max(vmax, double(std::fabs(v[(g * cap + p) * hd + c])));
        kmax = std::max(kmax, double(std::fabs(k[(g * cap + p) * hd + c])));
      }
  for (float x : q) qmax = std::max(qmax, double(std::fabs(x)));
  const double delta = gamma(hd + 1) * scale * hd * qmax * kmax;
  const double n = q_pos0 + n_q;
  const double tol = 2 * vmax * (2 * delta + (n + 8) * kU);
  double worst = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    ASSERT_NEAR(got[i], ref[i], tol) << "element " << i;
    worst = std::max(worst, std::fabs(double(got[i]) - ref[i]));
  }
  for (size_t i = 0; i < lse_ref.size(); ++i)
    ASSERT_NEAR(got_lse[i], lse_ref[i], delta + (n + 8) * kU + kU * std::fabs(lse_ref[i])) << "row " << i;
  std::printf("[ attention n_q %lld pos0 %lld heads %lld/%lld d %lld ] max |err| %.2e, bound %.2e\n", (long long)n_q,
              (long long)q_pos0, (long long)heads, (long long)kv_heads, (long long)hd, worst, tol);

  // Same inputs again, without the log-sum-exp: the same kernels in the same order, so bitwise.
  Tensor out2 = nan_gpu({n_q, heads, hd});
  attention(gq, gk, gv, q_pos0, scale, out2);
  ASSERT_EQ(to_host(out2), got) << "attention is not reproducible";
}

TEST(AttentionCuda, MatchesReferenceAcrossShapes) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  check_attention(rng, 1, 0, 9, 3, 64, 1.0f);        // first token
  check_attention(rng, 1, 300, 9, 3, 64, 1.0f);      // decode step (split over keys)
  check_attention(rng, 1, 4000, 9, 3, 64, 1.0f);     // decode after a long cached prefix
  check_attention(rng, 37, 0, 9, 3, 64, 1.0f);       // prefill, not a multiple of the 16-row or 32-key tiles
  check_attention(rng, 513, 0, 9, 3, 64, 1.0f);      // the model's chunk plus one, no split
  check_attention(rng, 20, 17, 4, 1, 32, 2.0f);      // after a cached prefix, group of 4 (MQA)
  check_attention(rng, 64, 0, 2, 2, 128, 3.0f);      // group of 1 (MHA), peaked softmax
  check_attention(rng, 200, 0, 2, 1, 64, 1.0f);      // split keys: early rows see none of the later splits
  check_attention(rng, 100, 1000, 8, 2, 128, 1.0f);  // group of 4, prefill after a prefix, split keys
}

// The rounding bounds above grow with the context (n u), so at 4000 keys they would not notice one
// key too many or too few. Here every key of a head is the same vector, so each query's softmax
// is exactly uniform over the keys it may see, and marker dims of v make the mask visible:
// v[., 0] = 1 gives 1, v[s, 1] = [s == newest visible] and v[s, 2] = [s == 0] give 1/(p + 1)
// at position p, v[s, 3] = [s > p] (a key past the row) gives 0. One key missing or extra moves
// these by a whole 1/(p + 1) or more, far beyond the rounding of a sum of equal weights.
TEST(AttentionCuda, UniformScoresCountTheVisibleKeys) {
  IC_CUDA_OR_SKIP();
  Rng rng;
  SCOPED_TRACE(rng.seed);
  struct Case { int64_t n_q, q_pos0, heads, kv_heads; };
  for (const Case c : {Case{1, 0, 9, 3}, Case{1, 4000, 9, 3}, Case{513, 0, 9, 3}, Case{200, 0, 2, 1},
                       Case{100, 1000, 8, 2}, Case{37, 17, 4, 1}}) {
    SCOPED_TRACE(testing::Message() << "n_q " << c.n_q << " q_pos0 " << c.q_pos0);
    const int64_t hd = 64, cap = c.q_pos0 + c.n_q, n = cap;
    auto q = rng.normal(c.n_q * c.heads * hd), key = rng.normal(c.kv_heads * hd), v = rng.normal(c.kv_heads * cap * hd);
    std::vector<float> k(c.kv_heads * cap * hd);
    for (int64_t g = 0; g < c.kv_heads; ++g)
      for (int64_t s = 0; s < cap; ++s)
        for (int64_t d = 0; d < hd; ++d) k[(g * cap + s) * hd + d] = key[g * hd + d];
    const Tensor gq = to_gpu(q, {c.n_q, c.heads, hd}), gk = to_gpu(k, {c.kv_heads, cap, hd});
    // Marker dims need the newest position per query, so run one query at a time for dim 1 and
    // 3, and all queries at once for dims 0 and 2 (the shapes under test).
    for (int64_t g = 0; g < c.kv_heads; ++g)
      for (int64_t s = 0; s < cap; ++s) {
        v[(g * cap + s) * hd + 0] = 1.0f;
        v[(g * cap + s) * hd + 2] = s == 0 ? 1.0f : 0.0f;
      }
    Tensor out = nan_gpu({c.n_q, c.heads, hd});
    attention(gq, gk, to_gpu(v, {c.kv_heads, cap, hd}), c.q_pos0, 0.125f, out);
    const auto got = to_host(out);
    for (int64_t i = 0; i < c.n_q; ++i)
      for (int64_t h = 0; h < c.heads; ++h) {
        const double visible = c.q_pos0 + i + 1;
        const float* o = got.data() + (i * c.heads + h) * hd;
        ASSERT_NEAR(o[0], 1.0, gamma(n + 8)) << "weights do not sum to one, query " << i;
        ASSERT_NEAR(o[2] * visible, 1.0, gamma(n + 8)) << "key 0 weight, query " << i;
      }
    // Newest key and keys past the row: marker depends on the row, so one decode-style call per
    // sampled query position (first, middle, last), each over the same cache.
    for (int64_t i : {int64_t{0}, c.n_q / 2, c.n_q - 1}) {
      const int64_t pos = c.q_pos0 + i;
      for (int64_t g = 0; g < c.kv_heads; ++g)
        for (int64_t s = 0; s < cap; ++s) {
          v[(g * cap + s) * hd + 1] = s == pos ? 1.0f : 0.0f;
          v[(g * cap + s) * hd + 3] = s > pos ? 1.0f : 0.0f;
        }
      Tensor out1 = nan_gpu({c.n_q, c.heads, hd});
      attention(gq, gk, to_gpu(v, {c.kv_heads, cap, hd}), c.q_pos0, 0.125f, out1);
      const auto got1 = to_host(out1);
      for (int64_t h = 0; h < c.heads; ++h) {
        const float* o = got1.data() + (i * c.heads + h) * hd;
        ASSERT_NEAR(o[1] * (pos + 1.0), 1.0, gamma(n + 8)) << "newest key weight, query " << i;
        ASSERT_EQ(o[3], 0.0f) << "a key past query " << i << " was attended";
      }
    }
  }
}

TEST(AttentionCuda, UnsupportedHeadDimSaysWhatIsSupported) {
  IC_CUDA_OR_SKIP();
  const Tensor q = nan_gpu({1, 2, 48}), k = nan_gpu({1, 4, 48});
  Tensor out = nan_gpu({1, 2, 48});
  try {
    attention(q, k, k, 0, 1.0f, out);
    FAIL() << "head_dim 48 must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("supported: 32, 64, 128"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ic::ops
