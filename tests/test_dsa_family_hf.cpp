// The DSA family's CPU reference path against HF transformers 5.17 (tests/data/hf/, made on the
// device by scripts/hf_oracle.py; tests/data/hf/README.md states the semantics): logits of every
// prompt, the F layers' indexer selections, MoE routing, prefill-then-decode, the IndexCache
// pattern run, layer 0's intermediates, the rope table, and the fp8 block-scaled checkpoint.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <span>

#include "io/safetensors.h"
#include "model/dsa_family/model.h"

namespace ic {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr double kEps32 = 1.0 / (1 << 23);

// $IC_HF_DATA (a fresh oracle run, unpacked elsewhere) or the committed tests/data/hf.
std::string hf_dir(const std::string& name) {
  if (const char* d = std::getenv("IC_HF_DATA"); d && *d) return std::string(d) + "/" + name;
  return std::string(IC_SOURCE_DIR) + "/tests/data/hf/" + name;
}

struct Reference {
  std::string dir;
  json j;
  std::unique_ptr<safetensors::File> tensors;
  // A tensor of this folder's reference.safetensors, or "<folder>/reference.safetensors <name>":
  // one recorded in a sibling folder (the pattern run's logits are glm_moe_dsa-shared-tiny's).
  Tensor get(const std::string& name) const {
    const std::string sep = "/reference.safetensors ";
    const size_t at = name.find(sep);
    if (at == std::string::npos) return tensors->read_f32(name);
    const fs::path other = fs::path(dir).parent_path() / name.substr(0, at) / "reference.safetensors";
    return safetensors::File::open(other.string()).read_f32(name.substr(at + sep.size()));
  }
};

Reference load_reference(const std::string& dir) {
  Reference r;
  r.dir = dir;
  std::ifstream f(dir + "/reference.json");
  r.j = json::parse(f);
  r.tensors = std::make_unique<safetensors::File>(safetensors::File::open(dir + "/reference.safetensors"));
  return r;
}

// name -> layer -> tensor of one forward.
using Taps = std::map<std::string, std::map<int, Tensor>>;

Tensor run(Model& m, const std::vector<int32_t>& ids, Taps* taps) {
  if (taps)
    m.set_tensor_callback([taps](const std::string& name, int layer, const Tensor& t) {
      (*taps)[name][layer] = t.to(Device::CPU);
    });
  auto cache = m.make_cache(static_cast<int64_t>(ids.size()));
  Tensor logits;
  m.forward(ids, *cache, logits, true);
  m.set_tensor_callback(nullptr);
  return logits;
}

double max_abs(const Tensor& t) {
  double v = 0.0;
  for (int64_t i = 0; i < t.numel(); ++i) v = std::max(v, std::fabs(static_cast<double>(t.data<float>()[i])));
  return v;
}

double max_abs_diff(const float* a, const float* b, int64_t n) {
  double v = 0.0;
  for (int64_t i = 0; i < n; ++i) v = std::max(v, std::fabs(static_cast<double>(a[i]) - b[i]));
  return v;
}

// The logit tolerance. HF's float32 forward and ours (f32 storage, double accumulation) each carry
// rounding errors that grow like eps32 * sqrt(K) per reduction of length K (random-walk
// accumulation of independent roundings), relative to the values reduced, and pass through each
// of the L layers with O(1) gain (residual stream, normalised inputs). Bounding both by the
// longest reduction of the model gives |ours - HF| <= C eps32 sqrt(K_max) L max|logit|, C = 4 for
// the two independent error sums (sqrt 2) and a margin of ~3. The recorded float64 run of HF's own
// forward (cross_checks) measures HF's share; the bound must cover it.
double relative_tolerance(const MlaMoeConfig& c) {
  const int64_t k_max = std::max({c.hidden, c.intermediate, c.moe_intermediate * std::max<int64_t>(1, c.n_shared_experts),
                                  c.n_heads * c.v_head_dim, c.kv_lora_rank, c.q_lora_rank, c.index_n_heads * c.index_head_dim});
  return 4.0 * kEps32 * std::sqrt(static_cast<double>(k_max)) * static_cast<double>(c.n_layers);
}
double logit_tolerance(const MlaMoeConfig& c, double logit_scale) { return relative_tolerance(c) * logit_scale; }

double recorded_f32_noise(const json& ref) {
  for (const char* key : {"cross_checks", "f64_check"})
    if (ref.contains(key)) {
      const json& c = ref[key];
      if (c.contains("max_abs_diff_logits_f32_vs_f64")) return c["max_abs_diff_logits_f32_vs_f64"].get<double>();
      if (c.contains("f64") && c["f64"].contains("max_abs_diff_logits")) return c["f64"]["max_abs_diff_logits"].get<double>();
    }
  return 0.0;
}

std::set<int32_t> valid_set(const Tensor& topk, int64_t row) {
  const int64_t k = topk.dim(1);
  std::set<int32_t> s;
  for (int64_t j = 0; j < k; ++j)
    if (int32_t v = topk.data<int32_t>()[row * k + j]; v >= 0) s.insert(v);
  return s;
}

std::set<int32_t> json_set(const json& a) {
  std::set<int32_t> s;
  for (const json& v : a) s.insert(v.get<int32_t>());
  return s;
}

// Our selection of query t against HF's effective one. A difference is allowed only where HF's
// own scores make the two choices equal (an exact tie at the k-th place).
void expect_same_selection(const std::set<int32_t>& ours, const std::set<int32_t>& hf, const Tensor* hf_scores,
                           int64_t t, const std::string& where) {
  if (ours == hf) return;
  ASSERT_NE(hf_scores, nullptr) << where << ": selections differ and no scores recorded";
  const int64_t T = hf_scores->dim(1);
  const float* row = hf_scores->data<float>() + t * T;
  float kth = INFINITY;
  for (int32_t s : hf) kth = std::min(kth, row[s]);
  for (int32_t s : ours)
    if (!hf.count(s)) EXPECT_EQ(row[s], kth) << where << ": key " << s << " chosen over HF's without a tie";
}

// One prompt's logits, selections and routing against the reference's record `p`.
void check_prompt(MlaMoeModel& m, const Reference& ref, const json& p, const std::string& tag) {
  const MlaMoeConfig& c = m.config();
  const std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
  const int64_t T = static_cast<int64_t>(ids.size()), V = c.vocab;
  Taps taps;
  const Tensor logits = run(m, ids, &taps);
  const Tensor want = ref.get(p["logits_tensor"].get<std::string>());
  ASSERT_EQ(want.numel(), T * V) << tag;
  const double tol = logit_tolerance(c, max_abs(want));
  EXPECT_GE(tol, recorded_f32_noise(ref.j)) << tag << ": the tolerance must cover HF's own float32 noise";
  const double diff = max_abs_diff(logits.data<float>(), want.data<float>(), T * V);
  EXPECT_LE(diff, tol) << tag << " logits";
  std::printf("[ hf ] %-40s max|dlogit| %.3g (tolerance %.3g, logits up to %.3g)\n", tag.c_str(), diff, tol,
              max_abs(want));

  const json& layers = p["layers"];
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const json& L = layers[static_cast<size_t>(l)];
    const int li = static_cast<int>(l);
    const std::string where = fmt::format("{} layer {}", tag, l);
    if (L.contains("topk_effective")) {
      ASSERT_TRUE(taps.count("topk") && taps["topk"].count(li)) << where << ": no selection tapped";
      const Tensor& tk = taps["topk"][li];
      std::optional<Tensor> scores;
      if (L.contains("index_scores_tensor")) scores = ref.get(L["index_scores_tensor"].get<std::string>());
      for (int64_t t = 0; t < T; ++t)
        expect_same_selection(valid_set(tk, t), json_set(L["topk_effective"][static_cast<size_t>(t)]),
                              scores ? &*scores : nullptr, t, fmt::format("{} t {}", where, t));
      const bool full = L.value("indexer", "full") == "full";
      EXPECT_EQ(taps.count("index_q") && taps["index_q"].count(li), full) << where << " runs its indexer iff full";
    }
    if (L.contains("experts")) {
      ASSERT_TRUE(taps.count("moe_route") && taps["moe_route"].count(li)) << where;
      const Tensor& ids_t = taps["moe_route"][li];
      const Tensor& w_t = taps["moe_weights"][li];
      const int64_t K = ids_t.dim(1);
      for (int64_t t = 0; t < T; ++t) {
        std::vector<std::pair<int32_t, float>> ours;
        for (int64_t j = 0; j < K; ++j) ours.emplace_back(ids_t.data<int32_t>()[t * K + j], w_t.data<float>()[t * K + j]);
        std::sort(ours.begin(), ours.end());
        const json& e = L["experts"][static_cast<size_t>(t)];
        const json& w = L["expert_weights"][static_cast<size_t>(t)];
        ASSERT_EQ(static_cast<int64_t>(e.size()), K) << where;
        for (int64_t j = 0; j < K; ++j) {
          EXPECT_EQ(ours[j].first, e[static_cast<size_t>(j)].get<int32_t>()) << where << " t " << t;
          // Weights: a sigmoid and a normalisation of router logits whose inputs (the residual
          // stream) carry the same relative rounding drift as the logits; |d sigmoid| <= |d x| / 4
          // and the normalisation is a ratio, so the logits' relative bound covers them.
          const double hw = w[static_cast<size_t>(j)].get<double>();
          EXPECT_NEAR(ours[j].second, hw, relative_tolerance(c) * std::max(1.0, std::fabs(hw)))
              << where << " t " << t;
        }
      }
    }
  }
}

// Prefill of the first prefill_tokens, then one token at a time, against HF's decode logits and
// its per-step selections.
void check_decode(MlaMoeModel& m, const Reference& ref, const json& prompts, const json& d, const std::string& tag) {
  const MlaMoeConfig& c = m.config();
  const std::vector<int32_t> ids = prompts[d["prompt"].get<size_t>()]["ids"].get<std::vector<int32_t>>();
  const int64_t pre = d["prefill_tokens"].get<int64_t>(), V = c.vocab;
  const Tensor want = ref.get(d["decode_logits_tensor"].get<std::string>());
  auto cache = m.make_cache(static_cast<int64_t>(ids.size()));
  Tensor logits;
  m.forward(std::span(ids).first(static_cast<size_t>(pre)), *cache, logits, false);
  const double tol = logit_tolerance(c, max_abs(want));
  for (size_t j = 0; j < d["steps"].size(); ++j) {
    const json& st = d["steps"][j];
    const int64_t pos = st["position"].get<int64_t>();
    Taps taps;
    m.set_tensor_callback([&taps](const std::string& name, int layer, const Tensor& t) { taps[name][layer] = t.to(Device::CPU); });
    m.forward(std::span(ids).subspan(static_cast<size_t>(pos), 1), *cache, logits, false);
    m.set_tensor_callback(nullptr);
    EXPECT_LE(max_abs_diff(logits.data<float>(), want.data<float>() + j * V, V), tol) << tag << " decode step " << j;
    if (st.contains("topk_effective"))
      for (const auto& [layer, sel] : st["topk_effective"].items())
        EXPECT_EQ(valid_set(taps["topk"][std::stoi(layer)], 0), json_set(sel)) << tag << " decode step " << j << " layer " << layer;
    if (st.contains("experts"))
      for (const auto& [layer, e] : st["experts"].items()) {
        const Tensor& r = taps["moe_route"][std::stoi(layer)];
        std::set<int32_t> ours(r.data<int32_t>(), r.data<int32_t>() + r.numel());
        EXPECT_EQ(ours, json_set(e)) << tag << " decode step " << j << " layer " << layer;
      }
  }
}

// The references are part of the tree (tests/data/hf/); a checkout without that folder skips, one
// with it must have every checkpoint.
#define IC_HF_FOLDER_OR_SKIP(dir, name)                                                               \
  const std::string dir = hf_dir(name);                                                               \
  if (!fs::exists(fs::path(dir).parent_path())) GTEST_SKIP() << fs::path(dir).parent_path() << " is absent"; \
  ASSERT_TRUE(fs::exists(dir + "/reference.json")) << dir << " has no reference.json";

void check_folder(const std::string& name, const FamilyOptions& opt = {}) {
  const std::string dir = hf_dir(name);
  const Reference ref = load_reference(dir);
  auto m = MlaMoeModel::load(dir, Device::CPU, opt);
  for (size_t i = 0; i < ref.j["prompts"].size(); ++i)
    check_prompt(*m, ref, ref.j["prompts"][i], fmt::format("{} p{}", name, i));
  check_decode(*m, ref, ref.j["prompts"], ref.j["decode"], name);
  if (ref.j.contains("softmax_scale"))
    EXPECT_NEAR(m->config().softmax_scale(), ref.j["softmax_scale"].get<double>(), 1e-7 * ref.j["softmax_scale"].get<double>());
}

TEST(DsaFamilyHF, DeepseekV32MatchesHF) {
  IC_HF_FOLDER_OR_SKIP(dir, "deepseek_v32-tiny");
  check_folder("deepseek_v32-tiny");
  const Reference ref = load_reference(dir);
  auto m = MlaMoeModel::load(dir, Device::CPU, {});
  // The YaRN table, as HF keeps it in f32.
  const std::vector<double> inv = ref.j["rope_inv_freq"].get<std::vector<double>>();
  ASSERT_EQ(static_cast<int64_t>(inv.size()), m->config().qk_rope_dim / 2);
  for (size_t i = 0; i < inv.size(); ++i) EXPECT_NEAR(m->rope().inv_freq()[i], inv[i], 2 * kEps32 * inv[i]) << i;
  EXPECT_NEAR(m->rope().attention_factor(), ref.j["rope_attention_scaling"].get<double>(), 1e-12);
}

TEST(DsaFamilyHF, DeepseekV32Fp8MatchesHF) {
  IC_HF_FOLDER_OR_SKIP(dir, "deepseek_v32-fp8-tiny");
  check_folder("deepseek_v32-fp8-tiny");
}

TEST(DsaFamilyHF, GlmMoeDsaMatchesHFAllFullAndWithAPattern) {
  IC_HF_FOLDER_OR_SKIP(dir, "glm_moe_dsa-tiny");
  check_folder("glm_moe_dsa-tiny");
  const Reference ref = load_reference(dir);
  ASSERT_TRUE(ref.j.contains("pattern_runs"));
  for (const auto& [letters, run] : ref.j["pattern_runs"].items()) {
    FamilyOptions opt;
    opt.pattern = LayerPattern::parse(letters, 4);
    auto m = MlaMoeModel::load(dir, Device::CPU, opt);
    for (size_t i = 0; i < run["prompts"].size(); ++i)
      check_prompt(*m, ref, run["prompts"][i], fmt::format("glm_moe_dsa-tiny {} p{}", letters, i));
    check_decode(*m, ref, run["prompts"], run["decode"], "glm_moe_dsa-tiny " + letters);
    // The same through set_pattern on an all-F model.
    auto all_f = MlaMoeModel::load(dir, Device::CPU, {});
    all_f->set_pattern(*opt.pattern);
    check_prompt(*all_f, ref, run["prompts"][2], "glm_moe_dsa-tiny set_pattern " + letters);
  }
}

TEST(DsaFamilyHF, GlmMoeDsaSharedLayersFromConfigJson) {
  IC_HF_FOLDER_OR_SKIP(dir, "glm_moe_dsa-shared-tiny");
  auto m = MlaMoeModel::load(dir, Device::CPU, {});
  ASSERT_NE(m->pattern(), nullptr);
  EXPECT_EQ(m->pattern()->str(), "FSSF");  // index_topk_freq 3, index_skip_topk_offset 1 under HF's rule
  EXPECT_FALSE(m->has_indexer(1));
  check_folder("glm_moe_dsa-shared-tiny");
}

TEST(DsaFamilyHF, Glm4MoeLiteMatchesHF) {
  IC_HF_FOLDER_OR_SKIP(dir, "glm4_moe_lite-tiny");
  check_folder("glm4_moe_lite-tiny");
}

// tokenizer.json of each folder, encoded as HF tokenizers encodes it (tests/data/tokenizers).
TEST(DsaFamilyHF, TokenizerFromTheFolder) {
  for (const auto& [name, tok] : {std::pair{"deepseek_v32-tiny", "deepseek-v3-tiny"}, std::pair{"glm_moe_dsa-tiny", "glm-tiny"},
                                  std::pair{"glm4_moe_lite-tiny", "glm-tiny"}}) {
    IC_HF_FOLDER_OR_SKIP(dir, name);
    auto m = MlaMoeModel::load(dir, Device::CPU, {});
    const Tokenizer& t = m->tokenizer();
    EXPECT_LE(t.vocab_size(), m->info().vocab) << name;
    std::ifstream f(std::string(IC_SOURCE_DIR) + "/tests/data/tokenizers/" + tok + "/tokenizer_vectors.json");
    const json v = json::parse(f);
    int checked = 0;
    for (const json& c : v["vectors"]) {
      if (++checked > 50) break;
      EXPECT_EQ(t.encode(c["text"].get<std::string>()), c["ids"].get<std::vector<int32_t>>()) << name << ": " << c["text"];
    }
  }
}

// Layer 0's intermediates of prompt p1, tensor by tensor (HF's layouts; README "The reference files").
TEST(DsaFamilyHF, LayerZeroIntermediatesMatchHF) {
  for (const char* name : {"deepseek_v32-tiny", "glm_moe_dsa-tiny", "glm4_moe_lite-tiny"}) {
    IC_HF_FOLDER_OR_SKIP(dir, name);
    const Reference ref = load_reference(dir);
    auto m = MlaMoeModel::load(dir, Device::CPU, {});
    const MlaMoeConfig& c = m->config();
    const json& p = ref.j["prompts"][1];
    const std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
    const int64_t T = static_cast<int64_t>(ids.size()), L = c.kv_lora_rank, R = c.qk_rope_dim, H = c.n_heads;
    Taps taps;
    run(*m, ids, &taps);
    const std::string pre = "p1.dbg.L0.";
    // Each is a few projections deep: a few ulps of the values times sqrt of the reduction length.
    auto check = [&](const std::string& what, const std::vector<float>& ours, const Tensor& hf) {
      ASSERT_EQ(static_cast<int64_t>(ours.size()), hf.numel()) << name << " " << what;
      const double tol = 64 * kEps32 * std::max(1.0, max_abs(hf));
      EXPECT_LE(max_abs_diff(ours.data(), hf.data<float>(), hf.numel()), tol) << name << " " << what;
    };
    auto flat = [](const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.numel()); };
    const Tensor& kv = taps["kv_latent"][0];
    std::vector<float> lat, kr;
    for (int64_t t = 0; t < T; ++t) {
      lat.insert(lat.end(), kv.data<float>() + t * (L + R), kv.data<float>() + t * (L + R) + L);
      kr.insert(kr.end(), kv.data<float>() + t * (L + R) + L, kv.data<float>() + (t + 1) * (L + R));
    }
    check("kv latent", lat, ref.get(pre + "kv_a_layernorm_out"));
    check("k rope", kr, ref.get(pre + "mla_k_rot_after_rope"));
    const Tensor& q = taps["q"][0];
    std::vector<float> qr;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h) {
        const float* row = q.data<float>() + (t * H + h) * c.qk_head_dim() + c.qk_nope_dim;
        qr.insert(qr.end(), row, row + R);
      }
    check("q rope", qr, ref.get(pre + "mla_q_rot_after_rope"));
    if (c.q_lora_rank > 0) check("q latent", flat(taps["q_latent"][0]), ref.get(pre + "q_a_layernorm_out"));
    check("attention output", flat(taps["attn"][0]), ref.get(pre + "o_proj_in"));
    if (c.has_indexer_arch()) {
      check("indexer q", flat(taps["index_q"][0]), ref.get(pre + "indexer.q_after_rope"));
      check("indexer k", flat(taps["index_k"][0]), ref.get(pre + "indexer.k_after_rope"));
    }
  }
}

}  // namespace
}  // namespace ic
