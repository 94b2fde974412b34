// Distillation on the DSA family: the MLA teacher (absorbed, streamed by row blocks) against the
// naive double reference, the indexer loss's hand-written backward against finite differences
// (both RoPE layouts, both indexer forms), its scores against the model's own indexer reference,
// L_multi's mean target, the trainer on the tiny checkpoints, and the HF write-back read back by
// our loader. Tolerances are derived from the rounding of each step, never picked to pass.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <vector>

#include "core/error.h"
#include "indexcache/adamw.h"
#include "indexcache/family_loss.h"
#include "indexcache/family_trainer.h"
#include "indexcache/hf_writeback.h"
#include "indexcache/mla_teacher.h"
#include "io/safetensors.h"
#include "model/dsa_family/indexer.h"
#include "model/dsa_family/model.h"
#include "model/dsa_family/weights.h"
#include "test_util.h"

namespace ic {
namespace {

namespace fs = std::filesystem;
constexpr double kU32 = 5.9604644775390625e-8;  // 2^-24

Tensor randn(std::vector<int64_t> dims, std::mt19937& rng, double sd, double mean = 0.0) {
  Shape sh;
  sh.rank = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) sh.dims[i] = dims[i];
  Tensor t = Tensor::empty(sh, DType::F32);
  std::normal_distribution<double> nd(mean, sd);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(nd(rng));
  return t;
}

std::string hf_dir(const std::string& name) { return std::string(IC_SOURCE_DIR) + "/tests/data/hf/" + name; }
#define NEED_HF(name) \
  if (!fs::exists(hf_dir(name) + "/config.json")) GTEST_SKIP() << hf_dir(name) << " is absent"

MlaMoeConfig small_mla() {
  MlaMoeConfig c;
  c.n_heads = 3;
  c.qk_nope_dim = 5;
  c.qk_rope_dim = 4;
  c.v_head_dim = 3;
  c.kv_lora_rank = 6;
  return c;
}

// ---------------------------------------------------------------------------------------------
// The MLA teacher: absorbed rows by blocks vs the naive form in double. The one rounding the
// fast form adds is qa's, to f32 (mla_absorbed_query): each logit moves by at most
// scale * u * sum_j |qa_j kv_j| (+ the same for the f32 product's inputs: none, kv is f32 already),
// so each head's softmax entry moves by a factor within exp(+-2 d_h), d_h = that bound's max over
// keys; the head mean then, and the final rounding to f32 (u relative).
TEST(DistillFamily, MlaTeacherMatchesNaiveReference) {
  const MlaMoeConfig c = small_mla();
  std::mt19937 rng(7);
  const int64_t n = 11, H = c.n_heads, L = c.kv_lora_rank, R = c.qk_rope_dim;
  dsa::MlaWeights w;
  w.kv_b = randn({H * (c.qk_nope_dim + c.v_head_dim), L}, rng, 0.5);
  const Tensor q = randn({n, H, c.qk_nope_dim + R}, rng, 1.0);
  const Tensor kv = randn({n, L + R}, rng, 1.0);
  const double scale = c.softmax_scale();
  const MlaTeacherInput in{mla_absorbed_query(c, w, q), kv};
  const Tensor ref = mla_targets_reference(c, w, q, kv);
  for (int64_t chunk : {int64_t{1}, int64_t{4}, n}) {
    std::vector<float> p(static_cast<size_t>(n * n));
    for (int64_t t0 = 0; t0 < n; t0 += chunk) mla_target_rows(in, scale, t0, std::min(n, t0 + chunk), p.data() + t0 * n);
    for (int64_t t = 0; t < n; ++t) {
      double row = 0.0;
      for (int64_t s = 0; s < n; ++s) {
        const double got = p[t * n + s], want = ref.data<float>()[t * n + s];
        if (s > t) {
          EXPECT_EQ(got, 0.0);
          continue;
        }
        double bound = 0.0;
        for (int64_t h = 0; h < H; ++h) {
          double dmax = 0.0;
          for (int64_t k = 0; k <= t; ++k) {
            double sum = 0.0;
            for (int64_t j = 0; j < L + R; ++j)
              sum += std::fabs(in.qa.data<float>()[(t * H + h) * (L + R) + j] * kv.data<float>()[k * (L + R) + j]);
            dmax = std::max(dmax, scale * kU32 * sum * 1.01);
          }
          bound += (std::exp(2 * dmax) - 1.0) / static_cast<double>(H);
        }
        EXPECT_LE(std::fabs(got - want), (bound + 2 * kU32) * want + 1e-30) << "chunk " << chunk << " t " << t << " s " << s;
        row += got;
      }
      EXPECT_NEAR(row, 1.0, 2 * (t + 1) * kU32);
    }
  }
}

TEST(DistillFamily, MeanTargetRowsIsTheMeanOfLayers) {
  const MlaMoeConfig c = small_mla();
  std::mt19937 rng(8);
  const int64_t n = 9, H = c.n_heads, L = c.kv_lora_rank, R = c.qk_rope_dim;
  std::vector<MlaTeacherInput> layers;
  for (int i = 0; i < 3; ++i) {
    dsa::MlaWeights w;
    w.kv_b = randn({H * (c.qk_nope_dim + c.v_head_dim), L}, rng, 0.5);
    layers.push_back({mla_absorbed_query(c, w, randn({n, H, c.qk_nope_dim + R}, rng, 1.0)), randn({n, L + R}, rng, 1.0)});
  }
  std::vector<float> mean(static_cast<size_t>(n * n)), one(static_cast<size_t>(n * n));
  mean_target_rows(layers, c.softmax_scale(), 0, n, mean.data());
  std::vector<double> sum(static_cast<size_t>(n * n), 0.0);
  for (const MlaTeacherInput& l : layers) {
    mla_target_rows(l, c.softmax_scale(), 0, n, one.data());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += one[i];
  }
  for (size_t i = 0; i < sum.size(); ++i) EXPECT_EQ(mean[i], static_cast<float>(sum[i] / 3.0));
  EXPECT_THROW(mean_target_rows({}, 1.0, 0, n, mean.data()), Error);
}

// ---------------------------------------------------------------------------------------------
// The loss's gradient against central differences of the loss itself (computed in double from
// the f32 weights). Each weight w is moved to the f32 neighbours w +- d (d the actual difference
// after rounding), and the FD error is estimated from the data: Richardson's rule for a
// central difference, |FD(h) - f'| ~ |FD(2h) - FD(h)| / 3, plus the loss's rounding (64 u64 |f|)
// amplified by 1/h. A ReLU kink crossed by the step would show as a large FD(2h) - FD(h) and
// widen that entry's tolerance; the test also asks most entries to agree within a tight bound.
struct Problem {
  FamilyIndexerShape sh{3, 8, 4, 1e-6};
  IndexerWeights w;
  Tensor xq, x, p;
  IndexerRope rope;
};

Problem make_problem(uint64_t seed, bool half, int64_t n, int64_t Dq, int64_t D) {
  Problem pr;
  std::mt19937 rng(seed);
  const int64_t Hi = pr.sh.n_heads, Di = pr.sh.head_dim;
  pr.w.wq = randn({Hi * Di, Dq}, rng, 1.0 / std::sqrt(Dq));
  pr.w.wk = randn({Di, D}, rng, 1.0 / std::sqrt(D));
  pr.w.k_norm = randn({Di}, rng, 0.25, 1.0);
  pr.w.k_bias = randn({Di}, rng, 0.1);
  pr.w.wproj = randn({Hi, D}, rng, 1.0 / std::sqrt(D));
  pr.xq = randn({n, Dq}, rng, 1.0);
  pr.x = randn({n, D}, rng, 1.0);
  pr.p = Tensor::zeros({n, n}, DType::F32);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int64_t t = 0; t < n; ++t) {
    double z = 0.0;
    std::vector<double> r(static_cast<size_t>(t + 1));
    for (auto& v : r) z += (v = std::exp(3.0 * u(rng)));
    for (int64_t s = 0; s <= t; ++s) pr.p.data<float>()[t * n + s] = static_cast<float>(r[s] / z);
  }
  pr.rope = IndexerRope::from_base(10000.0, 4, half ? ops::RopeStyle::kHalf : ops::RopeStyle::kAdjacent, n);
  return pr;
}

FamilyLossInput input_of(const Problem& pr, int64_t chunk) {
  FamilyLossInput in;
  in.xq = pr.xq;
  in.x = pr.x;
  in.rope = &pr.rope;
  in.chunk = chunk;
  const int64_t n = pr.x.dim(0);
  const Tensor p = pr.p;
  in.targets = [p, n](int64_t t0, int64_t t1, float* out) {
    std::copy(p.data<float>() + t0 * n, p.data<float>() + t1 * n, out);
  };
  return in;
}

void check_gradient(bool half) {
  Problem pr = make_problem(half ? 11 : 12, half, 7, 5, 6);
  const FamilyLossInput in = input_of(pr, 3);
  IndexerWeights g = zeros_like(pr.w);
  const DistillStats st = family_indexer_loss(pr.sh, pr.w, in, &g);
  ASSERT_EQ(st.rows, 7);
  ASSERT_GT(st.loss, 0.0);
  Tensor* ws[] = {&pr.w.wq, &pr.w.wk, &pr.w.k_norm, &pr.w.k_bias, &pr.w.wproj};
  const Tensor* gs[] = {&g.wq, &g.wk, &g.k_norm, &g.k_bias, &g.wproj};
  const char* names[] = {"wq", "wk", "k_norm", "k_bias", "wproj"};
  int tight = 0, total = 0;
  for (int j = 0; j < 5; ++j)
    for (int64_t i = 0; i < ws[j]->numel(); ++i) {
      float& w = ws[j]->data<float>()[i];
      const float w0 = w;
      auto fd = [&](double h) {
        const float up = static_cast<float>(w0 + h), dn = static_cast<float>(w0 - h);
        w = up;
        const double fu = family_indexer_loss(pr.sh, pr.w, in, nullptr).loss;
        w = dn;
        const double fdn = family_indexer_loss(pr.sh, pr.w, in, nullptr).loss;
        w = w0;
        return (fu - fdn) / (static_cast<double>(up) - static_cast<double>(dn));
      };
      const double h = std::ldexp(1.0, -14);
      const double f1 = fd(h), f2 = fd(2 * h);
      const double tol = std::fabs(f2 - f1) / 3.0 * 2.0 + 64 * 1.1e-16 * st.loss / h +
                         2 * kU32 * std::fabs(gs[j]->data<float>()[i]);
      const double got = gs[j]->data<float>()[i];
      EXPECT_LE(std::fabs(got - f1), tol) << names[j] << "[" << i << "] grad " << got << " fd " << f1;
      ++total;
      tight += std::fabs(got - f1) <= 1e-5 * std::max(1.0, std::fabs(f1));
    }
  EXPECT_GE(tight, total * 9 / 10) << "most entries agree tightly";
}

TEST(DistillFamily, GradientMatchesFiniteDifferencesHalfRope) { check_gradient(true); }
TEST(DistillFamily, GradientMatchesFiniteDifferencesInterleavedRope) { check_gradient(false); }

TEST(DistillFamily, ChunkingDoesNotChangeTheResult) {
  const Problem pr = make_problem(13, true, 9, 5, 6);
  IndexerWeights g1 = zeros_like(pr.w), g2 = zeros_like(pr.w);
  const DistillStats a = family_indexer_loss(pr.sh, pr.w, input_of(pr, 1), &g1);
  const DistillStats b = family_indexer_loss(pr.sh, pr.w, input_of(pr, 9), &g2);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.recall_sum, b.recall_sum);
  for (int64_t i = 0; i < g1.wq.numel(); ++i) EXPECT_EQ(g1.wq.data<float>()[i], g2.wq.data<float>()[i]);
  for (int64_t i = 0; i < g1.wk.numel(); ++i) EXPECT_EQ(g1.wk.data<float>()[i], g2.wk.data<float>()[i]);
}

// RoPE's transpose is its inverse up to the attention factor squared: R^T R x = f^2 x.
TEST(DistillFamily, RopeTransposeIsTheAdjoint) {
  for (bool half : {true, false}) {
    const IndexerRope r = IndexerRope::from_base(100.0, 6, half ? ops::RopeStyle::kHalf : ops::RopeStyle::kAdjacent, 5);
    std::mt19937 rng(3);
    std::normal_distribution<double> nd;
    std::vector<double> x(8), y(8);
    for (auto& v : x) v = nd(rng);
    for (auto& v : y) v = nd(rng);
    std::vector<double> rx = x, rty = y;
    r.apply(rx.data(), 4, false);
    r.apply(rty.data(), 4, true);
    double a = 0.0, b = 0.0;
    for (int i = 0; i < 6; ++i) {
      a += rx[i] * y[i];
      b += x[i] * rty[i];
    }
    EXPECT_NEAR(a, b, 1e-14 * 8);
  }
}

// The loss's scores are the model's indexer: against dsa::indexer_scores_reference on the tiny
// checkpoints' own indexers (both RoPE layouts, YaRN in deepseek_v32-tiny). Both in double from
// the same f32 inputs: they differ only by summation order, ~Di u64 relative.
void check_own_scores(const std::string& name) {
  std::unique_ptr<MlaMoeModel> m = MlaMoeModel::load(hf_dir(name), Device::CPU, {});
  const MlaMoeConfig& c = m->config();
  std::mt19937 rng(5);
  const int64_t n = 10;
  const Tensor x = randn({n, c.hidden}, rng, 1.0), ql = randn({n, c.q_lora_rank}, rng, 1.0);
  const dsa::IndexerWeights& iw = m->layer(0).indexer;
  ASSERT_TRUE(iw.loaded());
  const IndexerWeights w{iw.wq_b, iw.wk, iw.k_norm, iw.k_bias, iw.weights_proj};
  const FamilyIndexerShape sh{c.index_n_heads, c.index_head_dim, c.index_topk, 1e-6};
  const std::vector<double> got =
      family_indexer_scores(sh, w, ql, x, IndexerRope::from_table(m->rope(), c.index_rope, n));
  const std::vector<double> want = dsa::indexer_scores_reference(c, m->rope(), iw, x, ql);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t s = 0; s <= t; ++s)
      EXPECT_NEAR(got[t * n + s], want[t * n + s], 1e-12 * (1.0 + std::fabs(want[t * n + s]))) << name << " " << t << "," << s;
}
TEST(DistillFamily, ScoresAreTheCheckpointIndexerDeepseekV32) {
  NEED_HF("deepseek_v32-tiny");
  check_own_scores("deepseek_v32-tiny");
}
TEST(DistillFamily, ScoresAreTheCheckpointIndexerGlmMoeDsa) {
  NEED_HF("glm_moe_dsa-tiny");
  check_own_scores("glm_moe_dsa-tiny");
}

// The x-fed form is the project's attached indexer: same top-k as indexer_topk_reference.
TEST(DistillFamily, XFedScoresAreTheProjectIndexer) {
  IndexerConfig cfg;
  cfg.n_heads = 3;
  cfg.head_dim = 8;
  cfg.rope_dim = 4;
  cfg.topk = 3;
  cfg.rope_base = 500.0f;
  for (ops::RopeStyle st : {ops::RopeStyle::kHalf, ops::RopeStyle::kAdjacent}) {
    cfg.rope_style = st;
    const int64_t n = 12, D = 16;
    const IndexerWeights w = IndexerWeights::random(cfg, D, 9);
    std::mt19937 rng(4);
    const Tensor x = randn({n, D}, rng, 1.0);
    const std::vector<double> I = family_indexer_scores({cfg.n_heads, cfg.head_dim, cfg.topk, cfg.norm_eps}, w, x, x,
                                                        IndexerRope::from_base(cfg.rope_base, cfg.rope_dim, st, n));
    const std::vector<int32_t> want = indexer_topk_reference(cfg, w, x.data<float>(), n, D);
    const std::vector<int32_t> got = dsa::topk_reference(I, n, n, 0, cfg.topk);
    EXPECT_EQ(got, want);
  }
}

// FamilyAdamW (any shapes) is adamw.h's AdamW: the same bits on the project indexer's shapes, with
// warm-up, cosine, weight decay and clipping all active.
TEST(DistillFamily, FamilyAdamWIsAdamW) {
  IndexerConfig icfg;
  icfg.n_heads = 2;
  icfg.head_dim = 8;
  icfg.rope_dim = 4;
  AdamWConfig a;
  a.lr = 1e-2;
  a.warmup_steps = 2;
  a.total_steps = 6;
  a.weight_decay = 0.1;
  a.clip_norm = 0.5;
  IndexerWeights w1 = IndexerWeights::random(icfg, 12, 3), w2 = IndexerWeights::random(icfg, 12, 3);
  AdamW ref(a, icfg, 12);
  FamilyAdamW got(a, w2);
  for (int step = 0; step < 6; ++step) {
    const IndexerWeights g = IndexerWeights::random(icfg, 12, 100 + static_cast<uint64_t>(step));
    const AdamWStepInfo x = ref.step(w1, g), y = got.step(w2, g);
    EXPECT_EQ(x.lr, y.lr);
    EXPECT_EQ(x.grad_norm, y.grad_norm);
    for (auto [p, q] : {std::pair{&w1.wq, &w2.wq}, std::pair{&w1.wk, &w2.wk}, std::pair{&w1.k_norm, &w2.k_norm},
                        std::pair{&w1.k_bias, &w2.k_bias}, std::pair{&w1.wproj, &w2.wproj}})
      for (int64_t i = 0; i < p->numel(); ++i) ASSERT_EQ(p->data<float>()[i], q->data<float>()[i]) << step;
  }
}

// ---------------------------------------------------------------------------------------------
// The trainer on the tiny checkpoints: the held-out KL falls, and the trained weights are
// written back and read by our loader with the pattern.
std::string text_file(const fs::path& dir) {
  std::string text;
  for (int i = 0; i < 60; ++i)
    text += "the quick brown fox " + std::to_string(i * 7 % 13) + " jumps over the lazy dog number " +
            std::to_string(i) + ". ";
  const fs::path p = dir / "train.txt";
  std::FILE* f = std::fopen(p.c_str(), "w");
  std::fputs(text.c_str(), f);
  std::fclose(f);
  return p.string();
}

TextWindows windows_for(const MlaMoeModel& m, const std::string& path, int64_t ctx) {
  TextDataOptions o;
  o.ctx = ctx;
  o.separator = m.tokenizer().eos_id();
  const Tokenizer& tok = m.tokenizer();
  return TextWindows::load({path}, [&](std::string_view t) { return tok.encode(t, false); }, o);
}

TEST(DistillFamily, PatternTrainingLowersKlAndWritesBack) {
  NEED_HF("glm_moe_dsa-tiny");
  test::TempDir tmp("distill_family");
  std::unique_ptr<MlaMoeModel> m = MlaMoeModel::load(hf_dir("glm_moe_dsa-tiny"), Device::CPU, {});
  const TextWindows data = windows_for(*m, text_file(tmp.path), 24);
  ASSERT_GE(data.n_windows(), 2);
  FamilyTrainerConfig cfg;
  cfg.mode = DistillMode::kPattern;
  cfg.pattern = LayerPattern::parse("FSSF", 4);
  cfg.adamw.lr = 3e-3;
  cfg.adamw.total_steps = 6;
  cfg.batch = 2;
  cfg.chunk = 7;
  FamilyTrainer tr(*m, data, cfg);
  const EvalReport before = evaluate_family(*m, tr.indexers(), data);
  while (!tr.done()) tr.step();
  const EvalReport after = evaluate_family(*m, tr.indexers(), data);
  ASSERT_EQ(after.layers.size(), 4u);
  EXPECT_EQ(after.layers[2].source, 0);
  EXPECT_LT(after.mean_kl(), before.mean_kl());

  std::map<int64_t, dsa::IndexerWeights> trained;
  for (int64_t l : tr.pattern().full_layers()) trained[l] = tr.checkpoint_weights(l);
  const fs::path out = tmp.path / "out";
  const WritebackReport rep = write_indexers_hf(hf_dir("glm_moe_dsa-tiny"), out.string(), trained, tr.pattern());
  EXPECT_EQ(rep.tensors, 10);
  EXPECT_EQ(rep.dtypes.at(hf_indexer_name(0, "wq_b.weight")), "BF16");
  EXPECT_EQ(rep.dtypes.at(hf_indexer_name(0, "k_norm.bias")),
            safetensors::ShardedModel::open(hf_dir("glm_moe_dsa-tiny") + "/model.safetensors.index.json")
                .tensor(hf_indexer_name(0, "k_norm.bias"))
                .dtype_name);
  EXPECT_THROW(write_indexers_hf(hf_dir("glm_moe_dsa-tiny"), out.string(), trained, tr.pattern()), Error);

  std::unique_ptr<MlaMoeModel> back = MlaMoeModel::load(out.string(), Device::CPU, {});
  ASSERT_TRUE(back->pattern());
  EXPECT_EQ(back->pattern()->str(), "FSSF");
  for (int64_t l : {0, 3}) {
    const dsa::IndexerWeights& got = back->layer(l).indexer;
    ASSERT_TRUE(got.loaded());
    const Tensor* g[] = {&got.wq_b, &got.wk, &got.k_norm, &got.weights_proj};
    const Tensor* w[] = {&trained[l].wq_b, &trained[l].wk, &trained[l].k_norm, &trained[l].weights_proj};
    for (int j = 0; j < 4; ++j) {
      ASSERT_EQ(g[j]->numel(), w[j]->numel());
      const std::string dt = rep.dtypes.at(hf_indexer_name(l, j == 0 ? "wq_b.weight" : j == 1 ? "wk.weight" : j == 2 ? "k_norm.weight" : "weights_proj.weight"));
      for (int64_t i = 0; i < g[j]->numel(); ++i) {
        const float v = w[j]->data<float>()[i];
        const float want = dt == "BF16" ? bf16_to_f32(f32_to_bf16(v)) : v;
        ASSERT_EQ(g[j]->data<float>()[i], want) << l << " " << j << " " << i;
      }
    }
  }
  // Everything else is the source's: a layer's attention weights and the untouched S indexer.
  const Tensor& a = back->layer(2).attn.kv_b;
  const Tensor& b = m->layer(2).attn.kv_b;
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data<float>()[i], b.data<float>()[i]);
  const safetensors::ShardedModel src = safetensors::ShardedModel::open(hf_dir("glm_moe_dsa-tiny") + "/model.safetensors.index.json");
  const safetensors::ShardedModel dst = safetensors::ShardedModel::open((out / "model.safetensors.index.json").string());
  EXPECT_EQ(rep.dropped, 10);  // layers 1 and 2 (S) had indexers in the all-F source
  EXPECT_EQ(src.weight_map().size(), dst.weight_map().size() + 10);
  for (const auto& [name, shard] : src.weight_map()) {
    const bool s_indexer = name.find(".self_attn.indexer.") != std::string::npos &&
                           (name.find("layers.1.") != std::string::npos || name.find("layers.2.") != std::string::npos);
    ASSERT_EQ(dst.has(name), !s_indexer) << name;
  }
  dst.check_all();
}

// A single-file checkpoint whose S layers have no indexer: training FFSF gives layer 1 one (in
// the dtype the other layers store), and the output has an index over a base file and the new shard.
TEST(DistillFamily, WriteBackSingleFileAddsMissingIndexers) {
  NEED_HF("glm_moe_dsa-shared-tiny");
  test::TempDir tmp("distill_family");
  std::unique_ptr<MlaMoeModel> m = MlaMoeModel::load(hf_dir("glm_moe_dsa-shared-tiny"), Device::CPU, {});
  const TextWindows data = windows_for(*m, text_file(tmp.path), 16);
  FamilyTrainerConfig cfg;
  cfg.mode = DistillMode::kPattern;
  cfg.pattern = LayerPattern::parse("FFSF", 4);
  cfg.adamw.total_steps = 1;
  FamilyTrainer tr(*m, data, cfg);
  tr.step();
  std::map<int64_t, dsa::IndexerWeights> trained;
  for (int64_t l : tr.pattern().full_layers()) trained[l] = tr.checkpoint_weights(l);
  const fs::path out = tmp.path / "out";
  const WritebackReport rep = write_indexers_hf(hf_dir("glm_moe_dsa-shared-tiny"), out.string(), trained, tr.pattern());
  EXPECT_EQ(rep.dtypes.at(hf_indexer_name(1, "wq_b.weight")), rep.dtypes.at(hf_indexer_name(0, "wq_b.weight")));
  EXPECT_TRUE(fs::exists(out / "model-base.safetensors"));
  EXPECT_FALSE(fs::exists(out / "model.safetensors"));
  std::unique_ptr<MlaMoeModel> back = MlaMoeModel::load(out.string(), Device::CPU, {});
  EXPECT_EQ(back->pattern()->str(), "FFSF");
  EXPECT_TRUE(back->layer(1).indexer.loaded());
}

// Dense MLA (glm4_moe_lite): the DSA warm-up trains x-fed indexers on every layer; attached,
// the model runs sparse.
TEST(DistillFamily, DenseMlaWarmupAttaches) {
  NEED_HF("glm4_moe_lite-tiny");
  test::TempDir tmp("distill_family");
  std::unique_ptr<MlaMoeModel> m = MlaMoeModel::load(hf_dir("glm4_moe_lite-tiny"), Device::CPU, {});
  const TextWindows data = windows_for(*m, text_file(tmp.path), 24);
  FamilyTrainerConfig cfg;
  cfg.mode = DistillMode::kWarmup;
  cfg.attach.n_heads = 2;
  cfg.attach.head_dim = 16;
  cfg.attach.rope_dim = 8;
  cfg.attach.topk = 6;
  cfg.attach.rope_base = static_cast<float>(m->config().rope.theta);
  cfg.adamw.lr = 3e-3;
  cfg.adamw.total_steps = 6;
  cfg.batch = 2;
  FamilyTrainer tr(*m, data, cfg);
  const EvalReport before = evaluate_family(*m, tr.indexers(), data);
  while (!tr.done()) tr.step();
  const EvalReport after = evaluate_family(*m, tr.indexers(), data);
  EXPECT_LT(after.mean_kl(), before.mean_kl());
  EXPECT_THROW(tr.checkpoint_weights(0), Error);
  m->set_dsa(std::make_shared<DsaSpec>(tr.spec()));
  EXPECT_EQ(m->pattern()->str(), "FFF");
}

}  // namespace
}  // namespace ic
