// Indexer distillation: teacher targets, the KL loss and its hand-written backward, the
// multi-layer identity, AdamW. Tolerances are derived (Higham eq. 3.5: a length-L sum errs by
// at most gamma_L * sum|terms|, gamma_L = L u / (1 - L u)), never picked to pass.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"
#include "indexcache/adamw.h"
#include "indexcache/distill_loss.h"
#include "distill_test_util.h"
#include "indexcache/teacher.h"

namespace ic {
namespace {

using namespace distill_test;

constexpr double kU32 = 5.9604644775390625e-8;      // 2^-24
constexpr double kU64 = 1.1102230246251565e-16;     // 2^-53
double gamma(double n, double u) { return n * u / (1.0 - n * u); }

Tensor* tensor_of(IndexerWeights& w, int i) {
  Tensor* ts[] = {&w.wq, &w.wk, &w.k_norm, &w.k_bias, &w.wproj};
  return ts[i];
}
const Tensor* tensor_of(const IndexerWeights& w, int i) { return tensor_of(const_cast<IndexerWeights&>(w), i); }
const char* kNames[] = {"wq", "wk", "k_norm", "k_bias", "wproj"};


// ---------------------------------------------------------------------------------------
// Gradient vs central finite differences of the double reference.
//
// Step: the FD of a loss f computed with absolute rounding error kappa errs by
// trunc + kappa / h with trunc = h^2 |f'''| / 6; h = 2^-16 (~1.5e-5) is near the optimum
// (3 kappa / |f'''|)^(1/3) for kappa ~ 1e-14 and |f'''| ~ 10, and exact in float: theta +- h
// and theta +- 2h are representable for |theta| < 64 unless they cross a binade (checked;
// such elements are skipped and counted). trunc is not guessed: Richardson,
// D(2h) - D(h) = 3 c h^2 + O(h^4), so trunc(D(h)) ~= |D(2h) - D(h)| / 3 (x2 for the h^4 rest).
// kappa = gamma_L(2^-53) * S, L = 4 (D + d + H + n) for the chained reductions plus a few
// ulps of exp/log/rope per step, S = sum_t (2 max_s |I[t, s]| + 1 + max |log p|) bounds the
// magnitudes entering each row's KL. The reference gradient is rounded to f32: + u32 |g|.
// ReLU kinks: FD is meaningless across a kink. An element is skipped when any
// pre-activation a = q . k changes sign between theta - 2h and theta + 2h (the independent
// forward above evaluates all a at both ends); smoothness makes a double crossing within 4h
// impossible at these magnitudes. At most 5% of elements may be skipped.
void check_gradient_fd(const IndexerConfig& cfg, bool sparse, uint32_t seed) {
  std::mt19937 gen(seed);
  const int64_t n = 13, D = 24;
  IndexerWeights w = random_weights(cfg, D, gen);
  DistillInput in{random_tensor({n, D}, gen, 1.0f), random_target(n, gen), Tensor()};
  if (sparse) {  // 6 slots: random indices in [-1, n), duplicates and future indices included
    in.selected = Tensor::empty({n, 6}, DType::I32);
    std::uniform_int_distribution<int> u(-1, static_cast<int>(n) - 1);
    for (int64_t i = 0; i < in.selected.numel(); ++i) in.selected.data<int32_t>()[i] = u(gen);
    in.selected.data<int32_t>()[0] = 0;  // row 0 has a non-empty support
  }
  IndexerWeights g = IndexerWeights::zeros(cfg, D);
  const DistillStats st = distill_loss_reference(cfg, w, in, &g);
  ASSERT_GT(st.loss, 0.0);

  const Forward f0 = forward(cfg, w, in.x);
  double S = 0.0, max_log = 0.0;
  for (int64_t i = 0; i < n * n; ++i)
    if (in.p.data<float>()[i] > 0) max_log = std::max(max_log, -std::log(static_cast<double>(in.p.data<float>()[i])));
  for (int64_t t = 0; t < n; ++t) {
    double m = 0.0;
    for (int64_t s = 0; s <= t; ++s) m = std::max(m, std::abs(f0.I[t * n + s]));
    S += 2 * m + 1 + max_log;
  }
  const double kappa = gamma(4.0 * (D + cfg.head_dim + cfg.n_heads + n), kU64) * S;
  const double h = std::ldexp(1.0, -16);
  const auto loss_at = [&](IndexerWeights& wp) { return distill_loss_reference(cfg, wp, in, nullptr).loss; };

  int64_t checked = 0, skipped = 0;
  double worst_ratio = 0.0, worst_err = 0.0;
  for (int i = 0; i < 5; ++i) {
    Tensor* t = tensor_of(w, i);
    for (int64_t e = 0; e < t->numel(); ++e) {
      float& theta = t->data<float>()[e];
      const float th0 = theta;
      const float vals[4] = {th0 - 2 * static_cast<float>(h), th0 - static_cast<float>(h),
                             th0 + static_cast<float>(h), th0 + 2 * static_cast<float>(h)};
      const double steps[4] = {-2 * h, -h, h, 2 * h};
      bool exact = true;
      for (int j = 0; j < 4; ++j) exact &= static_cast<double>(vals[j]) - th0 == steps[j];
      bool kink = false;
      if (i < 4) {
        theta = vals[0];
        const Forward lo = forward(cfg, w, in.x);
        theta = vals[3];
        const Forward hi = forward(cfg, w, in.x);
        for (size_t j = 0; j < lo.a.size(); ++j) kink |= (lo.a[j] > 0) != (hi.a[j] > 0) || (lo.a[j] > 0) != (f0.a[j] > 0);
      }
      if (!exact || kink) {
        theta = th0;
        ++skipped;
        continue;
      }
      double fv[4];
      for (int j = 0; j < 4; ++j) {
        theta = vals[j];
        fv[j] = loss_at(w);
      }
      theta = th0;
      const double d1 = (fv[2] - fv[1]) / (2 * h), d2 = (fv[3] - fv[0]) / (4 * h);
      const double gv = tensor_of(g, i)->data<float>()[e];
      const double tol = 2 * std::abs(d2 - d1) / 3 + kappa / h + kU32 * std::abs(gv);
      const double err = std::abs(gv - d1);
      EXPECT_LE(err, tol) << kNames[i] << "[" << e << "] grad " << gv << " fd " << d1 << " fd(2h) " << d2;
      worst_ratio = std::max(worst_ratio, err / tol);
      worst_err = std::max(worst_err, err);
      ++checked;
    }
  }
  EXPECT_LE(skipped * 20, checked + skipped) << "too many elements skipped near kinks";
  std::printf("  FD %s %s: %ld checked, %ld skipped, max |g - fd| %.2e, max err/tol %.3f (kappa/h %.1e)\n",
              ops::rope_style_name(cfg.rope_style).data(), sparse ? "sparse" : "dense", static_cast<long>(checked),
              static_cast<long>(skipped), worst_err, worst_ratio, kappa / h);
}

TEST(DistillGrad, MatchesFiniteDifferencesDense) {
  for (auto style : {ops::RopeStyle::kHalf, ops::RopeStyle::kAdjacent}) check_gradient_fd(small_config(style), false, 11);
}
TEST(DistillGrad, MatchesFiniteDifferencesSparse) {
  for (auto style : {ops::RopeStyle::kHalf, ops::RopeStyle::kAdjacent}) check_gradient_fd(small_config(style), true, 12);
}


// ---------------------------------------------------------------------------------------
// f32 fast path vs the double reference.
// Rounding: every quantity passes through a chain of f32 reductions of total length
// L = D (projections) + 2d (q.k, LayerNorm) + H (head sum) + 2n (softmax sum, dq/dk sums)
// + n (weight-gradient sum over tokens); the scores' absolute error ~ gamma_L |I| enters the
// softmax, amplified by (1 + max |I|). Per tensor, normwise:
//   ||g_fast - g_ref|| <= 4 gamma_L (1 + max|I|) ||g_ref|| + flips,
// (4: the forward and backward chains each, rounded twice). ReLU kinks: a pre-activation
// within eps_a = gamma_{2(D+d)} * 4 max|q| max|k| of 0 may take the other ReLU branch in f32;
// each such flip moves a gradient by at most |dL/dI| (<= 1) * max|w| * max(|q|, |k|) * max|x|
// * (1 + 2 max|gamma| max(1/sigma)) (the LayerNorm Jacobian). flips = N_risky times that.
// Loss: |fast - ref| <= 4 gamma_L sum_t (1 + 2 max_s |I[t, s]|).
void check_fast_vs_reference(const IndexerConfig& cfg, int64_t n, int64_t D, bool sparse, uint32_t seed) {
  std::mt19937 gen(seed);
  IndexerWeights w = random_weights(cfg, D, gen);
  DistillInput in{random_tensor({n, D}, gen, 1.0f), random_target(n, gen), Tensor()};
  if (sparse) {
    const int64_t k = std::max<int64_t>(4, n / 4);
    in.selected = Tensor::empty({n, k}, DType::I32);
    std::uniform_int_distribution<int> u(-1, static_cast<int>(n) - 1);
    for (int64_t i = 0; i < in.selected.numel(); ++i) in.selected.data<int32_t>()[i] = u(gen);
  }
  IndexerWeights gf = IndexerWeights::zeros(cfg, D), gr = IndexerWeights::zeros(cfg, D);
  const DistillStats sf = distill_loss(cfg, w, in, &gf);
  const DistillStats sr = distill_loss_reference(cfg, w, in, &gr);

  const Forward f = forward(cfg, w, in.x);
  // The tolerance scales and the ReLU-kink budget (tests/distill_test_util.h).
  const ErrorScales es = error_scales(cfg, w, in.x, in.p, in.selected, f, kU32);
  const double max_I = es.max_I, loss_scale = es.loss_scale, max_x = es.max_x, max_gamma = es.max_gamma;
  const double flip = es.flip;
  const int64_t risky = es.risky;
  const double gL = gamma(D + 3.0 * cfg.head_dim + cfg.n_heads + 3.0 * n, kU32);

  EXPECT_EQ(sf.rows, sr.rows);
  EXPECT_NEAR(sf.loss, sr.loss, 4 * gL * loss_scale);
  std::printf("  fast vs ref n %ld D %ld %s: loss %.6f vs %.6f (bound %.1e), risky kinks %ld\n", static_cast<long>(n),
              static_cast<long>(D), sparse ? "sparse" : "dense", sf.loss, sr.loss, 4 * gL * loss_scale,
              static_cast<long>(risky));
  for (int i = 0; i < 5; ++i) {
    const double err = frob_diff(*tensor_of(gf, i), *tensor_of(gr, i)), ref = frob(*tensor_of(gr, i));
    const double tol = 4 * gL * (1 + max_I) * ref + flip;
    EXPECT_LE(err, tol) << kNames[i];
    EXPECT_GT(ref, 0.0) << kNames[i];
    std::printf("    %-6s |ref| %.3e  |fast - ref| %.2e  rel %.2e  (tol rel %.2e)\n", kNames[i], ref, err, err / ref,
                tol / ref);
  }
  // Recall: both use the same top-k rule; the f32 scores may reorder near-ties only, so each
  // row's recall can differ by at most the p-mass of the entries whose scores lie within the
  // f32 error of the k-th score. Checked loosely here (both in [0, 1]) and exactly below.
  EXPECT_GE(sf.recall(), 0.0);
  EXPECT_LE(sf.recall(), 1.0 + 1e-9);
}


TEST(DistillFast, MatchesReferenceDense) {
  for (auto style : {ops::RopeStyle::kHalf, ops::RopeStyle::kAdjacent})
    check_fast_vs_reference(mid_config(style), 150, 80, false, 21);
  check_fast_vs_reference(small_config(ops::RopeStyle::kHalf), 13, 24, false, 22);  // tails everywhere
}
TEST(DistillFast, MatchesReferenceSparse) {
  for (auto style : {ops::RopeStyle::kHalf, ops::RopeStyle::kAdjacent})
    check_fast_vs_reference(mid_config(style), 150, 80, true, 23);
}

TEST(DistillFast, BitwiseIndependentOfThreadCount) {
  const IndexerConfig cfg = mid_config(ops::RopeStyle::kHalf);
  std::mt19937 gen(31);
  const int64_t n = 100, D = 64;
  IndexerWeights w = random_weights(cfg, D, gen);
  DistillInput in{random_tensor({n, D}, gen, 1.0f), random_target(n, gen), Tensor()};
  const int before = omp_get_max_threads();
  IndexerWeights g1 = IndexerWeights::zeros(cfg, D), g2 = IndexerWeights::zeros(cfg, D);
  omp_set_num_threads(1);
  const DistillStats s1 = distill_loss(cfg, w, in, &g1);
  omp_set_num_threads(3);
  const DistillStats s2 = distill_loss(cfg, w, in, &g2);
  omp_set_num_threads(before);
  EXPECT_EQ(s1.loss, s2.loss);
  EXPECT_EQ(s1.recall_sum, s2.recall_sum);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(0, std::memcmp(tensor_of(g1, i)->raw(), tensor_of(g2, i)->raw(), tensor_of(g1, i)->nbytes())) << kNames[i];
}

// Loss >= 0 always, and ~0 when p is the indexer's own softmax. p = f32(softmax(I)) differs
// from q by a relative u32 per entry plus the renormalisation: KL(p||q) ~ sum q delta^2 / 2
// <= 2 u32^2 per row; the double reference's own rounding adds gamma_{4(D+d+H+n)}(2^-53) per
// unit of sum_t (1 + 2 max |I| + max|log p|). The f32 fast path sees its own scores, which
// differ from the double ones by delta_I ~ gamma_L (1 + max|I|) (above), giving KL <= n delta_I^2
// per ... bounded here by n * (2 delta_I)^2 + the loss-rounding bound of the fast/ref test.
TEST(DistillLoss, NonNegativeAndZeroOnOwnScores) {
  const int64_t n = 40, D = 32;
  for (auto style : {ops::RopeStyle::kHalf, ops::RopeStyle::kAdjacent}) {
    const IndexerConfig cfg = mid_config(style);
    std::mt19937 gen(41);
    IndexerWeights w = random_weights(cfg, D, gen);
    const Tensor x = random_tensor({n, D}, gen, 1.0f);
    EXPECT_GE(distill_loss(cfg, w, {x, random_target(n, gen), Tensor()}, nullptr).loss, 0.0);
    EXPECT_GE(distill_loss_reference(cfg, w, {x, random_target(n, gen), Tensor()}, nullptr).loss, 0.0);
    const Forward f = forward(cfg, w, x);
    Tensor p = Tensor::zeros({n, n}, DType::F32);
    double max_I = 0.0, S = 0.0;
    for (int64_t t = 0; t < n; ++t) {
      double m = -INFINITY, z = 0.0, mi = 0.0;
      for (int64_t s = 0; s <= t; ++s) m = std::max(m, f.I[t * n + s]), mi = std::max(mi, std::abs(f.I[t * n + s]));
      for (int64_t s = 0; s <= t; ++s) z += std::exp(f.I[t * n + s] - m);
      for (int64_t s = 0; s <= t; ++s) p.data<float>()[t * n + s] = static_cast<float>(std::exp(f.I[t * n + s] - m) / z);
      max_I = std::max(max_I, mi);
      S += 1 + 4 * mi + std::log(static_cast<double>(t + 1));  // |log p| <= |I - lse| <= 2 max|I| + log(t+1)
    }
    const double ref = distill_loss_reference(cfg, w, {x, p, Tensor()}, nullptr).loss;
    const double ref_bound = n * 2 * kU32 * kU32 + gamma(4.0 * (D + cfg.head_dim + cfg.n_heads + n), kU64) * S;
    EXPECT_LE(std::abs(ref), ref_bound);
    const double gL = gamma(D + 3.0 * cfg.head_dim + cfg.n_heads + 3.0 * n, kU32);
    const double dI = 4 * gL * (1 + max_I);
    const double fast = distill_loss(cfg, w, {x, p, Tensor()}, nullptr).loss;
    const double fast_bound = n * 4 * dI * dI + 4 * gL * S;
    EXPECT_GE(fast, -fast_bound);
    EXPECT_LE(fast, fast_bound);
    std::printf("  own-score KL: reference %.2e (bound %.1e), fast %.2e (bound %.1e)\n", ref, ref_bound, fast, fast_bound);
  }
}

// Recall on a hand-made case: p puts mass 0.6 on the row's best-scoring key and 0.4 on its
// worst (t >= topk), so recall = 0.6 exactly for those rows and 1 for rows with t < topk.
TEST(DistillLoss, RecallOnConstructedTargets) {
  IndexerConfig cfg = mid_config(ops::RopeStyle::kHalf);
  cfg.topk = 3;
  const BestWorstCase c = best_worst_case(cfg, 20, 32, 51);
  const DistillStats sf = distill_loss(cfg, c.w, {c.x, c.p, Tensor()}, nullptr);
  const DistillStats sr = distill_loss_reference(cfg, c.w, {c.x, c.p, Tensor()}, nullptr);
  EXPECT_NEAR(sf.recall(), c.recall, 1e-6);
  EXPECT_NEAR(sr.recall(), c.recall, 1e-6);
}

TEST(DistillLoss, RejectsBadInputs) {
  const IndexerConfig cfg = small_config(ops::RopeStyle::kHalf);
  std::mt19937 gen(61);
  IndexerWeights w = random_weights(cfg, 24, gen);
  const Tensor x = random_tensor({5, 24}, gen, 1.0f);
  EXPECT_THROW(distill_loss(cfg, w, {x, Tensor::zeros({5, 4}, DType::F32), Tensor()}, nullptr), Error);
  Tensor p = random_target(5, gen);
  p.data<float>()[6] = -0.1f;
  EXPECT_THROW(distill_loss(cfg, w, {x, p, Tensor()}, nullptr), Error);
  Tensor sel = Tensor::zeros({5, 2}, DType::I32);
  sel.data<int32_t>()[3] = 5;
  EXPECT_THROW(distill_loss(cfg, w, {x, random_target(5, gen), sel}, nullptr), Error);
  IndexerWeights wrong = IndexerWeights::zeros(cfg, 23);
  EXPECT_THROW(distill_loss(cfg, w, {x, random_target(5, gen), Tensor()}, &wrong), Error);
}

// ---------------------------------------------------------------------------------------
// Teacher targets.
// Fast vs double: each logit errs by gamma_d sum|q k| / sqrt(d) (f32 dot) and exp_fast by ~2
// ulps; p's relative error is then <= 2 max_logit_err + gamma_{n+H+4} (the sums), entrywise.
TEST(Teacher, MatchesReferenceAndIsADistribution) {
  const int64_t n = 130, Hq = 9, Hkv = 3, hd = 64;
  std::mt19937 gen(71);
  const Tensor q = random_tensor({n, Hq, hd}, gen, 0.5f), k = random_tensor({n, Hkv, hd}, gen, 0.5f);
  const Tensor pf = attention_targets(q, k), pr = attention_targets_reference(q, k);
  double max_abs_logit = 0.0;
  for (int64_t i = 0; i < q.numel(); ++i) max_abs_logit = std::max(max_abs_logit, std::abs(1.0 * q.data<float>()[i]));
  double max_k = 0.0;
  for (int64_t i = 0; i < k.numel(); ++i) max_k = std::max(max_k, std::abs(1.0 * k.data<float>()[i]));
  const double logit_err = gamma(hd, kU32) * hd * max_abs_logit * max_k / 8.0 + 2 * kU32 * 8;
  const double rel = 2 * logit_err + gamma(n + Hq + 4.0, kU32) + 4 * kU32;
  double worst = 0.0;
  for (int64_t t = 0; t < n; ++t) {
    double sum = 0.0;
    for (int64_t s = 0; s < n; ++s) {
      const float a = pf.data<float>()[t * n + s], b = pr.data<float>()[t * n + s];
      if (s > t) {
        ASSERT_EQ(a, 0.0f);
        continue;
      }
      sum += a;
      EXPECT_LE(std::abs(a - b), rel * b) << t << "," << s;
      worst = std::max(worst, std::abs(1.0 * a - b) / b);
    }
    EXPECT_NEAR(sum, 1.0, gamma(n + 2.0, kU32));
  }
  std::printf("  teacher: max rel err %.2e (bound %.2e)\n", worst, rel);
  // Bitwise independent of the thread count; row 0 is one-hot.
  const int before = omp_get_max_threads();
  omp_set_num_threads(1);
  const Tensor p1 = attention_targets(q, k);
  omp_set_num_threads(before);
  EXPECT_EQ(0, std::memcmp(p1.raw(), pf.raw(), pf.nbytes()));
  EXPECT_EQ(pf.data<float>()[0], 1.0f);
  EXPECT_THROW(attention_targets(q, random_tensor({n, 2, hd}, gen, 1.0f)), Error);  // 9 % 2 != 0
}

// GQA head mapping: with one query head per group made dominant... simpler and exact: if all
// query heads equal and Hkv = 1, the target equals the single-head softmax, so a hand-made
// 3-token case with known logits gives the closed form.
TEST(Teacher, ClosedFormThreeTokens) {
  Tensor q = Tensor::zeros({3, 2, 8}, DType::F32), k = Tensor::zeros({3, 1, 8}, DType::F32);
  // q . k[s] / sqrt(8): head 0 sees logits (0, ln 2, ln 4) at row 2 via k[s][0] scaled;
  const double r8 = std::sqrt(8.0);
  for (int h = 0; h < 2; ++h) q.data<float>()[(2 * 2 + h) * 8] = 1.0f;
  k.data<float>()[1 * 8] = static_cast<float>(std::log(2.0) * r8);
  k.data<float>()[2 * 8] = static_cast<float>(std::log(4.0) * r8);
  const Tensor p = attention_targets(q, k);
  EXPECT_NEAR(p.data<float>()[2 * 3 + 0], 1.0 / 7, 4e-7);
  EXPECT_NEAR(p.data<float>()[2 * 3 + 1], 2.0 / 7, 4e-7);
  EXPECT_NEAR(p.data<float>()[2 * 3 + 2], 4.0 / 7, 4e-7);
  EXPECT_NEAR(p.data<float>()[1 * 3 + 0], 0.5, 4e-7);  // q[1] = 0: uniform
}

// ---------------------------------------------------------------------------------------
// Multi-layer loss: average of KLs vs KL to the mean target. Gradients equal; losses differ
// by sum_t [H(p_bar_t) - mean_j H(p_j,t)] computed here in double.
TEST(DistillMulti, AverageOfKlsEqualsMeanTargetUpToEntropyGap) {
  const IndexerConfig cfg = mid_config(ops::RopeStyle::kAdjacent);
  const int64_t n = 60, D = 48;
  std::mt19937 gen(81);
  IndexerWeights w = random_weights(cfg, D, gen);
  const Tensor x = random_tensor({n, D}, gen, 1.0f);
  const std::vector<Tensor> ps = {random_target(n, gen), random_target(n, gen), random_target(n, gen),
                                  random_target(n, gen)};
  const Tensor pbar = mean_targets(ps);
  const auto entropy = [&](const Tensor& p) {
    double h = 0.0;
    for (int64_t t = 0; t < n; ++t) {
      double z = 0.0;
      for (int64_t s = 0; s <= t; ++s) z += p.data<float>()[t * n + s];
      for (int64_t s = 0; s <= t; ++s) {
        const double r = p.data<float>()[t * n + s] / z;
        if (r > 0) h -= r * std::log(r);
      }
    }
    return h;
  };
  double gap = entropy(pbar);
  for (const Tensor& p : ps) gap -= entropy(p) / ps.size();
  EXPECT_GT(gap, 0.0);  // concavity of entropy

  // Exact form on the double reference: losses and gradients by hand.
  IndexerWeights gavg = IndexerWeights::zeros(cfg, D), gmean = IndexerWeights::zeros(cfg, D);
  double lavg = 0.0;
  for (const Tensor& p : ps) {
    IndexerWeights g = IndexerWeights::zeros(cfg, D);
    lavg += distill_loss_reference(cfg, w, {x, p, Tensor()}, &g).loss / ps.size();
    axpy_weights(1.0f / ps.size(), g, gavg);
  }
  const double lmean = distill_loss_reference(cfg, w, {x, pbar, Tensor()}, &gmean).loss;
  // Rounding: pbar is rounded to f32 (relative u32 per entry), which moves H(pbar) and the
  // cross-entropy by <= u32 sum_t (1 + max|log|) ~ u32 n (2 + 2 max|I| + log n); the f32
  // gradients round at u32 per term.
  const Forward f = forward(cfg, w, x);
  double max_I = 0.0;
  for (double v : f.I) max_I = std::max(max_I, std::abs(v));
  const double loss_tol = 4 * kU32 * n * (2 + 2 * max_I + std::log(1.0 * n) + 20);
  EXPECT_NEAR(lavg - lmean, gap, loss_tol);
  std::printf("  multi: avg-of-KL %.9f, mean-target %.9f, diff %.3e, entropy gap %.3e\n", lavg, lmean, lavg - lmean, gap);
  for (int i = 0; i < 5; ++i) {
    const double ref = frob(*tensor_of(gmean, i));
    EXPECT_LE(frob_diff(*tensor_of(gavg, i), *tensor_of(gmean, i)), 8 * kU32 * ref + 4 * kU32 * ref) << kNames[i];
  }
  // Through the public API on the fast path.
  IndexerWeights ga = IndexerWeights::zeros(cfg, D), gm = IndexerWeights::zeros(cfg, D);
  const DistillStats sa = distill_loss_multi(cfg, w, x, ps, Tensor(), MultiLayerForm::kAverageOfKls, &ga);
  const DistillStats sm = distill_loss_multi(cfg, w, x, ps, Tensor(), MultiLayerForm::kMeanTarget, &gm);
  const double gL = gamma(D + 3.0 * cfg.head_dim + cfg.n_heads + 3.0 * n, kU32);
  EXPECT_NEAR(sa.loss - sm.loss, gap, loss_tol + 8 * gL * n * (1 + 2 * max_I));
  EXPECT_NEAR(sa.recall(), sm.recall(), 1e-6);
  for (int i = 0; i < 5; ++i) {
    const double ref = frob(*tensor_of(gm, i));
    EXPECT_LE(frob_diff(*tensor_of(ga, i), *tensor_of(gm, i)), 8 * gL * (1 + max_I) * ref) << kNames[i];
  }
}

// ---------------------------------------------------------------------------------------
// AdamW.

// The published update (Loshchilov & Hutter Alg. 2, as torch.optim.AdamW), one scalar at a
// time, written independently of adamw.cpp: f32 storage of theta, m, v; double arithmetic.
struct ScalarAdamW {
  double b1, b2, eps, wd;
  float theta, m = 0, v = 0;
  int64_t t = 0;
  void step(double g, double lr_t, bool decay) {
    ++t;
    const double mn = b1 * m + (1 - b1) * g, vn = b2 * v + (1 - b2) * g * g;
    m = static_cast<float>(mn);
    v = static_cast<float>(vn);
    const double mhat = mn / (1 - std::pow(b1, static_cast<double>(t)));
    const double vhat = vn / (1 - std::pow(b2, static_cast<double>(t)));
    const double th = decay ? theta - lr_t * wd * theta : theta;
    theta = static_cast<float>(th - lr_t * mhat / (std::sqrt(vhat) + eps));
  }
};

IndexerWeights random_grad(const IndexerConfig& cfg, int64_t D, std::mt19937& gen, float sd) {
  IndexerWeights g = IndexerWeights::zeros(cfg, D);
  for (int i = 0; i < 5; ++i) *tensor_of(g, i) = random_tensor(tensor_of(g, i)->shape(), gen, sd);
  return g;
}

IndexerWeights copy_weights(IndexerWeights& w) {
  IndexerWeights c;
  for (int i = 0; i < 5; ++i) *tensor_of(c, i) = tensor_of(w, i)->to(Device::CPU);
  return c;
}

TEST(AdamW, MatchesScalarPublishedUpdate) {
  const IndexerConfig cfg = small_config(ops::RopeStyle::kHalf);
  const int64_t D = 24, steps = 6;
  std::mt19937 gen(91);
  IndexerWeights w = random_weights(cfg, D, gen);
  AdamWConfig oc;
  oc.lr = 3e-3;
  oc.min_lr = 1e-4;
  oc.warmup_steps = 2;
  oc.total_steps = 5;  // warm-up, cosine and the floor all within 6 steps
  oc.weight_decay = 0.1;
  AdamW opt(oc, cfg, D);
  std::vector<std::vector<ScalarAdamW>> ref(5);
  for (int i = 0; i < 5; ++i)
    for (int64_t e = 0; e < tensor_of(w, i)->numel(); ++e)
      ref[i].push_back(ScalarAdamW{oc.beta1, oc.beta2, oc.eps, oc.weight_decay, tensor_of(w, i)->data<float>()[e]});
  // Both compute the same double expression up to association (theta (1 - lr wd) vs
  // theta - lr wd theta): they may differ by one f32 rounding per step, |diff| <= steps ulp.
  double worst = 0.0;
  for (int64_t s = 1; s <= steps; ++s) {
    const IndexerWeights g = random_grad(cfg, D, gen, 0.5f);
    const AdamWStepInfo info = opt.step(w, g);
    ASSERT_EQ(info.clip_scale, 1.0);
    for (int i = 0; i < 5; ++i)
      for (int64_t e = 0; e < tensor_of(w, i)->numel(); ++e) {
        ScalarAdamW& r = ref[i][e];
        r.step(tensor_of(g, i)->data<float>()[e], adamw_lr(oc, s), i != 2 && i != 3);
        const double got = tensor_of(w, i)->data<float>()[e];
        EXPECT_LE(std::abs(got - r.theta), s * 2 * kU32 * std::abs(r.theta)) << kNames[i] << "[" << e << "] step " << s;
        worst = std::max(worst, std::abs(got - r.theta));
      }
  }
  std::printf("  adamw vs scalar: max |diff| %.2e after %ld steps\n", worst, static_cast<long>(steps));
}

TEST(AdamW, ClipsGlobalNormToTheCap) {
  const IndexerConfig cfg = small_config(ops::RopeStyle::kHalf);
  const int64_t D = 24;
  std::mt19937 gen(92);
  IndexerWeights w = random_weights(cfg, D, gen);
  AdamWConfig oc;
  oc.clip_norm = 0.75;
  AdamW opt(oc, cfg, D);
  const IndexerWeights g = random_grad(cfg, D, gen, 2.0f);
  double sq = 0.0;
  for (int i = 0; i < 5; ++i) sq += frob(*tensor_of(g, i)) * frob(*tensor_of(g, i));
  const AdamWStepInfo info = opt.step(w, g);
  EXPECT_NEAR(info.grad_norm, std::sqrt(sq), gamma(1000, kU64) * std::sqrt(sq));
  EXPECT_NEAR(info.grad_norm * info.clip_scale, oc.clip_norm, 4 * kU64);
  // After one step m = (1 - b1) * clipped g: its norm / (1 - b1) is the cap, to the f32
  // rounding of m (relative u32 per element).
  double msq = 0.0;
  for (const auto& [name, t] : opt.state())
    if (name.rfind("m.", 0) == 0) msq += frob(t) * frob(t);
  EXPECT_NEAR(std::sqrt(msq) / (1 - oc.beta1), oc.clip_norm, 2 * kU32 * oc.clip_norm);
  // Below the cap nothing changes.
  const IndexerWeights small = random_grad(cfg, D, gen, 1e-3f);
  EXPECT_EQ(opt.step(w, small).clip_scale, 1.0);
}

TEST(AdamW, ScheduleAtKeySteps) {
  AdamWConfig oc;
  oc.lr = 1e-3;
  oc.min_lr = 1e-5;
  oc.warmup_steps = 100;
  oc.total_steps = 1100;
  EXPECT_DOUBLE_EQ(adamw_lr(oc, 1), 1e-5);
  EXPECT_DOUBLE_EQ(adamw_lr(oc, 50), 5e-4);
  EXPECT_DOUBLE_EQ(adamw_lr(oc, 100), 1e-3);
  EXPECT_NEAR(adamw_lr(oc, 600), (1e-3 + 1e-5) / 2, 1e-18);  // half-way down the cosine
  EXPECT_NEAR(adamw_lr(oc, 350), 1e-5 + (1e-3 - 1e-5) * (0.5 + 0.5 * std::sqrt(0.5)), 1e-18);
  EXPECT_DOUBLE_EQ(adamw_lr(oc, 1100), 1e-5);
  EXPECT_DOUBLE_EQ(adamw_lr(oc, 5000), 1e-5);
  EXPECT_LT(adamw_lr(oc, 101), 1e-3);
  EXPECT_THROW(adamw_lr(oc, 0), Error);
  oc.min_lr = 2e-3;
  EXPECT_THROW(oc.validate(), Error);
}

TEST(AdamW, SerialisedStateContinuesBitwise) {
  const IndexerConfig cfg = small_config(ops::RopeStyle::kAdjacent);
  const int64_t D = 24;
  std::mt19937 gen(93);
  IndexerWeights w = random_weights(cfg, D, gen);
  AdamWConfig oc;
  oc.warmup_steps = 2;
  oc.total_steps = 20;
  oc.weight_decay = 0.05;
  oc.clip_norm = 3.0;
  std::vector<IndexerWeights> grads;
  for (int s = 0; s < 6; ++s) grads.push_back(random_grad(cfg, D, gen, 0.4f));
  AdamW a(oc, cfg, D);
  for (int s = 0; s < 3; ++s) a.step(w, grads[s]);
  const auto saved = a.state();
  IndexerWeights w2 = copy_weights(w);
  for (int s = 3; s < 6; ++s) a.step(w, grads[s]);
  AdamW b(oc, cfg, D);
  b.load_state(saved);
  EXPECT_EQ(b.steps(), 3);
  for (int s = 3; s < 6; ++s) b.step(w2, grads[s]);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(0, std::memcmp(tensor_of(w, i)->raw(), tensor_of(w2, i)->raw(), tensor_of(w, i)->nbytes())) << kNames[i];
  const auto sa = a.state(), sb = b.state();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t j = 0; j < sa.size(); ++j)
    EXPECT_EQ(0, std::memcmp(sa[j].second.raw(), sb[j].second.raw(), sa[j].second.nbytes())) << sa[j].first;
  auto broken = saved;
  broken.erase(broken.begin());
  EXPECT_THROW(b.load_state(broken), Error);
}

// ---------------------------------------------------------------------------------------
// End to end: distil a student indexer toward targets p = softmax(I*) of a different random
// "teacher" indexer on the same x. The target is realisable (the student has the teacher's
// architecture), so min KL = 0; the run is deterministic (fixed seeds, thread-independent
// kernels), so the asserted factor is a fact about this one trajectory, not a probability:
// we assert 10x where the run gives the measured factor printed below.
TEST(DistillEndToEnd, AdamWReducesKlByALargeFactor) {
  IndexerConfig cfg;
  cfg.n_heads = 4;
  cfg.head_dim = 16;
  cfg.rope_dim = 8;
  cfg.topk = 8;
  const int64_t n = 64, D = 32;
  std::mt19937 gen(101);
  const Tensor x = random_tensor({n, D}, gen, 1.0f);
  IndexerWeights teacher = random_weights(cfg, D, gen);
  for (int64_t i = 0; i < teacher.wproj.numel(); ++i) teacher.wproj.data<float>()[i] *= 3.0f;  // peakier targets
  const Forward f = forward(cfg, teacher, x);
  Tensor p = Tensor::zeros({n, n}, DType::F32);
  for (int64_t t = 0; t < n; ++t) {
    double m = -INFINITY, z = 0.0;
    for (int64_t s = 0; s <= t; ++s) m = std::max(m, f.I[t * n + s]);
    for (int64_t s = 0; s <= t; ++s) z += std::exp(f.I[t * n + s] - m);
    for (int64_t s = 0; s <= t; ++s) p.data<float>()[t * n + s] = static_cast<float>(std::exp(f.I[t * n + s] - m) / z);
  }
  IndexerWeights w = random_weights(cfg, D, gen);
  AdamWConfig oc;
  oc.lr = 1e-2;
  oc.min_lr = 1e-4;
  oc.warmup_steps = 20;
  oc.total_steps = 400;
  oc.clip_norm = 10.0;
  AdamW opt(oc, cfg, D);
  const DistillStats first = distill_loss(cfg, w, {x, p, Tensor()}, nullptr);
  for (int64_t s = 0; s < oc.total_steps; ++s) {
    IndexerWeights g = IndexerWeights::zeros(cfg, D);
    distill_loss(cfg, w, {x, p, Tensor()}, &g);
    opt.step(w, g);
  }
  const DistillStats last = distill_loss(cfg, w, {x, p, Tensor()}, nullptr);
  std::printf("  end to end: mean KL %.4f -> %.5f (x%.1f), recall@%ld %.3f -> %.3f\n", first.mean_kl(), last.mean_kl(),
              first.mean_kl() / last.mean_kl(), static_cast<long>(cfg.topk), first.recall(), last.recall());
  EXPECT_LT(last.mean_kl() * 10, first.mean_kl());
  EXPECT_GT(last.recall(), first.recall());
}

}  // namespace
}  // namespace ic
