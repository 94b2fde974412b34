// Random-weight models of the DSA family (--random-weights, model/dsa_family/random_weights.h):
// the GPU's in-place fill equals the host's tensors bitwise, the values have the stated
// distribution, the CPU reference and the GPU path agree on a random model, a deep stack stays
// finite, presets resolve, and the Table 1 driver (runtime/table1.h) reports what it measured.
// The same comparisons run on the device where there is one (RandomWeightsCuda).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/device.h"
#include "dsa_family_test_util.h"
#include "io/hf_folder.h"
#include "model/dsa_family/gpu_forward.h"
#include "model/dsa_family/gpu_weights.h"
#include "model/dsa_family/model.h"
#include "model/dsa_family/presets.h"
#include "model/dsa_family/random_weights.h"
#include "model/load_model.h"
#include "ops/indexer.h"
#include "runtime/table1.h"

namespace ic {
namespace {

using test::TinySpec;

#define IC_CUDA_OR_SKIP() \
  if (!::ic::cuda_available()) GTEST_SKIP() << "no usable CUDA device (or a CPU-only build)"

MlaMoeConfig config_of(const TinySpec& s) { return MlaMoeConfig::from_hf(hf::Config::parse(s.config().dump())); }

// The dims the GPU kernels are built for, small otherwise (as tests/test_dsa_family_cuda.cpp).
TinySpec gpu_spec(TinySpec s) {
  s.layers = 3;
  s.hidden = 96;
  s.vocab = 128;
  s.heads = 3;
  s.q_lora = s.q_lora > 0 ? 64 : 0;
  s.kv_lora = 512;
  s.nope = 32;
  s.rope = 64;
  s.v = 32;
  s.experts = 4;
  s.per_tok = 2;
  s.moe_inter = 32;
  s.inter = 64;
  s.n_group = 2;
  s.topk_group = 1;
  s.index_heads = 4;
  s.index_dim = 128;
  s.index_topk = 8;
  return s;
}

bool same_bytes(const Tensor& a, const Tensor& b, const std::string& what) {
  if (a.defined() != b.defined()) {
    ADD_FAILURE() << what << ": defined " << a.defined() << " vs " << b.defined();
    return false;
  }
  if (!a.defined()) return true;
  const Tensor ha = a.to(Device::CPU), hb = b.to(Device::CPU);
  const bool same = ha.shape() == hb.shape() && ha.dtype() == hb.dtype() &&
                    std::memcmp(ha.raw(), hb.raw(), static_cast<size_t>(ha.nbytes())) == 0;
  EXPECT_TRUE(same) << what << ": " << ha.desc() << " vs " << hb.desc();
  return same;
}

void expect_same_layer(const dsa::GpuLayer& a, const dsa::GpuLayer& b, int64_t l) {
  const std::string p = "layer " + std::to_string(l) + " ";
  for (auto [name, x, y] : {std::tuple{"input_norm", &a.input_norm, &b.input_norm},
                            {"post_norm", &a.post_norm, &b.post_norm}, {"q_proj", &a.q_proj, &b.q_proj},
                            {"q_a", &a.q_a, &b.q_a}, {"q_b", &a.q_b, &b.q_b}, {"q_a_bias", &a.q_a_bias, &b.q_a_bias},
                            {"q_a_norm", &a.q_a_norm, &b.q_a_norm}, {"kv_a", &a.kv_a, &b.kv_a},
                            {"kv_a_bias", &a.kv_a_bias, &b.kv_a_bias}, {"kv_a_norm", &a.kv_a_norm, &b.kv_a_norm},
                            {"kv_b", &a.kv_b, &b.kv_b}, {"w_uk_t", &a.w_uk_t, &b.w_uk_t}, {"o", &a.o, &b.o},
                            {"o_bias", &a.o_bias, &b.o_bias}, {"wq_b", &a.indexer.wq_b, &b.indexer.wq_b},
                            {"wk", &a.indexer.wk, &b.indexer.wk}, {"k_norm", &a.indexer.k_norm, &b.indexer.k_norm},
                            {"k_bias", &a.indexer.k_bias, &b.indexer.k_bias},
                            {"weights", &a.indexer.weights, &b.indexer.weights}, {"router", &a.router, &b.router},
                            {"router_bias", &a.router_bias, &b.router_bias}, {"gate_up", &a.gate_up, &b.gate_up},
                            {"down", &a.down, &b.down}, {"mlp.gate", &a.mlp.gate, &b.mlp.gate},
                            {"mlp.up", &a.mlp.up, &b.mlp.up}, {"mlp.down", &a.mlp.down, &b.mlp.down},
                            {"shared.gate", &a.shared.gate, &b.shared.gate}, {"shared.up", &a.shared.up, &b.shared.up},
                            {"shared.down", &a.shared.down, &b.shared.down}})
    same_bytes(*x, *y, p + name);
  EXPECT_EQ(a.moe, b.moe) << p;
}

void filled_layers_equal_uploaded_host_layers(Device dev) {
  for (TinySpec s : {gpu_spec(TinySpec()), gpu_spec(TinySpec::glm()), gpu_spec(TinySpec::lite())}) {
    s.extra["attention_bias"] = s.model_type == "glm4_moe_lite";  // zero biases exist where the config says so
    SCOPED_TRACE(s.model_type);
    const MlaMoeConfig c = config_of(s);
    for (int64_t l = 0; l < c.n_layers; ++l)
      expect_same_layer(dsa::random_gpu_layer(c, 7, l, dev),
                        dsa::upload_layer(c, dsa::random_layer_weights(c, 7, l), Device::CPU), l);
  }
}

TEST(RandomWeights, FilledLayersEqualUploadedHostLayersBitwise) { filled_layers_equal_uploaded_host_layers(Device::CPU); }
TEST(RandomWeightsCuda, FilledLayersEqualUploadedHostLayersBitwise) {
  IC_CUDA_OR_SKIP();
  filled_layers_equal_uploaded_host_layers(Device::CUDA);
}

// uniform(-a, a): every value inside, mean 0 and variance a^2 / 3 within 5 standard errors; a
// value depends on the seed, the name and the index only.
TEST(RandomWeights, ValuesAreUniformAndDependOnSeedNameAndIndexOnly) {
  const int64_t n = 200000;
  const float a = dsa::random_bound(48);
  Tensor t = Tensor::empty({n}, DType::F32), u = Tensor::empty({n}, DType::F32), v = Tensor::empty({n}, DType::F32);
  dsa::fill_random(t, dsa::random_key(3, "model.layers.0.mlp.gate.weight"), a);
  dsa::fill_random(u, dsa::random_key(3, "model.layers.0.mlp.gate.weight"), a);
  dsa::fill_random(v, dsa::random_key(4, "model.layers.0.mlp.gate.weight"), a);
  double sum = 0.0, sq = 0.0;
  int64_t same_as_other_seed = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double x = t.data<float>()[i];
    ASSERT_GE(x, -a);
    ASSERT_LT(x, a);
    ASSERT_EQ(t.data<float>()[i], u.data<float>()[i]);
    same_as_other_seed += t.data<float>()[i] == v.data<float>()[i];
    sum += x;
    sq += x * x;
  }
  const double var = a * a / 3.0, mean = sum / n;
  EXPECT_NEAR(mean, 0.0, 5.0 * std::sqrt(var / n));
  // Var(x^2) of uniform(-a, a) = 4 a^4 / 45.
  EXPECT_NEAR(sq / n, var, 5.0 * std::sqrt(4.0 * a * a * a * a / 45.0 / n));
  EXPECT_LT(same_as_other_seed, 10);  // 2^24 levels: a handful of coincidences at most
  // An offset window reads the same stream.
  Tensor w = Tensor::empty({100}, DType::F32);
  dsa::fill_random(w, dsa::random_key(3, "model.layers.0.mlp.gate.weight"), a, 1000);
  EXPECT_EQ(0, std::memcmp(w.data<float>(), t.data<float>() + 1000, 400));
}

// The random model on the CPU reference path and the GPU path made in place (on the host here,
// on the device below) agree as a dense MLA model's forward must (tests/test_dsa_family_cuda.cpp
// derives the bound: per row sqrt(R) 2^-8 typical with R the bf16 roundings on the path).
void reference_and_gpu_path_agree(Device dev) {
  const TinySpec s = gpu_spec(TinySpec::lite());
  const MlaMoeConfig c = config_of(s);
  auto cpu = MlaMoeModel::random(c, 5, Device::CPU, "random:tiny");
  std::unique_ptr<MlaMoeModel> on_dev;
  std::unique_ptr<dsa::GpuForward> host_path;
  if (dev == Device::CUDA)
    on_dev = MlaMoeModel::random(c, 5, Device::CUDA, "random:tiny");
  else
    host_path = std::make_unique<dsa::GpuForward>(c, cpu->rope(), 5, Device::CPU);
  std::mt19937 rng(9);
  std::vector<int32_t> tokens(24);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % c.vocab);
  const int64_t n = static_cast<int64_t>(tokens.size()), V = c.vocab;
  Tensor want;
  auto cache = cpu->make_cache(n);
  cpu->forward(tokens, *cache, want, true);
  Tensor got = Tensor::empty({n, V}, DType::F32);
  if (on_dev) {
    auto gc = on_dev->make_cache(n);
    on_dev->forward(tokens, *gc, got, true);
  } else {
    Tensor x = cpu->embed(tokens);
    auto gc = host_path->make_cache(n, nullptr);
    IndexReuse reuse = cpu->make_reuse();
    ForwardStats stats;
    host_path->forward_layers(0, c.n_layers, x, *gc, 0, reuse, {}, stats);
    host_path->output_logits(x, got.data<float>(), {});
  }
  const double roundings = 20.0 * static_cast<double>(c.n_layers) + 2.0;
  const double tol = std::sqrt(roundings) / 256.0;
  std::vector<double> errs;
  for (int64_t t = 0; t < n; ++t) {
    double d = 0.0, r = 0.0;
    for (int64_t v = 0; v < V; ++v) {
      const double x = got.data<float>()[t * V + v], y = want.data<float>()[t * V + v];
      ASSERT_TRUE(std::isfinite(x));
      d += (x - y) * (x - y);
      r += y * y;
    }
    errs.push_back(std::sqrt(d / std::max(r, 1e-30)));
  }
  std::sort(errs.begin(), errs.end());
  EXPECT_LE(errs[errs.size() / 2], tol);
  EXPECT_LE(errs.back(), 4 * tol);
}

TEST(RandomWeights, ReferenceAndGpuPathOnTheHostAgree) { reference_and_gpu_path_agree(Device::CPU); }
TEST(RandomWeightsCuda, ReferenceAndGpuPathAgree) {
  IC_CUDA_OR_SKIP();
  reference_and_gpu_path_agree(Device::CUDA);
}

// The paper's 30B layer kinds over its full depth (47 layers, the first dense), at small widths:
// every logit finite, and the residual stream's RMS grows no faster than the sqrt(2 l + 1) of
// unit-variance blocks adding up (a factor 4 of slack for the MoE's scaling factor and the
// variance of a few experts).
TEST(RandomWeights, TheFullDepthStaysFinite) {
  TinySpec s = TinySpec::glm();
  s.layers = 47;
  s.index_topk = 4;
  const MlaMoeConfig c = config_of(s);
  auto m = MlaMoeModel::random(c, 2, Device::CPU, "random:deep");
  std::vector<double> rms(static_cast<size_t>(c.n_layers));
  m->set_tensor_callback([&](const std::string& name, int layer, const Tensor& t) {
    if (name != "l_out") return;
    double q = 0.0;
    for (int64_t i = 0; i < t.numel(); ++i) q += static_cast<double>(t.data<float>()[i]) * t.data<float>()[i];
    rms[static_cast<size_t>(layer)] = std::sqrt(q / static_cast<double>(t.numel()));
  });
  std::vector<int32_t> tokens(16);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7) % c.vocab);
  auto cache = m->make_cache(16);
  Tensor logits;
  m->forward(tokens, *cache, logits, true);
  for (int64_t i = 0; i < logits.numel(); ++i) ASSERT_TRUE(std::isfinite(logits.data<float>()[i])) << i;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    ASSERT_TRUE(std::isfinite(rms[static_cast<size_t>(l)])) << l;
    EXPECT_LE(rms[static_cast<size_t>(l)], 4.0 * std::sqrt(2.0 * static_cast<double>(l) + 1.0) * rms[0] + 1e-30) << l;
  }
}

// The fp8 indexer on the GPU path (run on the host): each F layer caches exactly the e4m3 keys and
// scales ops::quantize_fp8_rows makes of its keys, and selects exactly what ops::indexer_topk's fp8
// path selects from them and the quantised query with its scales folded into the head weights.
TEST(RandomWeights, Fp8IndexerCachesQuantisedKeysAndSelectsByThem) {
  const MlaMoeConfig c = config_of(gpu_spec(TinySpec::glm()));
  auto cpu = MlaMoeModel::random(c, 4, Device::CPU, "random:tiny");
  dsa::GpuForward path(c, cpu->rope(), 4, Device::CPU);
  path.set_indexer_fp8(true);
  const LayerPattern pattern = LayerPattern::parse("FSF", 3);
  const int64_t n = 20, Hi = c.index_n_heads, Di = c.index_head_dim, k = c.index_topk;
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) tokens[static_cast<size_t>(i)] = static_cast<int32_t>((i * 5 + 3) % c.vocab);
  std::map<std::string, std::map<int, Tensor>> taps;
  dsa::GpuTap tap = [&](const char* name, int layer, const Tensor& t) { taps[name][layer] = t.to(Device::CPU); };
  auto cache = path.make_cache(n, &pattern);
  auto* gc = dynamic_cast<dsa::GpuCache*>(cache.get());
  ASSERT_NE(gc, nullptr);
  ASSERT_TRUE(gc->fp8_keys());
  EXPECT_FALSE(gc->index_k(1).defined());
  IndexReuse reuse(pattern);
  Tensor x = cpu->embed(tokens);
  ForwardStats stats;
  path.forward_layers(0, 3, x, *cache, 0, reuse, tap, stats);
  for (int l : {0, 2}) {
    SCOPED_TRACE(l);
    const Tensor& kf = taps["index_k"][l];
    std::vector<uint8_t> k8(static_cast<size_t>(n * Di));
    std::vector<float> ks(static_cast<size_t>(n));
    ops::quantize_fp8_rows(kf.data<float>(), n, Di, k8.data(), ks.data());
    EXPECT_EQ(0, std::memcmp(gc->index_k(l).data<uint8_t>(), k8.data(), k8.size()));
    EXPECT_EQ(0, std::memcmp(gc->index_scale(l).data<float>(), ks.data(), ks.size() * 4));
    Tensor q8 = Tensor::empty({n, Hi, Di}, DType::F8_E4M3), w = Tensor::empty({n, Hi}, DType::F32);
    ops::quantize_indexer_query(taps["index_q"][l].data<float>(), taps["index_w"][l].data<float>(), n, Hi, Di,
                                q8.data<uint8_t>(), w.data<float>());
    Tensor want = Tensor::empty({n, k}, DType::I32);
    ops::indexer_topk(q8, gc->index_k(l).slice_rows(0, n), gc->index_scale(l).slice_rows(0, n), w, 0, want);
    const Tensor& got = taps["topk"][l];
    EXPECT_EQ(0, std::memcmp(got.data<int32_t>(), want.data<int32_t>(), static_cast<size_t>(n * k) * 4));
  }
  // S layer 1 attends over layer 0's selection.
  EXPECT_EQ(0, std::memcmp(taps["topk"][1].data<int32_t>(), taps["topk"][0].data<int32_t>(),
                           static_cast<size_t>(n * k) * 4));
  // A bf16 cache handed to the fp8 path is refused, and the other way round.
  dsa::GpuForward bf16_path(c, cpu->rope(), 4, Device::CPU);
  auto bf16_cache = bf16_path.make_cache(n, &pattern);
  IndexReuse reuse2(pattern);
  Tensor x2 = cpu->embed(tokens);
  EXPECT_DSA_ERROR(path.forward_layers(0, 1, x2, *bf16_cache, 0, reuse2, {}, stats), "set_indexer_fp8");
  EXPECT_DSA_ERROR(MlaMoeModel::random(c, 4, Device::CPU, "random:tiny", [] {
                     FamilyOptions o;
                     o.indexer_fp8 = true;
                     return o;
                   }()),
                   "GPU path");
}

TEST(RandomWeights, PresetsResolveAndTruncate) {
  const std::vector<std::string> names = dsa::preset_names();
  for (const char* want : {"deepseek-v32", "glm47-flash-dsa", "glm5"})
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  const MlaMoeConfig c = dsa::random_model_config("glm47-flash-dsa");
  EXPECT_EQ(c.n_layers, 47);
  EXPECT_EQ(c.hidden, 2048);
  EXPECT_EQ(c.index_topk, 2048);
  const MlaMoeConfig t = dsa::random_model_config("deepseek-v32", 4);
  EXPECT_EQ(t.n_layers, 4);
  EXPECT_EQ(static_cast<int64_t>(t.moe_layer.size()), 4);
  EXPECT_EQ(t.n_mtp_layers, 0);
  EXPECT_DSA_ERROR(dsa::random_model_config("no-such-model"), "glm47-flash-dsa");
  EXPECT_DSA_ERROR(dsa::random_model_config("glm5", 79), "78 layers");
}

// The driver on a tiny random model: one row per (length, config) with what it measured, the
// S layers' indexer cache left out in proportion, finite outputs, and the three report forms.
TEST(Table1, ReportsEveryRowAndTheIndexerCacheEachPatternSaves) {
  TinySpec s = TinySpec::glm();
  s.max_pos = 4096;
  const MlaMoeConfig c = config_of(s);
  auto m = MlaMoeModel::random(c, 3, Device::CPU, "random:tiny");
  std::vector<Table1Config> configs{parse_table1_config("dsa", 4), parse_table1_config("1/2", 4),
                                    parse_table1_config("mine=FFSS", 4)};
  EXPECT_EQ(configs[1].pattern.str(), "FSFS");
  EXPECT_EQ(configs[2].name, "mine");
  Table1Options o;
  o.lengths = {20, 33};
  o.decode_steps = 3;
  o.chunk = 16;
  std::vector<std::string> progress;
  o.progress = [&](const std::string& line) { progress.push_back(line); };
  const Table1Result r = run_table1(*m, configs, o);
  ASSERT_EQ(r.rows.size(), 6u);
  for (const Table1Row& row : r.rows) {
    EXPECT_TRUE(row.finite) << row.config << " " << row.context;
    EXPECT_GT(row.prefill_s, 0.0);
    EXPECT_GT(row.decode_ms, 0.0);
    EXPECT_LE(row.decode_min_ms, row.decode_ms);
    EXPECT_GE(row.decode_max_ms, row.decode_ms);
    EXPECT_LE(row.indexer_s, row.prefill_s);
  }
  const Table1Row &dsa = r.rows[0], &half = r.rows[1];
  EXPECT_EQ(dsa.f_layers, 4);
  EXPECT_EQ(half.f_layers, 2);
  EXPECT_EQ(half.index_cache_bytes * 2, dsa.index_cache_bytes);
  EXPECT_EQ(dsa.cache_bytes - dsa.index_cache_bytes, half.cache_bytes - half.index_cache_bytes);
  EXPECT_FALSE(progress.empty());
  const nlohmann::json j = nlohmann::json::parse(table1_json(r));
  EXPECT_EQ(j["rows"].size(), 6u);
  EXPECT_EQ(j["rows"][1]["pattern"], "FSFS");
  EXPECT_NE(table1_markdown(r).find("| 33 | mine |"), std::string::npos);
  EXPECT_NE(table1_prefill_svg(r).find("<svg"), std::string::npos);
  EXPECT_DSA_ERROR(parse_table1_config("1/0", 4), "N must be");
  EXPECT_DSA_ERROR(parse_table1_config("SFFF", 4), "expected dsa");
  Table1Options too_long = o;
  too_long.lengths = {5000};
  EXPECT_DSA_ERROR(run_table1(*m, configs, too_long), "exceeds the model's limit");
}

TEST(RandomWeights, LoadRandomModelTakesAConfigFileThePatternAndLayers) {
  test::TempDir dir;
  const std::string path = dir.str() + "/config.json";
  std::ofstream(path) << TinySpec::glm().config().dump();
  LoadOptions lo;
  lo.pattern = [](int64_t L) { return LayerPattern::from_freq(L, 2); };
  auto m = load_random_model(path, 1, 3, lo);
  EXPECT_EQ(m->info().n_layers, 3);
  ASSERT_NE(m->pattern(), nullptr);
  EXPECT_EQ(m->pattern()->str(), "FSF");
  EXPECT_TRUE(m->has_indexer(1));
  EXPECT_DSA_ERROR(m->tokenizer(), "no tokenizer");
  EXPECT_EQ(m->path(), "random:" + path);
}

}  // namespace
}  // namespace ic
