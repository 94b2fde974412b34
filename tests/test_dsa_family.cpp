// The DSA family (model/dsa_family/) on tiny random HF folders written here: config.json reading
// for the three architectures and its errors, the rotary tables, absorbed == naive MLA, the
// indexer's engine path against a double reference, the router on hand-worked cases, prefill then
// decode == one prefill, IndexCache reuse (S layers attend over their F layer's selection, S
// layers' indexer tensors are never read), both expert layouts, and bad checkpoints.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "dsa_family_test_util.h"
#include "io/hf_folder.h"
#include "model/dsa_family/cache.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/cpu_math.h"
#include "model/dsa_family/indexer.h"
#include "model/dsa_family/mla.h"
#include "model/dsa_family/model.h"
#include "model/dsa_family/moe.h"
#include "model/dsa_family/rope.h"

namespace ic {
namespace {

using test::TempFolder;
namespace fs = std::filesystem;
using test::TinySpec;
using nlohmann::json;

constexpr double kEps32 = 1.0 / (1 << 23);  // f32 unit roundoff * 2 (machine epsilon)

std::string preset(const std::string& name) { return std::string(IC_SOURCE_DIR) + "/models/presets/" + name; }

MlaMoeConfig config_of(const json& j) { return MlaMoeConfig::from_hf(hf::Config::parse(j.dump(), "test/config.json")); }

// A folder of `spec` with its random weights (optionally edited first), loaded.
struct TinyModel {
  TempFolder dir;
  test::TensorMap weights;
  std::unique_ptr<MlaMoeModel> model;
  TinyModel(const TinySpec& spec, uint64_t seed, const FamilyOptions& opt = {},
            const std::function<void(test::TensorMap&)>& edit = nullptr) {
    weights = test::tiny_weights(spec, seed);
    if (edit) edit(weights);
    test::write_folder(dir.str(), spec.config(), weights);
    model = MlaMoeModel::load(dir.str(), Device::CPU, opt);
  }
};

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = d(rng);
  return t;
}

Tensor logits_of(Model& m, const std::vector<int32_t>& tokens) {
  auto cache = m.make_cache(static_cast<int64_t>(tokens.size()) + 4);
  Tensor logits;
  m.forward(tokens, *cache, logits, true);
  return logits;
}

double max_abs(const Tensor& t) {
  double m = 0.0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(static_cast<double>(t.data<float>()[i])));
  return m;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double m = 0.0;
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
  return m;
}

// Taps of one forward: name -> layer -> a copy of the tensor.
using Taps = std::map<std::string, std::map<int, Tensor>>;
Taps record(Model& m, const std::vector<int32_t>& tokens) {
  Taps taps;
  m.set_tensor_callback([&](const std::string& name, int layer, const Tensor& t) { taps[name][layer] = t.to(Device::CPU); });
  logits_of(m, tokens);
  m.set_tensor_callback(nullptr);
  return taps;
}

// ------------------------------------------------------------------------------------------------
// config.json

TEST(DsaFamilyConfig, PresetsReadAsTheHFClassesRead) {
  const MlaMoeConfig v = MlaMoeConfig::from_hf(hf::Config::load(preset("deepseek-v32.json")));
  EXPECT_EQ(v.arch, DsaArch::DeepseekV32);
  EXPECT_EQ(v.n_layers, 61);
  EXPECT_EQ(v.q_lora_rank, 1536);
  EXPECT_EQ(v.qk_head_dim(), 192);
  EXPECT_EQ(v.rope.type, "yarn");  // legacy rope_scaling with "type"
  EXPECT_EQ(v.rope.factor, 40.0);
  EXPECT_EQ(v.rope.original_max_positions, 4096);
  EXPECT_EQ(v.rope.attention_factor, 1.0);  // mscale == mscale_all_dim
  const double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(v.softmax_scale(), m * m / std::sqrt(192.0), 1e-15);
  EXPECT_FALSE(v.moe_layer[2]);
  EXPECT_TRUE(v.moe_layer[3]);
  EXPECT_EQ(v.n_group, 8);
  EXPECT_EQ(v.topk_group, 4);
  EXPECT_EQ(v.index_n_heads, 64);
  EXPECT_EQ(v.index_topk, 2048);
  EXPECT_EQ(v.index_rope, MlaRope::Half);
  EXPECT_EQ(v.mla_rope, MlaRope::Interleave);
  EXPECT_EQ(v.n_mtp_layers, 1);

  const MlaMoeConfig g = MlaMoeConfig::from_hf(hf::Config::load(preset("glm47-flash-dsa.json")));
  EXPECT_EQ(g.arch, DsaArch::GlmMoeDsa);
  EXPECT_EQ(g.n_layers, 47);
  EXPECT_EQ(g.n_heads, 20);
  EXPECT_EQ(g.v_head_dim, 256);
  EXPECT_FALSE(g.moe_layer[0]);
  EXPECT_TRUE(g.moe_layer[1]);
  EXPECT_EQ(g.index_rope, MlaRope::Interleave);
  EXPECT_EQ(g.rope.type, "default");
  EXPECT_EQ(g.rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(g.softmax_scale(), 1.0 / std::sqrt(256.0));
  EXPECT_DOUBLE_EQ(g.rms_norm_eps, 1e-5);

  const MlaMoeConfig g5 = MlaMoeConfig::from_hf(hf::Config::load(preset("glm5.json")));
  EXPECT_EQ(g5.n_layers, 78);
  EXPECT_EQ(g5.index_n_heads, 32);
}

TEST(DsaFamilyConfig, DefaultsAndConventionsPerArchitecture) {
  // Glm4MoeLiteConfig has no first_k_dense_replace: one dense layer unless mlp_layer_types says
  // otherwise; its q_lora_rank may be null; its rope layout follows rope_interleave.
  json lite = TinySpec::lite().config();
  lite.erase("mlp_layer_types");
  lite["first_k_dense_replace"] = 2;
  lite["rope_interleave"] = false;
  const MlaMoeConfig l = config_of(lite);
  EXPECT_FALSE(l.moe_layer[0]);
  EXPECT_TRUE(l.moe_layer[1]);
  EXPECT_EQ(l.q_lora_rank, 0);
  EXPECT_EQ(l.mla_rope, MlaRope::Half);
  EXPECT_FALSE(l.has_indexer_arch());
  // deepseek_v32 reads first_k_dense_replace (default 3) and always interleaves.
  json v = TinySpec().config();
  v.erase("mlp_layer_types");
  v["rope_interleave"] = false;
  const MlaMoeConfig c = config_of(v);
  EXPECT_EQ(c.moe_layer, (std::vector<bool>{false, false, false, true}));
  EXPECT_EQ(c.mla_rope, MlaRope::Interleave);
  v["first_k_dense_replace"] = 1;
  EXPECT_EQ(config_of(v).moe_layer, (std::vector<bool>{false, true, true, true}));
  // Legacy rope_theta + rope_scaling {"type": "yarn"} reads as rope_parameters does.
  json legacy = TinySpec().config();
  legacy.erase("rope_parameters");
  legacy["rope_theta"] = 10000.0;
  legacy["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64},
                            {"mscale", 1.0}, {"mscale_all_dim", 0.8}};
  const MlaMoeConfig a = config_of(legacy), b = config_of(TinySpec().config());
  EXPECT_EQ(a.rope.type, "yarn");
  EXPECT_DOUBLE_EQ(a.rope.attention_factor, b.rope.attention_factor);
  EXPECT_DOUBLE_EQ(a.softmax_scale(), b.softmax_scale());
  const double mf = (0.1 * std::log(4.0) + 1.0) / (0.1 * 0.8 * std::log(4.0) + 1.0);
  EXPECT_NEAR(b.rope.attention_factor, mf, 1e-15);
}

TEST(DsaFamilyConfig, RefusesWhatHFCannotRun) {
  json j = TinySpec().config();
  j["architectures"] = {"LlamaForCausalLM"};
  EXPECT_DSA_ERROR(config_of(j), "DeepseekV32ForCausalLM (deepseek_v32), GlmMoeDsaForCausalLM (glm_moe_dsa), "
                                 "Glm4MoeLiteForCausalLM (glm4_moe_lite)");
  EXPECT_DSA_ERROR(config_of(j), "'LlamaForCausalLM'");
  j = TinySpec().config();
  j["q_lora_rank"] = nullptr;
  EXPECT_DSA_ERROR(config_of(j), "needs a q_lora_rank");
  j = TinySpec().config();
  j["num_key_value_heads"] = 1;
  EXPECT_DSA_ERROR(config_of(j), "'num_key_value_heads'");
  j = TinySpec().config();
  j["scoring_func"] = "softmax";
  EXPECT_DSA_ERROR(config_of(j), "'scoring_func'");
  j = TinySpec().config();
  j["rope_parameters"]["rope_type"] = "llama3";
  EXPECT_DSA_ERROR(config_of(j), "rope type 'llama3' is not supported");
  j = TinySpec().config();
  j["n_group"] = 3;
  EXPECT_DSA_ERROR(config_of(j), "not a multiple of n_group");
  j = TinySpec().config();
  j["num_hidden_layers"] = "4";
  EXPECT_DSA_ERROR(config_of(j), "'num_hidden_layers'");
  // Sizes no model has are refused before anything is allocated for them.
  j = TinySpec().config();
  j.erase("mlp_layer_types");
  j["num_hidden_layers"] = int64_t{1} << 40;
  EXPECT_DSA_ERROR(config_of(j), "'num_hidden_layers': 1099511627776 layers, outside [1, 65536]");
  j = TinySpec().config();
  j["n_routed_experts"] = int64_t{1} << 40;
  EXPECT_DSA_ERROR(config_of(j), "'n_routed_experts' is 1099511627776");
  j = TinySpec().config();
  j["rope_parameters"]["rope_theta"] = -1.0;
  EXPECT_DSA_ERROR(config_of(j), "'rope_theta' must be positive");
  j = TinySpec().config();
  j["mlp_layer_types"] = {"dense"};
  EXPECT_DSA_ERROR(config_of(j), "'mlp_layer_types': 1 entries for 4 layers");
}

// ------------------------------------------------------------------------------------------------
// RoPE

TEST(DsaFamilyRope, YarnKeepsFastDimsAndInterpolatesSlowOnes) {
  const MlaMoeConfig c = config_of(TinySpec().config());  // yarn factor 4, original 64, dim 8
  const dsa::RopeTable yarn(c.rope, 32);
  RopeScaling plain;
  const dsa::RopeTable def(plain, 32);
  for (int64_t i = 0; i < 16; ++i)
    EXPECT_NEAR(def.inv_freq()[i], std::pow(10000.0, -2.0 * i / 32.0), 1e-6 * def.inv_freq()[i]) << i;
  // Beyond the correction range the wavelength exceeds the original context: divided by factor.
  // Inside it (many turns over the original context) the frequency is kept.
  EXPECT_NEAR(yarn.inv_freq()[0], def.inv_freq()[0], 1e-7);
  EXPECT_NEAR(yarn.inv_freq()[15], def.inv_freq()[15] / 4.0, 1e-6 * def.inv_freq()[15]);
  EXPECT_NEAR(yarn.attention_factor(), c.rope.attention_factor, 0.0);
}

TEST(DsaFamilyRope, InterleavedIsHalfSplitOfTheDeinterleavedPairs) {
  RopeScaling r;
  const dsa::RopeTable rope(r, 8);
  const float x[8] = {0.3f, -1.2f, 0.7f, 2.0f, -0.4f, 0.9f, 1.5f, -0.8f};
  float inter[8], half[8];
  std::copy(x, x + 8, inter);
  for (int i = 0; i < 4; ++i) {
    half[i] = x[2 * i];
    half[i + 4] = x[2 * i + 1];
  }
  rope.apply(inter, 7, MlaRope::Interleave);
  rope.apply(half, 7, MlaRope::Half);
  for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(inter[i], half[i]) << i;
  // A rotation: relative positions only. q(p).k(p') = q(p+3).k(p'+3).
  float q1[8], k1[8], q2[8], k2[8];
  std::copy(x, x + 8, q1);
  std::copy(x, x + 8, q2);
  for (int i = 0; i < 8; ++i) k1[i] = k2[i] = static_cast<float>(i) * 0.25f - 1.0f;
  rope.apply(q1, 9, MlaRope::Half);
  rope.apply(k1, 4, MlaRope::Half);
  rope.apply(q2, 12, MlaRope::Half);
  rope.apply(k2, 7, MlaRope::Half);
  EXPECT_NEAR(dsa::dot(q1, k1, 8), dsa::dot(q2, k2, 8), 1e-5);
}

// ------------------------------------------------------------------------------------------------
// MLA: absorbed == naive

TEST(DsaFamilyMla, AbsorbedEqualsNaiveDenseAndSparse) {
  TinyModel tm(TinySpec(), 11);
  const MlaMoeModel& m = *tm.model;
  const MlaMoeConfig& c = m.config();
  const int64_t n = 9, p0 = 4, T = p0 + n;
  std::mt19937 rng(5);
  const Tensor h_all = test::random_tensor({T, c.hidden}, rng, 1.0);
  const dsa::LayerWeights& L = m.layer(1);
  const Tensor kv = dsa::mla_kv_rows(c, m.rope(), L.attn, h_all, 0);
  const Tensor h = h_all.slice_rows(p0, T);
  const dsa::MlaQuery q = dsa::mla_query(c, m.rope(), L.attn, h, p0);
  // A selection with -1 holes, a short row and the query's own position.
  Tensor sel = Tensor::empty({n, 4}, DType::I32);
  for (int64_t t = 0; t < n; ++t) {
    int32_t* r = sel.data<int32_t>() + t * 4;
    r[0] = static_cast<int32_t>(p0 + t);
    r[1] = t % 3 == 0 ? -1 : static_cast<int32_t>(t);
    r[2] = static_cast<int32_t>((7 * t + 1) % (p0 + t + 1));
    r[3] = t == 2 ? -1 : 0;
    if (r[2] == r[0] || r[2] == r[1] || r[2] == r[3]) r[2] = -1;
    if (r[3] == r[1]) r[3] = -1;
  }
  for (const Tensor* s : {static_cast<const Tensor*>(nullptr), static_cast<const Tensor*>(&sel)}) {
    Tensor a = Tensor::empty({n, c.n_heads, c.v_head_dim}, DType::F32), b = a.to(Device::CPU);
    const dsa::MlaAttendArgs args{&q.q, kv.data<float>(), s, p0, c.softmax_scale()};
    dsa::mla_attend(dsa::MlaForm::Absorbed, c, L.attn, args, a);
    dsa::mla_attend(dsa::MlaForm::Naive, c, L.attn, args, b);
    // Both accumulate in double; they differ by the f32 roundings of their intermediates (the
    // naive form stores decompressed k and v, the absorbed its output), a few ulps of values
    // bounded by the latent's norm times kv_b's rows: kv_lora-long sums.
    const double tol = 8 * kEps32 * std::sqrt(static_cast<double>(c.kv_lora_rank)) * std::max(1.0, max_abs(a));
    EXPECT_LE(max_abs_diff(a, b), tol) << (s ? "sparse" : "dense");
    EXPECT_GT(max_abs(a), 0.1);
  }
  // A later key is refused, not read.
  sel.data<int32_t>()[0] = static_cast<int32_t>(p0 + 1);
  Tensor a = Tensor::empty({n, c.n_heads, c.v_head_dim}, DType::F32);
  const dsa::MlaAttendArgs bad{&q.q, kv.data<float>(), &sel, p0, c.softmax_scale()};
  EXPECT_DSA_ERROR(dsa::mla_attend(dsa::MlaForm::Absorbed, c, L.attn, bad, a), "selects key 5");
}

TEST(DsaFamilyMla, WholeModelAbsorbedEqualsNaive) {
  TinyModel tm(TinySpec::glm(), 12);
  const std::vector<int32_t> tokens = random_tokens(14, 64, 3);
  const Tensor a = logits_of(*tm.model, tokens);
  tm.model->set_mla_form(dsa::MlaForm::Naive);
  const Tensor b = logits_of(*tm.model, tokens);
  // Per-layer differences of a few f32 ulps (above) pass through 4 layers and the head; a
  // top-k choice could flip on an exact tie only, which random weights do not produce.
  EXPECT_LE(max_abs_diff(a, b), 64 * kEps32 * std::sqrt(20.0) * std::max(1.0, max_abs(a)));
}

// ------------------------------------------------------------------------------------------------
// The indexer: engine (ops::indexer_topk on f32 activations) against the double reference

TEST(DsaFamilyIndexer, EngineScoresAndTopkMatchTheDoubleReference) {
  for (const TinySpec& spec : {TinySpec(), TinySpec::glm()}) {
    TinyModel tm(spec, 21);
    const MlaMoeModel& m = *tm.model;
    const MlaMoeConfig& c = m.config();
    const int64_t n = 23, k = c.index_topk, Hi = c.index_n_heads, Di = c.index_head_dim;
    const Taps taps = record(*tm.model, random_tokens(n, c.vocab, 9));
    int64_t rows_checked = 0;
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const int li = static_cast<int>(l);
      const std::vector<double> ref = dsa::indexer_scores_reference(
          c, m.rope(), m.layer(l).indexer, taps.at("attn_norm").at(li), taps.at("q_latent").at(li));
      const Tensor& eng = taps.at("index_scores").at(li);
      const Tensor& iq = taps.at("index_q").at(li);
      const Tensor& ik = taps.at("index_k").at(li);
      const Tensor& iw = taps.at("index_w").at(li);
      const Tensor& tk = taps.at("topk").at(li);
      ASSERT_EQ(eng.dim(1), n);
      ASSERT_EQ(tk.dim(1), k);
      for (int64_t t = 0; t < n; ++t) {
        // The engine's error per score: f32 dot products over Di terms and the sum over Hi heads
        // (gamma_{Di+Hi} times the sum of |terms|), plus the f32 roundings of q, k and w from
        // their double-accumulated projections, LayerNorm and RoPE (a few ulps each): (Di + Hi + 16) eps.
        std::vector<double> bound(static_cast<size_t>(t + 1), 0.0);
        for (int64_t s = 0; s <= t; ++s) {
          for (int64_t hh = 0; hh < Hi; ++hh) {
            double qk = 0.0;
            for (int64_t i = 0; i < Di; ++i)
              qk += std::fabs(static_cast<double>(iq.data<float>()[(t * Hi + hh) * Di + i]) * ik.data<float>()[s * Di + i]);
            bound[s] += std::fabs(iw.data<float>()[t * Hi + hh]) * qk;
          }
          bound[s] *= static_cast<double>(Di + Hi + 16) * kEps32;
          EXPECT_NEAR(eng.data<float>()[t * n + s], ref[t * n + s], bound[s]) << "layer " << l << " t " << t << " s " << s;
        }
        for (int64_t s = t + 1; s < n; ++s) EXPECT_EQ(eng.data<float>()[t * n + s], -INFINITY);
        // Top-k: the reference's order, except where two scores are within their bounds of each
        // other at the boundary (then either choice is right).
        const std::vector<int32_t> want = dsa::topk_reference(ref, n, n, 0, k);
        const int32_t* got = tk.data<int32_t>() + t * k;
        const int64_t valid = std::min<int64_t>(k, t + 1);
        std::set<int32_t> gs(got, got + valid), ws(want.begin() + t * k, want.begin() + t * k + valid);
        for (int64_t j = valid; j < k; ++j) EXPECT_EQ(got[j], -1);
        if (gs != ws) {
          const double kth = ref[t * n + want[t * k + valid - 1]];
          for (int32_t s : gs)
            if (!ws.count(s)) EXPECT_LE(std::fabs(ref[t * n + s] - kth), 2 * bound[s] + 2 * bound[want[t * k + valid - 1]]);
        }
        ++rows_checked;
      }
    }
    EXPECT_EQ(rows_checked, n * c.n_layers);
  }
}

// ------------------------------------------------------------------------------------------------
// The router, worked by hand

// The model's router on a layer whose gate is the identity, so that h holds the logits.
struct RouterCase {
  MlaMoeConfig c;
  dsa::MoeWeights w;
  explicit RouterCase(int64_t top_k = 2, int64_t n_group = 4, int64_t topk_group = 2, bool norm = true) {
    c.n_routed_experts = 8;
    c.n_experts_per_tok = top_k;
    c.n_group = n_group;
    c.topk_group = topk_group;
    c.norm_topk_prob = norm;
    c.routed_scaling_factor = 2.5;
    w.router = Tensor::zeros({8, 8}, DType::F32);
    for (int e = 0; e < 8; ++e) w.router.data<float>()[e * 8 + e] = 1.0f;
    w.router_bias = Tensor::zeros({8}, DType::F32);
  }
  dsa::Routing route(const std::vector<double>& logits) const {
    Tensor h = Tensor::empty({1, 8}, DType::F32);
    for (int e = 0; e < 8; ++e) h.data<float>()[e] = static_cast<float>(logits[e]);
    return dsa::route(c, w, h);
  }
};
double logit(double p) { return std::log(p / (1.0 - p)); }
std::vector<int32_t> ids_of(const dsa::Routing& r) {
  return std::vector<int32_t>(r.ids.data<int32_t>(), r.ids.data<int32_t>() + r.ids.numel());
}

TEST(DsaFamilyMoe, RouterGroupsBiasAndWeightsByHand) {
  // sigmoid scores; the bias lowers expert 6 for the choice only.
  const double s[8] = {0.9, 0.05, 0.5, 0.6, 0.2, 0.3, 0.8, 0.7};
  std::vector<double> lg(8);
  for (int i = 0; i < 8; ++i) lg[i] = logit(s[i]);
  RouterCase rc;
  rc.w.router_bias.data<float>()[6] = -0.5f;
  // choice = .9 .05 | .5 .6 | .2 .3 | .3 .7: groups .95, 1.1, .5, 1.0 -> keep groups 1 and 3;
  // their best choices are 7 (.7) and 3 (.6); expert 0 (.9) is in a dropped group, 6 lost its
  // place to the bias. Weights from the unbiased scores, normalised, times 2.5.
  dsa::Routing r = rc.route(lg);
  EXPECT_EQ(ids_of(r), (std::vector<int32_t>{7, 3}));
  EXPECT_NEAR(r.weights.data<float>()[0], 2.5 * 0.7 / 1.3, 1e-6);
  EXPECT_NEAR(r.weights.data<float>()[1], 2.5 * 0.6 / 1.3, 1e-6);
  // Without the bias, expert 6 (.8) wins in group 3 and group 3 (1.5) leads.
  rc.w.router_bias.data<float>()[6] = 0.0f;
  EXPECT_EQ(ids_of(rc.route(lg)), (std::vector<int32_t>{6, 7}));
  // norm_topk_prob off: the raw scores times the factor.
  const RouterCase raw(2, 4, 2, false);
  r = raw.route(lg);
  EXPECT_NEAR(r.weights.data<float>()[0], 2.5 * 0.8, 1e-6);
  EXPECT_NEAR(r.weights.data<float>()[1], 2.5 * 0.7, 1e-6);
  // Exact ties go to the lower index: groups 0 and 1, experts 0 and 1.
  r = rc.route(std::vector<double>(8, 0.0));
  EXPECT_EQ(ids_of(r), (std::vector<int32_t>{0, 1}));
  EXPECT_FLOAT_EQ(r.weights.data<float>()[0], 1.25f);
  // One group: plain top-k.
  const RouterCase flat(3, 1, 1, true);
  r = flat.route(lg);
  EXPECT_EQ(ids_of(r), (std::vector<int32_t>{0, 6, 7}));
  EXPECT_NEAR(r.weights.data<float>()[0] + r.weights.data<float>()[1] + r.weights.data<float>()[2], 2.5, 1e-6);
}

// ------------------------------------------------------------------------------------------------
// The model: decode, IndexCache reuse, loading

TEST(DsaFamilyModel, PrefillThenDecodeEqualsOnePrefill) {
  for (const TinySpec& spec : {TinySpec(), TinySpec::glm(), TinySpec::lite()}) {
    TinyModel tm(spec, 31);
    Model& m = *tm.model;
    const std::vector<int32_t> tokens = random_tokens(20, spec.vocab, 4);
    const Tensor full = logits_of(m, tokens);
    auto cache = m.make_cache(32);
    Tensor part;
    m.forward(std::span(tokens).first(13), *cache, part, true);
    EXPECT_EQ(cache->size(), 13);
    // Every token's arithmetic is the same whether it comes in a chunk or alone (row-wise
    // projections, per-query attention and top-k), so the logits agree to the last bit or nearly.
    const double tol = 4 * kEps32 * std::max(1.0, max_abs(full));
    for (int64_t i = 0; i < 13 * spec.vocab; ++i)
      ASSERT_NEAR(part.data<float>()[i], full.data<float>()[i], tol) << spec.model_type;
    for (int64_t t = 13; t < 20; ++t) {
      Tensor step;
      m.forward(std::span(tokens).subspan(t, 1), *cache, step, false);
      for (int64_t v = 0; v < spec.vocab; ++v)
        ASSERT_NEAR(step.data<float>()[v], full.data<float>()[t * spec.vocab + v], tol) << spec.model_type << " t " << t;
    }
    EXPECT_EQ(cache->size(), 20);
    // A chunk of several tokens after cached ones (p0 > 0, n > 1) gives the same rows too.
    auto c2 = m.make_cache(32);
    Tensor a, b;
    m.forward(std::span(tokens).first(9), *c2, a, true);
    m.forward(std::span(tokens).subspan(9), *c2, b, true);
    for (int64_t i = 0; i < 11 * spec.vocab; ++i)
      ASSERT_NEAR(b.data<float>()[i], full.data<float>()[9 * spec.vocab + i], tol) << spec.model_type;
  }
}

TEST(DsaFamilyModel, ShortRowsAttendToEveryPredecessor) {
  // With at most index_topk tokens every selection holds every causal key: sparse == dense.
  TinyModel tm(TinySpec(), 41);
  MlaMoeModel& m = *tm.model;
  const std::vector<int32_t> tokens = random_tokens(m.config().index_topk, 64, 5);
  const Tensor sparse = logits_of(m, tokens);
  auto cache = m.make_cache(8);
  IndexReuse dense;
  Tensor x = m.embed(tokens);
  m.forward_layers(0, m.info().n_layers, x, *cache, 0, dense);
  Tensor d = Tensor::empty({static_cast<int64_t>(tokens.size()), 64}, DType::F32);
  m.output_logits(x, d.data<float>());
  EXPECT_LE(max_abs_diff(sparse, d), 4 * kEps32 * std::max(1.0, max_abs(d)));
}

TEST(DsaFamilyModel, SharedLayersAttendOverTheirFullLayersSelection) {
  FamilyOptions opt;
  opt.pattern = LayerPattern::parse("FSSF", 4);
  TinyModel tm(TinySpec::glm(), 51, opt);
  MlaMoeModel& m = *tm.model;
  m.reset_stats();
  const Taps taps = record(m, random_tokens(19, 64, 6));
  const auto& topk = taps.at("topk");
  auto same = [](const Tensor& a, const Tensor& b) {
    return a.numel() == b.numel() && std::equal(a.data<int32_t>(), a.data<int32_t>() + a.numel(), b.data<int32_t>());
  };
  EXPECT_TRUE(same(topk.at(1), topk.at(0)));
  EXPECT_TRUE(same(topk.at(2), topk.at(0)));
  EXPECT_FALSE(same(topk.at(3), topk.at(0)));  // its own indexer
  EXPECT_EQ(taps.at("index_q").size(), 2u);    // layers 0 and 3 only
  EXPECT_EQ(m.stats().indexer_layer_runs, 2);
  // S layers' caches hold no indexer keys.
  auto cache = m.make_cache(16);
  auto* mc = dynamic_cast<dsa::MlaCache*>(cache.get());
  ASSERT_NE(mc, nullptr);
  EXPECT_TRUE(mc->index_k(0).defined());
  EXPECT_FALSE(mc->index_k(1).defined());
  EXPECT_FALSE(mc->index_k(2).defined());
  EXPECT_EQ(cache->index_bytes(), 2 * 16 * m.config().index_head_dim * 4);
}

// Removes the indexer tensors of `layers`.
std::function<void(test::TensorMap&)> drop_indexers(std::set<int> layers) {
  return [layers](test::TensorMap& w) {
    for (auto it = w.begin(); it != w.end();) {
      bool drop = false;
      for (int l : layers) drop |= it->first.rfind(fmt::format("model.layers.{}.self_attn.indexer.", l), 0) == 0;
      it = drop ? w.erase(it) : std::next(it);
    }
  };
}

TEST(DsaFamilyModel, SharedLayersIndexerTensorsAreNeverRead) {
  TinySpec spec = TinySpec::glm();
  FamilyOptions opt;
  opt.pattern = LayerPattern::parse("FSSF", 4);
  TinyModel tm(spec, 61, opt, drop_indexers({1, 2}));
  MlaMoeModel& m = *tm.model;
  EXPECT_TRUE(m.has_indexer(0));
  EXPECT_FALSE(m.has_indexer(1));
  EXPECT_TRUE(m.has_indexer(3));
  EXPECT_GT(max_abs(logits_of(m, random_tokens(12, 64, 7))), 0.0);
  // The same pattern through config.json (HF's index_topk_pattern).
  TempFolder d2;
  spec.extra["index_topk_pattern"] = "FSSF";
  test::write_folder(d2.str(), spec.config(), tm.weights);
  const auto m2 = MlaMoeModel::load(d2.str(), Device::CPU, {});
  ASSERT_NE(m2->pattern(), nullptr);
  EXPECT_EQ(m2->pattern()->str(), "FSSF");
  // All F needs them: the error names the first missing tensor; set_pattern says which layer.
  FamilyOptions all_f;
  all_f.pattern = LayerPattern::all_full(4);
  EXPECT_DSA_ERROR(MlaMoeModel::load(tm.dir.str(), Device::CPU, all_f), "model.layers.1.self_attn.indexer.wq_b.weight");
  EXPECT_DSA_ERROR(m.set_pattern(LayerPattern::parse("FFSF", 4)), "layer 1 is F in pattern FFSF");
  EXPECT_EQ(m.pattern()->str(), "FSSF");  // unchanged by the failed switch
}

TEST(DsaFamilyModel, SetPatternReadsMissingIndexersFromTheFolder) {
  FamilyOptions opt;
  opt.pattern = LayerPattern::parse("FSSS", 4);
  TinyModel tm(TinySpec(), 71, opt);
  MlaMoeModel& m = *tm.model;
  EXPECT_FALSE(m.has_indexer(2));
  const std::vector<int32_t> tokens = random_tokens(17, 64, 8);
  m.set_pattern(LayerPattern::all_full(4));
  EXPECT_TRUE(m.has_indexer(2));
  const Tensor a = logits_of(m, tokens);
  FamilyOptions f;
  f.pattern = LayerPattern::all_full(4);
  const auto fresh = MlaMoeModel::load(tm.dir.str(), Device::CPU, f);
  EXPECT_EQ(max_abs_diff(a, logits_of(*fresh, tokens)), 0.0);
  EXPECT_GT(fresh->weight_bytes(), 0);
}

TEST(DsaFamilyModel, FusedAndPerExpertLayoutsGiveTheSameModel) {
  TinySpec per = TinySpec();
  TinyModel a(per, 81);
  // The same weights stacked as transformers holds them: gate_up_proj [E, 2I, H] (gate rows first).
  test::TensorMap fused;
  const int64_t E = per.experts, I = per.moe_inter, H = per.hidden;
  for (const auto& [name, t] : a.weights)
    if (name.find(".mlp.experts.") == std::string::npos) fused[name] = t;
  for (int64_t l = per.first_dense; l < per.layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.mlp.experts.", l);
    Tensor gu = Tensor::empty({E, 2 * I, H}, DType::F32), dn = Tensor::empty({E, H, I}, DType::F32);
    for (int64_t e = 0; e < E; ++e) {
      const std::string q = fmt::format("{}{}.", p, e);
      std::copy_n(a.weights.at(q + "gate_proj.weight").data<float>(), I * H, gu.data<float>() + e * 2 * I * H);
      std::copy_n(a.weights.at(q + "up_proj.weight").data<float>(), I * H, gu.data<float>() + (e * 2 + 1) * I * H);
      std::copy_n(a.weights.at(q + "down_proj.weight").data<float>(), H * I, dn.data<float>() + e * H * I);
    }
    fused[p + "gate_up_proj"] = gu;
    fused[p + "down_proj"] = dn;
  }
  TempFolder d;
  test::write_folder(d.str(), per.config(), fused);
  const auto b = MlaMoeModel::load(d.str(), Device::CPU, {});
  const std::vector<int32_t> tokens = random_tokens(11, 64, 9);
  EXPECT_EQ(max_abs_diff(logits_of(*a.model, tokens), logits_of(*b, tokens)), 0.0);
}

TEST(DsaFamilyModel, AttentionBiasesAreRead) {
  // attention_bias: q_a_proj, kv_a_proj_with_mqa and o_proj carry biases. Zero biases give the
  // bias-free model exactly; a bias on o_proj shifts it.
  TinySpec spec = TinySpec::glm();
  TinyModel plain(spec, 97);
  spec.extra["attention_bias"] = true;
  test::TensorMap w = plain.weights;
  for (int64_t l = 0; l < spec.layers; ++l) {
    const std::string a = fmt::format("model.layers.{}.self_attn.", l);
    w[a + "q_a_proj.bias"] = Tensor::zeros({spec.q_lora}, DType::F32);
    w[a + "kv_a_proj_with_mqa.bias"] = Tensor::zeros({spec.kv_lora + spec.rope}, DType::F32);
    w[a + "o_proj.bias"] = Tensor::zeros({spec.hidden}, DType::F32);
  }
  TempFolder d;
  test::write_folder(d.str(), spec.config(), w);
  const std::vector<int32_t> tokens = random_tokens(9, 64, 13);
  const Tensor base = logits_of(*plain.model, tokens);
  EXPECT_EQ(max_abs_diff(base, logits_of(*MlaMoeModel::load(d.str(), Device::CPU, {}), tokens)), 0.0);
  w["model.layers.2.self_attn.o_proj.bias"].data<float>()[3] = 0.5f;
  test::write_folder(d.str(), spec.config(), w);
  EXPECT_GT(max_abs_diff(base, logits_of(*MlaMoeModel::load(d.str(), Device::CPU, {}), tokens)), 1e-3);
  w.erase("model.layers.1.self_attn.kv_a_proj_with_mqa.bias");
  test::write_folder(d.str(), spec.config(), w);
  EXPECT_DSA_ERROR(MlaMoeModel::load(d.str(), Device::CPU, {}), "model.layers.1.self_attn.kv_a_proj_with_mqa.bias");
}

TEST(DsaFamilyModel, DenseMlaModelHasNoPattern) {
  TinyModel tm(TinySpec::lite(), 91);
  MlaMoeModel& m = *tm.model;
  EXPECT_EQ(m.pattern(), nullptr);
  EXPECT_EQ(m.topk(), 0);
  EXPECT_EQ(m.info().family, "glm4_moe_lite");
  EXPECT_EQ(m.info().context_max, 256);
  EXPECT_EQ(m.make_cache(8)->index_bytes(), 0);
  EXPECT_DSA_ERROR(m.set_pattern(LayerPattern::all_full(3)), "dense MLA model without indexers");
  // log p of the targets = log_softmax of the logits.
  const std::vector<int32_t> tokens = random_tokens(6, 64, 10);
  const Tensor z = logits_of(m, tokens);
  std::vector<float> lp(6);
  auto cache = m.make_cache(8);
  std::vector<int32_t> targets = random_tokens(6, 64, 11);
  m.forward_logprobs(tokens, *cache, targets, lp.data());
  for (int64_t r = 0; r < 6; ++r) {
    const float* row = z.data<float>() + r * 64;
    double mx = *std::max_element(row, row + 64), s = 0.0;
    for (int v = 0; v < 64; ++v) s += std::exp(row[v] - mx);
    EXPECT_NEAR(lp[r], row[targets[r]] - mx - std::log(s), 1e-5);
  }
}

TEST(DsaFamilyModel, DenseMlaModelTakesAnIndexerFile) {
  TinyModel tm(TinySpec::lite(), 95);
  MlaMoeModel& m = *tm.model;
  const int64_t D = m.config().hidden;
  IndexerConfig ic;
  ic.n_heads = 4;
  ic.head_dim = 16;
  ic.rope_dim = 8;
  ic.topk = 5;
  DsaSpec spec;
  spec.config = ic;
  spec.pattern = LayerPattern::parse("FSF", 3);
  spec.indexers.resize(3);
  for (int64_t l : spec.pattern.full_layers()) spec.indexers[l] = IndexerWeights::random(ic, D, 200 + l);
  const std::string file = tm.dir.str() + "/indexers.safetensors";
  save_indexers(file, spec, D);
  m.set_dsa(std::make_shared<DsaSpec>(load_indexers(file, 3, D)));
  ASSERT_NE(m.pattern(), nullptr);
  EXPECT_EQ(m.pattern()->str(), "FSF");
  EXPECT_EQ(m.topk(), 5);
  EXPECT_EQ(m.make_cache(10)->index_bytes(), 2 * 10 * 16 * 4);
  const int64_t n = 17;
  const Taps taps = record(m, random_tokens(n, 64, 12));
  const auto& topk = taps.at("topk");
  for (int li : {0, 2}) {
    // The file's indexer on the attention norm's output, as the llama family runs it; its double
    // reference picks the same keys (random scores have no ties at the k-th place).
    const Tensor& h = taps.at("attn_norm").at(li);
    const std::vector<int32_t> want = indexer_topk_reference(ic, spec.indexers[li], h.data<float>(), n, D);
    for (int64_t t = 0; t < n; ++t) {
      std::set<int32_t> a, b;
      for (int64_t j = 0; j < 5; ++j) {
        if (int32_t v = topk.at(li).data<int32_t>()[t * 5 + j]; v >= 0) a.insert(v);
        if (want[t * 5 + j] >= 0) b.insert(want[t * 5 + j]);
      }
      EXPECT_EQ(a, b) << "layer " << li << " t " << t;
    }
  }
  EXPECT_TRUE(std::equal(topk.at(1).data<int32_t>(), topk.at(1).data<int32_t>() + n * 5, topk.at(0).data<int32_t>()));
  EXPECT_DSA_ERROR(m.set_pattern(LayerPattern::all_full(3)), "layer 1 is F in pattern FFF");
  m.set_dsa(nullptr);
  EXPECT_EQ(m.pattern(), nullptr);
  // A DSA architecture's indexers come from its own checkpoint.
  TinyModel v32(TinySpec(), 96);
  EXPECT_DSA_ERROR(v32.model->set_dsa(std::make_shared<DsaSpec>(spec)), "carries its own indexers");
}

TEST(DsaFamilyModel, BadCheckpointsGiveClearErrors) {
  const TinySpec spec;
  TempFolder d;
  test::TensorMap w = test::tiny_weights(spec, 101);
  // A missing tensor.
  test::TensorMap missing = w;
  missing.erase("model.layers.2.self_attn.o_proj.weight");
  test::write_folder(d.str(), spec.config(), missing);
  EXPECT_DSA_ERROR(MlaMoeModel::load(d.str(), Device::CPU, {}), "model.layers.2.self_attn.o_proj.weight");
  // A shape that disagrees with config.json.
  test::TensorMap bad = w;
  std::mt19937 rng(1);
  bad["model.layers.1.self_attn.kv_b_proj.weight"] = test::random_tensor({7, spec.kv_lora}, rng, 1.0);
  test::write_folder(d.str(), spec.config(), bad);
  EXPECT_DSA_ERROR(MlaMoeModel::load(d.str(), Device::CPU, {}), "model.layers.1.self_attn.kv_b_proj.weight");
  // An unknown architecture, the GPU, and MTP layers.
  json arch = spec.config();
  arch["architectures"] = {"DeepseekV3ForCausalLM"};
  test::write_folder(d.str(), arch, w);
  EXPECT_DSA_ERROR(MlaMoeModel::load(d.str(), Device::CPU, {}), "supported: DeepseekV32ForCausalLM");
  test::write_folder(d.str(), spec.config(), w);
  EXPECT_DSA_ERROR(load_dsa_family(d.str(), Device::CUDA), "the DSA family runs on the CPU reference path only so far");
  json mtp = spec.config();
  mtp["num_nextn_predict_layers"] = 1;
  test::write_folder(d.str(), mtp, w);
  FamilyOptions with_mtp;
  with_mtp.mtp = true;
  EXPECT_DSA_ERROR(MlaMoeModel::load(d.str(), Device::CPU, with_mtp), "MTP/NextN");
  EXPECT_NO_THROW(MlaMoeModel::load(d.str(), Device::CPU, {}));  // skipped by default
  // Tokens outside the vocabulary, and no tokenizer.
  const auto m = MlaMoeModel::load(d.str(), Device::CPU, {});
  const std::vector<int32_t> oob = {3, 64};
  EXPECT_DSA_ERROR(m->embed(oob), "token id 64 at position 1");
  EXPECT_DSA_ERROR(m->tokenizer(), "no tokenizer.json");
  // A truncated shard, and a quantisation the reader does not know.
  test::write_folder(d.str(), spec.config(), w);
  fs::resize_file(d.path / "model.safetensors", fs::file_size(d.path / "model.safetensors") - 100);
  EXPECT_DSA_ERROR(MlaMoeModel::load(d.str(), Device::CPU, {}), "model.safetensors");
  json q = spec.config();
  q["quantization_config"] = {{"quant_method", "awq"}};
  test::write_folder(d.str(), q, w);
  EXPECT_DSA_ERROR(MlaMoeModel::load(d.str(), Device::CPU, {}), "awq");
}

}  // namespace
}  // namespace ic
