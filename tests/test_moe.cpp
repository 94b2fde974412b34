// The MoE ops: ops::moe_route (the DeepSeek-V3 / GLM router) and ops::moe_experts (the routed
// SwiGLU experts, combined).
//
// Router: the CPU reference against hand-worked cases (group masking, bias that picks but does not
// weigh, ties, norm_topk_prob on and off, scaling, masked experts against negative kept scores,
// top_k == n_experts) and against a brute-force selection by full sorts on fresh random inputs.
// The GPU router against the same hand-worked cases (exact logits: dim 1), and on random inputs
// in two parts: its f32 logits against the double reference within gamma_dim * sum |x w|, and its
// selection against the brute force run on the GPU's own logits (so only the f32 sigmoid and sums
// differ: a token whose deciding gap is within 5e-6 is a near-tie, counted, and must be rare).
//
// Experts: the CPU reference against a hand-worked case and against an HF-style loop over experts
// (gather each expert's tokens, add their weighted outputs); the GPU path against the reference
// with an element-wise bound derived from the bf16 roundings on its path (see expert_bound), and
// normwise within 4 u_bf16; each GPU run twice, compared bitwise. GPU tests skip without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "op_test_util.h"
#include "ops/moe_experts.h"
#include "ops/moe_route.h"
#include "test_util.h"

namespace ic::ops {
namespace {

using test::gamma;
using test::kU;
constexpr double kBf16U = 1.0 / 256;  // unit roundoff of bf16 (8 significant bits): 2^-8

#define IC_CUDA_OR_SKIP() \
  if (!::ic::cuda_available()) GTEST_SKIP() << "no usable CUDA device (or a CPU-only build)"

using test::expect_error;

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

std::vector<uint16_t> bf16_of(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = f32_to_bf16(v[i]);
  return r;
}

template <typename T>
Tensor borrow(const std::vector<T>& v, const Shape& s, DType t) {
  return Tensor::borrow(const_cast<T*>(v.data()), s, t);
}

template <typename T>
std::vector<T> to_host_vec(const Tensor& t) {
  const Tensor h = t.to(Device::CPU);
  return std::vector<T>(h.data<T>(), h.data<T>() + h.numel());
}

// ---------------------------------------------------------------------------------------------
// Router

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  std::vector<float> logits;
};

// One token per entry of xs (dim 1: logit[e] = x * w[e], exact in f32 and bf16 for the values used).
Routed route(const std::vector<float>& w_col, const std::vector<float>& bias, const MoeRouterConfig& cfg,
             Device dev = Device::CPU, DType type = DType::F32, std::vector<float> xs = {1.0f}) {
  const int64_t E = static_cast<int64_t>(w_col.size()), n = static_cast<int64_t>(xs.size());
  Tensor x, w;
  std::vector<uint16_t> xb, wb;
  if (type == DType::F32) {
    x = borrow(xs, {n, 1}, DType::F32), w = borrow(w_col, {E, 1}, DType::F32);
  } else {
    xb = bf16_of(xs), wb = bf16_of(w_col);
    x = borrow(xb, {n, 1}, DType::BF16), w = borrow(wb, {E, 1}, DType::BF16);
  }
  Tensor b = bias.empty() ? Tensor() : borrow(bias, {E}, DType::F32);
  if (dev == Device::CUDA) {
    x = x.to(dev), w = w.to(dev);
    if (b.defined()) b = b.to(dev);
  }
  Tensor ids = Tensor::empty({n, cfg.top_k}, DType::I32, dev), wt = Tensor::empty({n, cfg.top_k}, DType::F32, dev);
  Tensor logits = Tensor::empty({n, E}, DType::F32, dev);
  moe_route(x, w, b, cfg, ids, wt, &logits);
  return {to_host_vec<int32_t>(ids), to_host_vec<float>(wt), to_host_vec<float>(logits)};
}

MoeRouterConfig config(int64_t top_k, int64_t n_group, int64_t topk_group, bool norm = true, float scale = 1.0f) {
  MoeRouterConfig c;
  c.top_k = top_k, c.n_group = n_group, c.topk_group = topk_group, c.norm_topk_prob = norm;
  c.routed_scaling_factor = scale;
  return c;
}

void expect_weights(const std::vector<float>& got, const std::vector<double>& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], rel * std::fabs(want[i])) << "slot " << i;
}

// The hand-worked cases, each checked on `dev`.
// Tolerance of the weights: the reference rounds a double once (u); the GPU evaluates the sigmoid
// (expf, 2 ulp), the sum and the division in f32: 32 u.
void hand_worked_router_cases(Device dev, DType type) {
  const double rel = dev == Device::CPU ? 2 * kU : 32 * kU;
  const std::vector<float> logits = {2, -3, 1, 1, 0, 3, -1, -1};
  const double s3 = sigmoid(3), s1 = sigmoid(1), s0 = sigmoid(0), s2 = sigmoid(2);
  {
    // Groups {0,1} {2,3} {4,5} {6,7} score s2+s-3 = 0.93, 2 s1 = 1.46, s0+s3 = 1.45, 2 s-1 = 0.54:
    // groups 1 and 2 stay, so expert 0 (the second best score) is masked; 2 and 3 tie: 2 first.
    const Routed r = route(logits, {}, config(3, 4, 2), dev, type);
    EXPECT_EQ(r.ids, (std::vector<int32_t>{5, 2, 3}));
    const double sum = s3 + 2 * s1 + 1e-20;
    expect_weights(r.weights, {s3 / sum, s1 / sum, s1 / sum}, rel);
    // Without groups, expert 0 is in.
    EXPECT_EQ(route(logits, {}, config(3, 1, 1), dev, type).ids, (std::vector<int32_t>{5, 0, 2}));
  }
  {
    // A bias of +0.5 on expert 4 makes it the first choice (1.0 > s3) and group 2 the best group,
    // while its weight stays its unbiased score s0.
    std::vector<float> bias(8, 0.0f);
    bias[4] = 0.5f;
    const Routed r = route(logits, bias, config(3, 4, 2), dev, type);
    EXPECT_EQ(r.ids, (std::vector<int32_t>{4, 5, 2}));
    const double sum = s0 + s3 + s1 + 1e-20;
    expect_weights(r.weights, {s0 / sum, s3 / sum, s1 / sum}, rel);
  }
  {
    // All equal: groups 0 and 1 stay, experts in index order; norm off: weights are s0 * scale.
    const std::vector<float> zeros(8, 0.0f);
    const Routed on = route(zeros, {}, config(3, 4, 2), dev, type);
    EXPECT_EQ(on.ids, (std::vector<int32_t>{0, 1, 2}));
    expect_weights(on.weights, {1.0 / 3, 1.0 / 3, 1.0 / 3}, rel);
    const Routed off = route(zeros, {}, config(3, 4, 2, /*norm=*/false, 2.5f), dev, type);
    EXPECT_EQ(off.ids, (std::vector<int32_t>{0, 1, 2}));
    expect_weights(off.weights, {1.25, 1.25, 1.25}, rel);
    const Routed scaled = route(logits, {}, config(2, 1, 1, /*norm=*/true, 1.8f), dev, type);
    EXPECT_EQ(scaled.ids, (std::vector<int32_t>{5, 0}));
    expect_weights(scaled.weights, {1.8 * s3 / (s3 + s2 + 1e-20), 1.8 * s2 / (s3 + s2 + 1e-20)}, rel);
  }
  {
    // Every kept score negative (bias -2 / -3): group 0 (-3) beats group 1 (-4.01), and the masked
    // experts 2, 3 are never chosen although 0.0 (older HF's mask value) would beat -1.5.
    const Routed r = route({0, 0, 5, 5}, {-2, -2, -3, -3}, config(2, 2, 1), dev, type);
    EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
    expect_weights(r.weights, {0.5, 0.5}, rel);
  }
  {
    // top_k == n_experts: every expert, best first.
    const Routed r = route({1, -1, 2, 0}, {}, config(4, 1, 1), dev, type);
    EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 0, 3, 1}));
    const double sum = sigmoid(2) + sigmoid(1) + sigmoid(0) + sigmoid(-1) + 1e-20;
    expect_weights(r.weights, {sigmoid(2) / sum, sigmoid(1) / sum, sigmoid(0) / sum, sigmoid(-1) / sum}, rel);
  }
}

TEST(MoeRouteCpu, HandWorkedCases) { hand_worked_router_cases(Device::CPU, DType::F32); }
TEST(MoeRouteCpu, HandWorkedCasesFromBf16) { hand_worked_router_cases(Device::CPU, DType::BF16); }

// The selection by full sorts, from double logits: groups ranked by the sum of their two best
// choice scores, then the kept groups' experts by choice score; ties to the lower index. `margin`
// is the smallest gap that decides the answer (the kept groups' last against the best masked one,
// and consecutive experts in the first top_k + 1 of the order).
struct BruteRoute {
  std::vector<int32_t> ids;
  std::vector<double> weights;
  double margin = INFINITY;
};

BruteRoute brute_force_route(const std::vector<double>& logits, const std::vector<float>& bias,
                             const MoeRouterConfig& c) {
  const int64_t E = static_cast<int64_t>(logits.size()), gsize = E / c.n_group;
  std::vector<double> score(E), choice(E);
  for (int64_t e = 0; e < E; ++e) {
    score[e] = sigmoid(logits[e]);
    choice[e] = score[e] + (bias.empty() ? 0.0 : bias[e]);
  }
  auto better = [](const std::vector<double>& v) {
    return [&v](int64_t a, int64_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  };
  BruteRoute r;
  std::vector<double> gscore(c.n_group);
  for (int64_t g = 0; g < c.n_group; ++g) {
    std::vector<double> members(choice.begin() + g * gsize, choice.begin() + (g + 1) * gsize);
    std::sort(members.rbegin(), members.rend());
    gscore[g] = members[0] + (gsize > 1 ? members[1] : 0.0);
  }
  std::vector<int64_t> groups(c.n_group);
  std::iota(groups.begin(), groups.end(), 0);
  std::sort(groups.begin(), groups.end(), better(gscore));
  if (c.topk_group < c.n_group) r.margin = gscore[groups[c.topk_group - 1]] - gscore[groups[c.topk_group]];
  std::vector<int64_t> cand;
  for (int64_t i = 0; i < c.topk_group; ++i)
    for (int64_t e = groups[i] * gsize; e < (groups[i] + 1) * gsize; ++e) cand.push_back(e);
  std::sort(cand.begin(), cand.end(), better(choice));
  for (int64_t i = 0; i < c.top_k && i + 1 < static_cast<int64_t>(cand.size()); ++i)
    r.margin = std::min(r.margin, choice[cand[i]] - choice[cand[i + 1]]);
  r.ids.assign(cand.begin(), cand.begin() + c.top_k);
  double sum = 0.0;
  for (int32_t e : r.ids) sum += score[e];
  for (int32_t e : r.ids) r.weights.push_back(score[e] / (c.norm_topk_prob ? sum + 1e-20 : 1.0) * c.routed_scaling_factor);
  return r;
}

struct RouterCase {
  int64_t n_experts, n_group, topk_group, top_k, dim;
};

const std::vector<RouterCase> kRouterCases = {
    {16, 1, 1, 4, 24},  {32, 8, 4, 4, 40}, {64, 8, 3, 8, 17},
    {12, 4, 2, 6, 9},  // top_k equal to the kept groups' experts
    {6, 3, 3, 6, 5},   // every group kept, every expert chosen
};

TEST(MoeRouteCpu, MatchesBruteForceOnRandomInputs) {
  test::Rng rng;
  SCOPED_TRACE(rng.seed);
  const int64_t n_tok = 40;
  for (const RouterCase& rc : kRouterCases)
    for (DType type : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(testing::Message() << "E " << rc.n_experts << " groups " << rc.n_group << "/" << rc.topk_group
                                      << " top_k " << rc.top_k << " " << dtype_name(type));
      const MoeRouterConfig cfg = config(rc.top_k, rc.n_group, rc.topk_group, rng.gen() % 2 == 0, 2.5f);
      std::vector<float> x = rng.normal(n_tok * rc.dim), w = rng.normal(rc.n_experts * rc.dim, 0.5f);
      const std::vector<float> bias = rng.normal(rc.n_experts, 0.3f);
      if (type == DType::BF16)  // the reference reads the bf16 values: make the test's copy match
        for (auto* v : {&x, &w})
          for (auto& f : *v) f = bf16_to_f32(f32_to_bf16(f));
      std::vector<uint16_t> xb = bf16_of(x), wb = bf16_of(w);
      std::vector<int32_t> ids(n_tok * rc.top_k);
      std::vector<float> weights(ids.size()), logits(n_tok * rc.n_experts);
      const MoeRouteParams p{type == DType::F32 ? static_cast<const void*>(x.data()) : xb.data(),
                             type == DType::F32 ? static_cast<const void*>(w.data()) : wb.data(),
                             type, bias.data(), logits.data(), ids.data(), weights.data(), n_tok, rc.dim,
                             rc.n_experts, cfg};
      cpu::moe_route_reference(p);
      for (int64_t t = 0; t < n_tok; ++t) {
        std::vector<double> l(rc.n_experts);
        for (int64_t e = 0; e < rc.n_experts; ++e)
          for (int64_t k = 0; k < rc.dim; ++k) l[e] += static_cast<double>(x[t * rc.dim + k]) * w[e * rc.dim + k];
        const BruteRoute want = brute_force_route(l, bias, cfg);
        ASSERT_EQ(std::vector<int32_t>(ids.begin() + t * rc.top_k, ids.begin() + (t + 1) * rc.top_k), want.ids)
            << "token " << t;
        expect_weights(std::vector<float>(weights.begin() + t * rc.top_k, weights.begin() + (t + 1) * rc.top_k),
                       want.weights, 2 * kU);
      }
    }
}

TEST(MoeRouteCpu, BadConfigAndShapesAreClearErrors) {
  const std::vector<float> w(8, 0.0f);
  expect_error([&] { route(w, {}, config(2, 3, 1)); }, "must divide n_experts 8");
  expect_error([&] { route(w, {}, config(2, 4, 5)); }, "topk_group 5");
  expect_error([&] { route(w, {}, config(5, 4, 2)); }, "top_k 5 must be in [1, 4]");
  expect_error([&] { route(w, {}, config(0, 1, 1)); }, "top_k 0");
  expect_error([&] { route(w, {}, config(1, 8, 4)); }, "no top-2 score");
  std::vector<float> x(6), bias7(7);
  Tensor ids1 = Tensor::empty({1, 2}, DType::I32), wt1 = Tensor::empty({1, 2}, DType::F32);
  expect_error([&] { moe_route(borrow(x, {1, 1}, DType::F32), borrow(w, {8, 1}, DType::F32), borrow(bias7, {7}, DType::F32), config(2, 1, 1), ids1, wt1); },
               "bias F32[7] on cpu needs one entry per expert (8)");
  std::vector<uint16_t> wb(8);
  Tensor ids = Tensor::empty({2, 2}, DType::I32), wt = Tensor::empty({2, 2}, DType::F32);
  expect_error([&] { moe_route(borrow(x, {2, 3}, DType::F32), borrow(wb, {8, 1}, DType::BF16), Tensor(), config(2, 1, 1), ids, wt); },
               "moe_route w_gate");
  expect_error([&] { moe_route(borrow(x, {2, 3}, DType::F32), borrow(w, {8, 1}, DType::F32), Tensor(), config(2, 1, 1), ids, wt); },
               "x's 3 columns");
  Tensor ids_bad = Tensor::empty({2, 3}, DType::I32);
  expect_error([&] { moe_route(borrow(x, {6, 1}, DType::F32), borrow(w, {8, 1}, DType::F32), Tensor(), config(2, 1, 1), ids_bad, wt); },
               "must be [6, 2]");
}

TEST(MoeRouteCuda, HandWorkedCases) {
  IC_CUDA_OR_SKIP();
  hand_worked_router_cases(Device::CUDA, DType::F32);
  hand_worked_router_cases(Device::CUDA, DType::BF16);
}

TEST(MoeRouteCuda, MatchesReferenceUpToNearTies) {
  IC_CUDA_OR_SKIP();
  test::Rng rng;
  SCOPED_TRACE(rng.seed);
  std::vector<RouterCase> cases = kRouterCases;
  cases.push_back({64, 1, 1, 4, 2048});   // GLM-4.7-Flash's router
  cases.push_back({256, 8, 4, 8, 1024});  // DeepSeek-V3's, at a shorter dim
  cases.push_back({1024, 1, 1, 8, 64});   // the kernel's most experts
  int64_t near_ties = 0, tokens = 0;
  for (const RouterCase& rc : cases)
    for (int64_t n_tok : {1, 300})
      for (DType type : {DType::F32, DType::BF16}) {
        SCOPED_TRACE(testing::Message() << "E " << rc.n_experts << " groups " << rc.n_group << "/" << rc.topk_group
                                        << " top_k " << rc.top_k << " dim " << rc.dim << " n_tok " << n_tok << " "
                                        << dtype_name(type));
        const MoeRouterConfig cfg = config(rc.top_k, rc.n_group, rc.topk_group, rng.gen() % 2 == 0, 1.8f);
        std::vector<float> x = rng.normal(n_tok * rc.dim);
        std::vector<float> w = rng.normal(rc.n_experts * rc.dim, 1.0f / std::sqrt(static_cast<float>(rc.dim)));
        const std::vector<float> bias = rng.normal(rc.n_experts, 0.3f);
        for (auto* v : {&x, &w})
          for (auto& f : *v) f = type == DType::BF16 ? bf16_to_f32(f32_to_bf16(f)) : f;
        Tensor gx, gw;
        std::vector<uint16_t> xb = bf16_of(x), wb = bf16_of(w);
        if (type == DType::F32)
          gx = borrow(x, {n_tok, rc.dim}, type).to(Device::CUDA), gw = borrow(w, {rc.n_experts, rc.dim}, type).to(Device::CUDA);
        else
          gx = borrow(xb, {n_tok, rc.dim}, type).to(Device::CUDA), gw = borrow(wb, {rc.n_experts, rc.dim}, type).to(Device::CUDA);
        const Tensor gb = borrow(bias, {rc.n_experts}, DType::F32).to(Device::CUDA);
        Routed run[2];
        for (Routed& r : run) {
          Tensor ids = Tensor::empty({n_tok, rc.top_k}, DType::I32, Device::CUDA);
          Tensor wt = Tensor::empty({n_tok, rc.top_k}, DType::F32, Device::CUDA);
          Tensor lg = Tensor::empty({n_tok, rc.n_experts}, DType::F32, Device::CUDA);
          moe_route(gx, gw, gb, cfg, ids, wt, &lg);
          r = {to_host_vec<int32_t>(ids), to_host_vec<float>(wt), to_host_vec<float>(lg)};
        }
        ASSERT_EQ(run[0].ids, run[1].ids);
        ASSERT_EQ(0, std::memcmp(run[0].weights.data(), run[1].weights.data(), run[0].weights.size() * 4));
        const Routed& g = run[0];
        for (int64_t t = 0; t < n_tok; ++t) {
          ++tokens;
          // 1. The logits: an f32 sum of exact products, within gamma_dim * sum |x w|.
          std::vector<double> gl(rc.n_experts);
          for (int64_t e = 0; e < rc.n_experts; ++e) {
            double exact = 0.0, mag = 0.0;
            for (int64_t k = 0; k < rc.dim; ++k) {
              const double pr = static_cast<double>(x[t * rc.dim + k]) * w[e * rc.dim + k];
              exact += pr, mag += std::fabs(pr);
            }
            gl[e] = g.logits[t * rc.n_experts + e];
            ASSERT_NEAR(gl[e], exact, gamma(rc.dim) * mag + 1e-30) << "token " << t << " expert " << e;
          }
          // 2. The selection on the GPU's own logits: the same ids unless the reference's deciding
          //    gap is within f32 rounding of the sigmoid and the sums (5e-6: a near-tie, counted).
          const BruteRoute want = brute_force_route(gl, bias, cfg);
          const std::vector<int32_t> got_ids(g.ids.begin() + t * rc.top_k, g.ids.begin() + (t + 1) * rc.top_k);
          if (got_ids != want.ids) {
            ASSERT_LT(want.margin, 5e-6) << "token " << t << ": GPU and reference selections differ beyond a near-tie";
            ++near_ties;
            continue;
          }
          expect_weights(std::vector<float>(g.weights.begin() + t * rc.top_k, g.weights.begin() + (t + 1) * rc.top_k),
                         want.weights, 32 * kU);
        }
      }
  EXPECT_LE(near_ties * 100, tokens) << near_ties << " near-ties in " << tokens << " tokens";
}

// ---------------------------------------------------------------------------------------------
// Experts

struct ExpertWeights {
  int64_t n_experts, dim, inter;
  std::vector<uint16_t> gate_up, down;  // [E, 2 I, D], [E, D, I]
};

ExpertWeights random_experts(test::Rng& rng, int64_t E, int64_t D, int64_t I) {
  ExpertWeights w{E, D, I, bf16_of(rng.normal(E * 2 * I * D, 1.0f / std::sqrt(static_cast<float>(D)))),
                  bf16_of(rng.normal(E * D * I, 1.0f / std::sqrt(static_cast<float>(I))))};
  return w;
}

MoeExpertsParams params_for(const std::vector<uint16_t>& x, const std::vector<int32_t>& ids,
                            const std::vector<float>& wts, const ExpertWeights& w, void* out, DType out_type,
                            int64_t top_k) {
  return {x.data(),     ids.data(), wts.data(),
          w.gate_up.data(), w.down.data(), out, out_type, static_cast<int64_t>(ids.size()) / top_k, top_k,
          w.dim,        w.inter,    w.n_experts};
}

TEST(MoeExpertsCpu, HandWorked) {
  // dim 2, inter 1. Expert 0: gate x0, up x1, down [1, 2]; expert 1: gate x1, up x0 + x1,
  // down [-1, 0.5]. Token x = (1, 2), slots (1, 0) with weights (0.25, 0.75).
  ExpertWeights w{2, 2, 1, bf16_of({1, 0, 0, 1, 0, 1, 1, 1}), bf16_of({1, 2, -1, 0.5f})};
  const std::vector<uint16_t> x = bf16_of({1, 2});
  const std::vector<int32_t> ids = {1, 0};
  const std::vector<float> wts = {0.25f, 0.75f};
  std::vector<float> out(2);
  cpu::moe_experts_reference(params_for(x, ids, wts, w, out.data(), DType::F32, 2));
  auto silu = [](double g) { return g * sigmoid(g); };
  const double a0 = silu(1) * 2, a1 = silu(2) * 3;
  EXPECT_NEAR(out[0], 0.75 * a0 * 1 + 0.25 * a1 * -1, 1e-6);
  EXPECT_NEAR(out[1], 0.75 * a0 * 2 + 0.25 * a1 * 0.5, 1e-6);
}

// HF's loop (DeepseekV3MoE.moe): per expert, its tokens, their weighted outputs added in place.
std::vector<double> per_expert_loop(const std::vector<uint16_t>& x, const std::vector<int32_t>& ids,
                                    const std::vector<float>& wts, const ExpertWeights& w, int64_t top_k) {
  const int64_t D = w.dim, I = w.inter, n_tok = static_cast<int64_t>(ids.size()) / top_k;
  std::vector<double> y(n_tok * D, 0.0);
  for (int64_t e = 0; e < w.n_experts; ++e)
    for (int64_t t = 0; t < n_tok; ++t)
      for (int64_t s = 0; s < top_k; ++s) {
        if (ids[t * top_k + s] != e) continue;
        std::vector<double> act(I);
        for (int64_t j = 0; j < I; ++j) {
          double g = 0, u = 0;
          for (int64_t k = 0; k < D; ++k) {
            const double xv = bf16_to_f32(x[t * D + k]);
            g += xv * bf16_to_f32(w.gate_up[(e * 2 * I + j) * D + k]);
            u += xv * bf16_to_f32(w.gate_up[(e * 2 * I + I + j) * D + k]);
          }
          act[j] = g * sigmoid(g) * u;
        }
        for (int64_t o = 0; o < D; ++o) {
          double d = 0;
          for (int64_t j = 0; j < I; ++j) d += act[j] * bf16_to_f32(w.down[(e * D + o) * I + j]);
          y[t * D + o] += wts[t * top_k + s] * d;
        }
      }
  return y;
}

std::vector<int32_t> random_ids(test::Rng& rng, int64_t n_tok, int64_t top_k, int64_t n_used) {
  // Distinct experts per token (as a router gives), drawn from the first n_used.
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < n_tok; ++t) {
    std::vector<int32_t> all(n_used);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng.gen);
    ids.insert(ids.end(), all.begin(), all.begin() + top_k);
  }
  return ids;
}

std::vector<float> random_weights(test::Rng& rng, size_t n) {
  std::uniform_real_distribution<float> d(0.05f, 1.0f);
  std::vector<float> w(n);
  for (auto& v : w) v = d(rng.gen);
  return w;
}

TEST(MoeExpertsCpu, MatchesPerExpertLoop) {
  test::Rng rng;
  SCOPED_TRACE(rng.seed);
  const int64_t n_tok = 9, top_k = 3, D = 24, I = 10, E = 5;
  const ExpertWeights w = random_experts(rng, E, D, I);
  const auto x = bf16_of(rng.normal(n_tok * D));
  const auto ids = random_ids(rng, n_tok, top_k, E);
  const auto wts = random_weights(rng, ids.size());
  std::vector<float> out(n_tok * D);
  cpu::moe_experts_reference(params_for(x, ids, wts, w, out.data(), DType::F32, top_k));
  const auto want = per_expert_loop(x, ids, wts, w, top_k);
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], want[i], 1e-12 + 2 * kU * std::fabs(want[i])) << i;
  // A bf16 out is the same value rounded once.
  std::vector<uint16_t> outb(n_tok * D);
  cpu::moe_experts_reference(params_for(x, ids, wts, w, outb.data(), DType::BF16, top_k));
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(outb[i], f32_to_bf16(out[i])) << i;
}

TEST(MoeExpertsCpu, BadIdsAndShapesAreClearErrors) {
  const int64_t D = 8, I = 4, E = 3;
  std::vector<uint16_t> x(2 * D), gu(E * 2 * I * D), dn(E * D * I);
  std::vector<int32_t> ids = {0, 1, 2, 3};
  std::vector<float> wts(4), out(2 * D);
  Tensor tx = borrow(x, {2, D}, DType::BF16), tgu = borrow(gu, {E, 2 * I, D}, DType::BF16);
  Tensor tdn = borrow(dn, {E, D, I}, DType::BF16), tw = borrow(wts, {2, 2}, DType::F32);
  Tensor to = borrow(out, {2, D}, DType::F32);
  expect_error([&] { moe_experts(tx, borrow(ids, {2, 2}, DType::I32), tw, tgu, tdn, to); },
               "token 1 slot 1 names expert 3, outside [0, 3)");
  ids[3] = 0;
  Tensor tids = borrow(ids, {2, 2}, DType::I32);
  Tensor tdn_bad = borrow(dn, {E, I, D}, DType::BF16);
  expect_error([&] { moe_experts(tx, tids, tw, tgu, tdn_bad, to); }, "w_down");
  Tensor tgu_bad = borrow(gu, {E, 2 * I, D / 2}, DType::BF16);  // not D columns (fewer elements: views only)
  expect_error([&] { moe_experts(tx, tids, tw, tgu_bad, tdn, to); }, "w_gate_up");
  Tensor to_bad = borrow(out, {1, D}, DType::F32);
  expect_error([&] { moe_experts(tx, tids, tw, tgu, tdn, to_bad); }, "out");
  Tensor tw_bad = borrow(wts, {2, 1}, DType::F32);
  expect_error([&] { moe_experts(tx, tids, tw_bad, tgu, tdn, to); }, "weights");
}

// Element-wise bound of |GPU - reference| for token t, output o, from the GPU path's roundings
// (each bf16 rounding within u_b = 2^-8 relative; f32 sums within gamma_n of the sum of magnitudes):
//   g, u: f32 sums of D exact products, then bf16:   dg <= u_b |g| + gamma_D G,  G = sum |x wg|
//   a = silu(g) u (|silu'| <= 1.1), in f32 (expf, a division, a product: 4 u), then bf16:
//        da <= 1.1 dg |u| + |silu(g)| du + 1.1 dg du + (u_b + 4 u)(|a| + that)
//   d = sum_j wd_j a_j (f32 over I), then bf16:   dd <= sum |wd| da + gamma_I sum |wd| |a| + u_b |d|
//   y = sum_s w_s d_s in f32 (top_k fmas):         dy <= sum |w_s| dd_s + gamma_k sum |w_s d_s|
// then y's own rounding (f32 or bf16), and 5 % for the second-order terms left out.
struct RefWithBound {
  std::vector<double> y, bound;
};

RefWithBound reference_with_bound(const std::vector<uint16_t>& x, const std::vector<int32_t>& ids,
                                  const std::vector<float>& wts, const ExpertWeights& w, int64_t top_k,
                                  DType out_type) {
  const int64_t D = w.dim, I = w.inter, n_tok = static_cast<int64_t>(ids.size()) / top_k;
  RefWithBound r{std::vector<double>(n_tok * D, 0.0), std::vector<double>(n_tok * D, 0.0)};
  std::vector<double> a(I), da(I), mag_y(n_tok * D, 0.0);
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t s = 0; s < top_k; ++s) {
      const int64_t e = ids[t * top_k + s];
      for (int64_t j = 0; j < I; ++j) {
        double g = 0, u = 0, G = 0, U = 0;
        for (int64_t k = 0; k < D; ++k) {
          const double xv = bf16_to_f32(x[t * D + k]);
          const double pg = xv * bf16_to_f32(w.gate_up[(e * 2 * I + j) * D + k]);
          const double pu = xv * bf16_to_f32(w.gate_up[(e * 2 * I + I + j) * D + k]);
          g += pg, u += pu, G += std::fabs(pg), U += std::fabs(pu);
        }
        const double dg = kBf16U * std::fabs(g) + gamma(D) * G, du = kBf16U * std::fabs(u) + gamma(D) * U;
        const double silu = g * sigmoid(g);
        a[j] = silu * u;
        const double first = 1.1 * dg * std::fabs(u) + std::fabs(silu) * du + 1.1 * dg * du;
        da[j] = first + (kBf16U + 4 * kU) * (std::fabs(a[j]) + first);
      }
      const double ws = wts[t * top_k + s];
      for (int64_t o = 0; o < D; ++o) {
        double d = 0, spread = 0, mag = 0;
        for (int64_t j = 0; j < I; ++j) {
          const double wd = bf16_to_f32(w.down[(e * D + o) * I + j]);
          d += wd * a[j], spread += std::fabs(wd) * da[j], mag += std::fabs(wd) * std::fabs(a[j]);
        }
        const double dd = spread + gamma(I) * mag + kBf16U * (std::fabs(d) + spread + gamma(I) * mag);
        r.y[t * D + o] += ws * d;
        r.bound[t * D + o] += std::fabs(ws) * dd;
        mag_y[t * D + o] += std::fabs(ws * d);
      }
    }
  const double u_out = out_type == DType::F32 ? kU : kBf16U;
  for (size_t i = 0; i < r.y.size(); ++i)
    r.bound[i] = 1.05 * (r.bound[i] + gamma(top_k) * mag_y[i] + u_out * (std::fabs(r.y[i]) + r.bound[i])) + 1e-30;
  return r;
}

struct ExpertCase {
  const char* what;
  int64_t n_tok, top_k, dim, inter, n_experts;
  int64_t n_used;  // ids drawn from experts [0, n_used): the others get no token
  bool one_expert = false;  // every token's slots all name expert n_used - 1
};

std::vector<float> run_experts_gpu(const std::vector<uint16_t>& x, const std::vector<int32_t>& ids,
                                   const std::vector<float>& wts, const ExpertWeights& w, int64_t top_k,
                                   DType out_type, MoeGemm mode, const Tensor* workspace = nullptr) {
  const int64_t n_tok = static_cast<int64_t>(ids.size()) / top_k, D = w.dim;
  const Tensor gx = borrow(x, {n_tok, D}, DType::BF16).to(Device::CUDA);
  const Tensor gi = borrow(ids, {n_tok, top_k}, DType::I32).to(Device::CUDA);
  const Tensor gw = borrow(wts, {n_tok, top_k}, DType::F32).to(Device::CUDA);
  const Tensor ggu = borrow(w.gate_up, {w.n_experts, 2 * w.inter, D}, DType::BF16).to(Device::CUDA);
  const Tensor gdn = borrow(w.down, {w.n_experts, D, w.inter}, DType::BF16).to(Device::CUDA);
  // Poisoned output: an element the kernels never write fails the comparison.
  Tensor out = out_type == DType::F32
                   ? borrow(std::vector<float>(n_tok * D, NAN), {n_tok, D}, DType::F32).to(Device::CUDA)
                   : borrow(std::vector<uint16_t>(n_tok * D, 0x7fc0), {n_tok, D}, DType::BF16).to(Device::CUDA);
  moe_experts(gx, gi, gw, ggu, gdn, out, workspace, mode);
  std::vector<float> r(n_tok * D);
  const Tensor h = out.to(Device::CPU);
  for (int64_t i = 0; i < n_tok * D; ++i)
    r[i] = out_type == DType::F32 ? h.data<float>()[i] : bf16_to_f32(h.data<uint16_t>()[i]);
  return r;
}

TEST(MoeExpertsCuda, MatchesReferenceWithinBf16Bound) {
  IC_CUDA_OR_SKIP();
  test::Rng rng;
  SCOPED_TRACE(rng.seed);
  const std::vector<ExpertCase> cases = {
      {"one token (decode)", 1, 4, 256, 128, 8, 8},
      {"odd sizes, scalar paths", 23, 2, 36, 20, 5, 5},
      {"some experts get no token", 64, 2, 128, 64, 12, 7},
      {"all tokens on one expert", 50, 1, 64, 32, 6, 4, true},
      {"top_k == n_experts", 17, 4, 64, 48, 4, 4},
      {"a block of a prefill", 300, 4, 512, 256, 16, 16},
      {"repeated expert in a token's slots", 20, 3, 64, 32, 4, 2, true},
      {"600 rows on one expert (Auto takes the per-expert loop)", 600, 1, 64, 32, 2, 1, true},
  };
  for (const ExpertCase& c : cases) {
    SCOPED_TRACE(c.what);
    const ExpertWeights w = random_experts(rng, c.n_experts, c.dim, c.inter);
    const auto x = bf16_of(rng.normal(c.n_tok * c.dim));
    const auto ids = c.one_expert ? std::vector<int32_t>(c.n_tok * c.top_k, static_cast<int32_t>(c.n_used - 1))
                                  : random_ids(rng, c.n_tok, c.top_k, c.n_used);
    const auto wts = random_weights(rng, ids.size());
    for (DType out_type : {DType::F32, DType::BF16}) {
      const RefWithBound ref = reference_with_bound(x, ids, wts, w, c.top_k, out_type);
      for (MoeGemm mode : {MoeGemm::Auto, MoeGemm::Grouped, MoeGemm::PerExpert, MoeGemm::Gemv}) {
        if (mode == MoeGemm::Gemv && (c.dim % 8 != 0 || c.inter % 8 != 0)) continue;  // its own test below
        SCOPED_TRACE(testing::Message() << dtype_name(out_type) << " gemm mode " << static_cast<int>(mode));
        const auto got = run_experts_gpu(x, ids, wts, w, c.top_k, out_type, mode);
        const auto again = run_experts_gpu(x, ids, wts, w, c.top_k, out_type, mode);
        ASSERT_EQ(0, std::memcmp(got.data(), again.data(), got.size() * 4)) << "two runs differ";
        double err2 = 0, ref2 = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_NEAR(got[i], ref.y[i], ref.bound[i]) << "token " << i / c.dim << " dim " << i % c.dim;
          err2 += (got[i] - ref.y[i]) * (got[i] - ref.y[i]), ref2 += ref.y[i] * ref.y[i];
        }
        // Four roundings of 2^-8 on each path (g and u, act, each down output, a bf16 out):
        // the normwise error stays within their sum.
        EXPECT_LE(std::sqrt(err2), 4 * kBf16U * std::sqrt(ref2));
      }
    }
  }
}

TEST(MoeExpertsCuda, CallerWorkspaceGivesTheSameBits) {
  IC_CUDA_OR_SKIP();
  test::Rng rng;
  SCOPED_TRACE(rng.seed);
  const int64_t n_tok = 40, top_k = 4, D = 128, I = 64, E = 8;
  const ExpertWeights w = random_experts(rng, E, D, I);
  const auto x = bf16_of(rng.normal(n_tok * D));
  const auto ids = random_ids(rng, n_tok, top_k, E);
  const auto wts = random_weights(rng, ids.size());
  const int64_t bytes = moe_experts_workspace_bytes(n_tok, top_k, D, I, E);
  const Tensor ws = Tensor::empty({(bytes + 3) / 4}, DType::I32, Device::CUDA);
  const auto own = run_experts_gpu(x, ids, wts, w, top_k, DType::F32, MoeGemm::Grouped);
  const auto given = run_experts_gpu(x, ids, wts, w, top_k, DType::F32, MoeGemm::Grouped, &ws);
  EXPECT_EQ(0, std::memcmp(own.data(), given.data(), own.size() * 4));
  const Tensor small = Tensor::empty({bytes / 8}, DType::I32, Device::CUDA);
  expect_error([&] { run_experts_gpu(x, ids, wts, w, top_k, DType::F32, MoeGemm::Grouped, &small); }, "workspace");
}

// The matrix-vector mode has no pass that could refuse a bad id without a host sync: the token
// that holds one gets NaN, every other token its usual result; sizes it cannot vectorise are
// refused.
TEST(MoeExpertsCuda, GemvBadIdPoisonsOnlyItsTokenAndOddSizesAreRefused) {
  IC_CUDA_OR_SKIP();
  test::Rng rng;
  SCOPED_TRACE(rng.seed);
  const int64_t D = 64, I = 32, E = 4, top_k = 2;
  const ExpertWeights w = random_experts(rng, E, D, I);
  const auto x = bf16_of(rng.normal(3 * D));
  const std::vector<float> wts = random_weights(rng, 6);
  const std::vector<int32_t> good = {0, 1, 2, 3, 1, 0}, bad = {0, 1, 2, 4, 1, 0};
  const auto ref = run_experts_gpu(x, good, wts, w, top_k, DType::F32, MoeGemm::Gemv);
  const auto got = run_experts_gpu(x, bad, wts, w, top_k, DType::F32, MoeGemm::Gemv);
  for (int64_t o = 0; o < D; ++o) {
    EXPECT_EQ(ref[o], got[o]) << "token 0, dim " << o;
    EXPECT_TRUE(std::isnan(got[D + o])) << "token 1 (id 4 of 4 experts), dim " << o;
    EXPECT_EQ(ref[2 * D + o], got[2 * D + o]) << "token 2, dim " << o;
  }
  const ExpertWeights odd = random_experts(rng, E, 36, 20);
  const auto xo = bf16_of(rng.normal(3 * 36));
  expect_error([&] { run_experts_gpu(xo, good, wts, odd, top_k, DType::F32, MoeGemm::Gemv); },
               "must be multiples of 8");
}

TEST(MoeExpertsCuda, BadIdIsAClearError) {
  IC_CUDA_OR_SKIP();
  test::Rng rng;
  const ExpertWeights w = random_experts(rng, 4, 16, 8);
  const auto x = bf16_of(rng.normal(3 * 16));
  const std::vector<float> wts(6, 0.5f);
  expect_error([&] { run_experts_gpu(x, {0, 1, 2, 4, 1, -1}, wts, w, 2, DType::F32, MoeGemm::Grouped); },
               "2 of the 6 expert ids are outside [0, 4)");
}

}  // namespace
}  // namespace ic::ops
