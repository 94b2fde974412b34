// The DSA family's GPU path (model/dsa_family/gpu_forward.h) against the CPU reference path on
// tiny random folders with the real latent dims (kv_lora_rank 512 + rope 64, index_head_dim
// 128: the GPU kernels' dims), and the clear error for the tiny HF checkpoints' smaller dims.
// The GPU tests skip without a device (always in a CPU-only build); the dims error needs none.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/device.h"
#include "dsa_family_test_util.h"
#include "io/hf_folder.h"
#include "model/dsa_family/gpu_forward.h"
#include "model/dsa_family/model.h"

namespace ic {
namespace {

using test::TempFolder;
using test::TinySpec;

#define IC_CUDA_OR_SKIP() \
  if (!::ic::cuda_available()) GTEST_SKIP() << "no usable CUDA device (or a CPU-only build)"

// Small everything except the dims the GPU kernels are built for.
TinySpec gpu_spec(TinySpec s) {
  s.layers = 4;
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
  s.shared = 1;
  s.moe_inter = 32;
  s.inter = 64;
  s.n_group = 2;
  s.topk_group = 1;
  s.first_dense = 1;
  s.index_heads = 4;
  s.index_dim = 128;
  s.index_topk = 8;
  return s;
}

// bf16 roundings on one token's path through the GPU forward, each at most 2^-8 relative: per
// layer the activations rounded before a GEMM or kernel (the attention norm's output, the q
// latent, q_nope, the absorbed query, the latent cache row, the attention latent, the W_uv
// output, the FFN input, the SwiGLU product, the experts' gate|up and down outputs: 11) and the
// weights of the GEMMs on the path (q_a, q_b, W_uk, kv_a, W_uv, o_proj, gate, up, down: 9);
// the head adds its input and its weights.
double bf16_roundings(int64_t layers) { return 20.0 * static_cast<double>(layers) + 2.0; }
constexpr double kBf16 = 1.0 / 256;  // 2^-8
// Independent roundings add like a random walk: a row's typical relative error is about
// sqrt(R) 2^-8. The median row is held to that, every row to 4x (the f32 sums' own error is
// ~2^-24 sqrt(K), far below).
double typical_tol(int64_t layers) { return std::sqrt(bf16_roundings(layers)) * kBf16; }

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& v : t) v = d(rng);
  return t;
}

using Taps = std::map<std::string, std::map<int, Tensor>>;

// All-token logits of one forward, with the taps copied to the host.
Tensor run(Model& m, const std::vector<int32_t>& tokens, Taps* taps = nullptr) {
  if (taps)
    m.set_tensor_callback(
        [taps](const std::string& name, int layer, const Tensor& t) { (*taps)[name][layer] = t.to(Device::CPU); });
  auto cache = m.make_cache(static_cast<int64_t>(tokens.size()) + 4);
  Tensor logits;
  m.forward(tokens, *cache, logits, true);
  m.set_tensor_callback(nullptr);
  return logits;
}

// ||a_t - b_t|| / ||b_t|| of each row.
std::vector<double> row_rel_errors(const float* a, const float* b, int64_t rows, int64_t V) {
  std::vector<double> e(static_cast<size_t>(rows));
  for (int64_t t = 0; t < rows; ++t) {
    double d = 0.0, r = 0.0;
    for (int64_t v = 0; v < V; ++v) {
      const double x = a[t * V + v], y = b[t * V + v];
      d += (x - y) * (x - y);
      r += y * y;
    }
    e[static_cast<size_t>(t)] = std::sqrt(d / std::max(r, 1e-30));
  }
  return e;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::set<int32_t> row_set(const Tensor& t, int64_t r) {
  const int64_t k = t.dim(1);
  std::set<int32_t> s;
  for (int64_t j = 0; j < k; ++j)
    if (t.data<int32_t>()[r * k + j] >= 0) s.insert(t.data<int32_t>()[r * k + j]);
  return s;
}

// The GPU path's side of a comparison: the CUDA model through the Model interface, or the same
// path run on the host (dsa::GpuForward on Device::CPU: bf16 weights and activations through the
// same ops, whose CPU versions are their references), which CPU-only builds test.
struct GpuSide {
  std::unique_ptr<MlaMoeModel> model;         // on the GPU
  std::unique_ptr<dsa::GpuForward> emulated;  // or the path on the host
  Device dev() const { return model ? Device::CUDA : Device::CPU; }
  std::unique_ptr<ModelCache> cache(int64_t capacity, const LayerPattern* pattern) const {
    return model ? model->make_cache(capacity) : emulated->make_cache(capacity, pattern);
  }
  void layers(int64_t l0, int64_t l1, Tensor& x, ModelCache& cache, IndexReuse& reuse, Taps* taps, int64_t p0 = 0) {
    auto record = [taps](const std::string& name, int layer, const Tensor& t) {
      (*taps)[name][layer] = t.to(Device::CPU);
    };
    if (model) {
      if (taps) model->set_tensor_callback(record);
      model->forward_layers(l0, l1, x, cache, p0, reuse);
      model->set_tensor_callback(nullptr);
      return;
    }
    dsa::GpuTap tap;
    if (taps) tap = [record](const char* name, int layer, const Tensor& t) { record(name, layer, t); };
    ForwardStats stats;
    emulated->forward_layers(l0, l1, x, cache, p0, reuse, tap, stats);
  }
  // Host logits [n, vocab] of a host stream x.
  Tensor logits(const Tensor& x, int64_t vocab) {
    Tensor z = Tensor::empty({x.dim(0), vocab}, DType::F32);
    if (model)
      model->output_logits(x.to(Device::CUDA), z.data<float>());
    else
      emulated->output_logits(x, z.data<float>(), {});
    return z;
  }
};

struct Pair {
  TempFolder dir;
  std::unique_ptr<MlaMoeModel> cpu;
  GpuSide gpu;
  // on_device: the CUDA model; else the GPU path on the host.
  Pair(const TinySpec& spec, uint64_t seed, bool on_device, const FamilyOptions& opt = {}) {
    test::write_folder(dir.str(), spec.config(), test::tiny_weights(spec, seed));
    cpu = MlaMoeModel::load(dir.str(), Device::CPU, opt);
    if (on_device) {
      gpu.model = MlaMoeModel::load(dir.str(), Device::CUDA, opt);
      return;
    }
    const MlaMoeConfig& c = cpu->config();
    dsa::check_gpu_dims(c, dir.str());
    std::vector<dsa::LayerWeights> layers;
    for (int64_t l = 0; l < c.n_layers; ++l) layers.push_back(cpu->layer(l));
    const hf::Folder f = hf::Folder::open(dir.str());
    gpu.emulated = std::make_unique<dsa::GpuForward>(c, cpu->rope(), layers, f.read_f32("model.norm.weight", {c.hidden}),
                                                     f.read_f32("lm_head.weight", {c.vocab, c.hidden}), Device::CPU);
  }
};

// The whole forward of `tokens` on the GPU side (as Model::forward runs one chunk).
Tensor run_gpu(Pair& p, const std::vector<int32_t>& tokens, Taps* taps) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  Tensor x = p.cpu->embed(tokens).to(p.gpu.dev());
  auto cache = p.gpu.cache(n + 4, p.cpu->pattern());
  IndexReuse reuse = p.cpu->make_reuse();
  p.gpu.layers(0, p.cpu->info().n_layers, x, *cache, reuse, taps);
  return p.gpu.logits(x.to(Device::CPU), p.cpu->info().vocab);
}

// The (token) rows whose expert sets differ between two "moe_route" taps of one layer.
std::vector<bool> routing_flips(const Tensor& a, const Tensor& b) {
  std::vector<bool> f(static_cast<size_t>(a.dim(0)));
  for (int64_t t = 0; t < a.dim(0); ++t) f[static_cast<size_t>(t)] = row_set(a, t) != row_set(b, t);
  return f;
}

int64_t count(const std::vector<bool>& v) { return std::count(v.begin(), v.end(), true); }

// The whole forward, for models whose every step is well conditioned: dense MLA, or top-k >= the
// context (a sparse selection of a few keys is not: a near-tie at the k-th score, which bf16 moves,
// swaps a key that carries 1/k of the attention, so end-to-end logits of sparse models are compared
// layer by layer instead, expect_layers_match). MoE routing differences (near-ties of the router)
// are counted and held to 10% of (token, layer) pairs; logits: the median row within sqrt(R) 2^-8
// relative, every row whose experts agree with the CPU's in every layer within 4x that.
void expect_forward_matches(Pair& p, const std::vector<int32_t>& tokens, const char* what) {
  const int64_t n = static_cast<int64_t>(tokens.size()), V = p.cpu->info().vocab, L = p.cpu->info().n_layers;
  Taps tc, tg;
  const Tensor zc = run(*p.cpu, tokens, &tc);
  const Tensor zg = run_gpu(p, tokens, &tg);
  for (int64_t i = 0; i < zg.numel(); ++i) ASSERT_TRUE(std::isfinite(zg.data<float>()[i])) << what << " " << i;
  std::vector<bool> flipped(static_cast<size_t>(n), false);
  int64_t pairs = 0, flips = 0;
  for (const auto& [l, ids] : tc["moe_route"]) {
    const std::vector<bool> f = routing_flips(ids, tg["moe_route"].at(l));
    for (size_t t = 0; t < f.size(); ++t) flipped[t] = flipped[t] || f[t];
    flips += count(f);
    pairs += n;
  }
  EXPECT_LE(flips * 10, pairs) << what;
  for (const auto& [l, sel] : tc["topk"])  // every causal key: the same sets
    for (int64_t t = 0; t < n; ++t) EXPECT_EQ(row_set(sel, t), row_set(tg["topk"].at(l), t)) << what << " " << l;
  const std::vector<double> e = row_rel_errors(zg.data<float>(), zc.data<float>(), n, V);
  double worst = 0.0;
  for (int64_t t = 0; t < n; ++t)
    if (!flipped[static_cast<size_t>(t)]) worst = std::max(worst, e[static_cast<size_t>(t)]);
  std::printf("[ dsa family cuda %s ] %lld of %lld routings differ; logits: median row rel. error %.2e, worst "
              "unflipped %.2e (bounds %.2e, %.2e)\n", what, (long long)flips, (long long)pairs, median(e), worst,
              typical_tol(L), 4 * typical_tol(L));
  EXPECT_LE(median(e), typical_tol(L)) << what;
  EXPECT_LE(worst, 4 * typical_tol(L)) << what;
}

// Layer by layer from the same input (the CPU's stream entering the layer), so each layer's
// comparison sees that layer's roundings alone (R = 20): S layers get their source F layer's CPU
// selection on both sides (IndexReuse::provide), F layers run their own indexers.
//  - F layers' selections: >= 90% of the CPU's entries also on the GPU, and every key the GPU
//    selects that the CPU does not scores, by the CPU's own scores, within 4 sqrt(8) 2^-8 of the
//    row's largest |score| of the CPU's k-th (the indexer's path rounds about 8 times: its input,
//    q latent, q, k, and the weights of q_a, wq_b, wk, weights_proj): a near-tie;
//  - the layer's update (out - in) of every token whose selection and experts agree: within
//    4 sqrt(20) 2^-8 relative, the median within sqrt(20) 2^-8; disagreeing tokens counted;
//  - the head on the CPU's last stream: every row within 4 sqrt(2) 2^-8.
void expect_layers_match(Pair& p, const std::vector<int32_t>& tokens, const char* what) {
  const int64_t n = static_cast<int64_t>(tokens.size()), V = p.cpu->info().vocab, L = p.cpu->info().n_layers;
  const LayerPattern* pat = p.cpu->pattern();
  ASSERT_NE(pat, nullptr);
  auto cc = p.cpu->make_cache(n), cg = p.gpu.cache(n, pat);
  std::map<int64_t, Tensor> cpu_sel;
  Tensor x = p.cpu->embed(tokens);
  const double layer_tol = std::sqrt(20.0) * kBf16, index_slack = 4 * std::sqrt(8.0) * kBf16;
  for (int64_t l = 0; l < L; ++l) {
    const int li = static_cast<int>(l);
    IndexReuse rc = p.cpu->make_reuse(), rg = p.cpu->make_reuse();
    if (!pat->is_full(l)) {
      const int64_t src = pat->source(l);
      rc.provide(src, cpu_sel.at(src));
      rg.provide(src, cpu_sel.at(src).to(p.gpu.dev()));
    }
    Taps tc, tg;
    p.cpu->set_tensor_callback([&](const std::string& nm, int ly, const Tensor& t) { tc[nm][ly] = t.to(Device::CPU); });
    Tensor xc = x.to(Device::CPU), xg = x.to(p.gpu.dev());
    p.cpu->forward_layers(l, l + 1, xc, *cc, 0, rc);
    p.cpu->set_tensor_callback(nullptr);
    p.gpu.layers(l, l + 1, xg, *cg, rg, &tg);
    const Tensor yg = xg.to(Device::CPU);

    std::vector<bool> differs(static_cast<size_t>(n), false);
    if (tc.count("moe_route")) differs = routing_flips(tc["moe_route"].at(li), tg["moe_route"].at(li));
    const int64_t route_flips = count(differs);
    const Tensor& sc = tc["topk"].at(li);
    const Tensor& sg = tg["topk"].at(li);
    if (pat->is_full(l)) {
      cpu_sel[l] = sc;
      const Tensor& scores = tc["index_scores"].at(li);  // [n, n] at p0 = 0
      int64_t same = 0, total = 0;
      for (int64_t t = 0; t < n; ++t) {
        const std::set<int32_t> a = row_set(sc, t), b = row_set(sg, t);
        const float* s = scores.data<float>() + t * n;
        double kth = INFINITY, scale = 0.0;
        for (int32_t j : a) kth = std::min(kth, static_cast<double>(s[j]));
        for (int64_t j = 0; j <= t; ++j) scale = std::max(scale, std::fabs(static_cast<double>(s[j])));
        for (int32_t j : a) {
          same += static_cast<int64_t>(b.count(j));
          ++total;
        }
        if (a != b) differs[static_cast<size_t>(t)] = true;
        for (int32_t j : b) {
          if (!a.count(j)) {
            EXPECT_LE(kth - s[j], index_slack * scale) << what << " layer " << l << " row " << t << " key " << j;
          }
        }
      }
      const double agree = static_cast<double>(same) / static_cast<double>(total);
      std::printf("[ dsa family cuda %s ] layer %lld: %.4f of the CPU's selected entries also on the GPU\n", what,
                  (long long)l, agree);
      EXPECT_GE(agree, 0.9) << what << " layer " << l;
    } else {
      for (int64_t t = 0; t < n; ++t) EXPECT_EQ(row_set(sc, t), row_set(sg, t)) << what << " layer " << l;
    }

    // The layer's update, per token.
    std::vector<double> e;
    double worst = 0.0;
    for (int64_t t = 0; t < n; ++t) {
      double d = 0.0, r = 0.0;
      for (int64_t i = 0; i < xc.dim(1); ++i) {
        const int64_t k = t * xc.dim(1) + i;
        const double u = static_cast<double>(xc.data<float>()[k]) - x.data<float>()[k];
        const double g = yg.data<float>()[k];
        d += (g - xc.data<float>()[k]) * (g - xc.data<float>()[k]);
        r += u * u;
      }
      e.push_back(std::sqrt(d / std::max(r, 1e-30)));
      if (!differs[static_cast<size_t>(t)]) worst = std::max(worst, e.back());
    }
    std::printf("[ dsa family cuda %s ] layer %lld: %lld routings and %lld rows of selection or routing differ; "
                "update median rel. error %.2e, worst agreeing %.2e (bounds %.2e, %.2e)\n", what, (long long)l,
                (long long)route_flips, (long long)count(differs), median(e), worst, layer_tol, 4 * layer_tol);
    EXPECT_LE(route_flips * 10, n) << what << " layer " << l;
    EXPECT_LE(median(e), layer_tol) << what << " layer " << l;
    EXPECT_LE(worst, 4 * layer_tol) << what << " layer " << l;
    x = xc;
  }
  Tensor zc = Tensor::empty({n, V}, DType::F32);
  p.cpu->output_logits(x, zc.data<float>());
  const Tensor zg = p.gpu.logits(x, V);
  const std::vector<double> e = row_rel_errors(zg.data<float>(), zc.data<float>(), n, V);
  const double worst = *std::max_element(e.begin(), e.end());
  std::printf("[ dsa family cuda %s ] head: worst row rel. error %.2e (bound %.2e)\n", what, worst,
              4 * std::sqrt(2.0) * kBf16);
  EXPECT_LE(worst, 4 * std::sqrt(2.0) * kBf16) << what;
}

// ------------------------------------------------------------------------------------------------
// Without a device: the tiny HF checkpoints' dims are refused on the GPU, naming both.

TEST(DsaFamilyCuda, TinyHfCheckpointsNameTheirDimsAndTheKernels) {
  const std::string root = std::string(IC_SOURCE_DIR) + "/tests/data/hf";
  if (!std::filesystem::exists(root)) GTEST_SKIP() << root << " is absent";
  int folders = 0;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    if (!entry.is_directory()) continue;
    ++folders;
    EXPECT_DSA_ERROR(load_dsa_family(entry.path().string(), Device::CUDA), "kv_lora_rank 32 + qk_rope_head_dim");
    EXPECT_DSA_ERROR(load_dsa_family(entry.path().string(), Device::CUDA), "built for kv_lora_rank 512 + "
                     "qk_rope_head_dim 64");
  }
  EXPECT_GE(folders, 5);
}

TEST(DsaFamilyCuda, IndexerDimsTheGpuCannotTakeAreNamed) {
  TinySpec s = gpu_spec(TinySpec());
  s.index_dim = 96;
  TempFolder d;
  test::write_folder(d.str(), s.config(), test::tiny_weights(s, 3));
  EXPECT_DSA_ERROR(load_dsa_family(d.str(), Device::CUDA), "index_n_heads 4 x index_head_dim 96");
  s = gpu_spec(TinySpec());
  s.index_topk = 4096;
  test::write_folder(d.str(), s.config(), test::tiny_weights(s, 3));
  EXPECT_DSA_ERROR(load_dsa_family(d.str(), Device::CUDA), "index_topk 4096");
}

// ------------------------------------------------------------------------------------------------
// On the GPU

// The small kernels against their CPU twins (gpu_kernels.cpp), which the host run of the path
// checks against the reference: bf16 outputs bit for bit (both round f32 to nearest even), f32
// RoPE outputs within 2 f32 ulps (device and host cos/sin of one double may differ in the last bit).
TEST(DsaFamilyCuda, SmallKernelsMatchTheirCpuTwins) {
  IC_CUDA_OR_SKIP();
  std::mt19937 rng(7);
  const int64_t n = 5, H = 3, nope = 32, R = 64, L = 512, p0 = 9;
  const dsa::RopeTable table(RopeScaling{}, R);
  Tensor inv = Tensor::empty({R / 2}, DType::F32);
  std::copy(table.inv_freq().begin(), table.inv_freq().end(), inv.data<float>());
  const Tensor inv_d = inv.to(Device::CUDA);
  auto same_bits = [](const Tensor& a, const Tensor& b) {
    const Tensor h = b.to(Device::CPU);
    return std::equal(a.data<uint16_t>(), a.data<uint16_t>() + a.numel(), h.data<uint16_t>());
  };
  for (bool interleave : {false, true}) {
    dsa::gpu::RopeArgs rc{inv.data<float>(), R, 1.07, interleave}, rd = rc;
    rd.inv_freq = inv_d.data<float>();
    // rope_rows on [n, H, nope + R] at offset nope.
    Tensor q = test::random_tensor({n, H, nope + R}, rng, 1.0), qd = q.to(Device::CUDA);
    dsa::gpu::rope_rows(Device::CPU, q.data<float>(), n, H, H * (nope + R), nope + R, nope, rc, p0);
    dsa::gpu::rope_rows(Device::CUDA, qd.data<float>(), n, H, H * (nope + R), nope + R, nope, rd, p0);
    const Tensor qh = qd.to(Device::CPU);
    for (int64_t i = 0; i < q.numel(); ++i)
      EXPECT_NEAR(qh.data<float>()[i], q.data<float>()[i], 2.4e-7 * std::max(1.0f, std::fabs(q.data<float>()[i])));
    // kv_rows into a cache at rows p0 ..
    const Tensor kva = test::random_tensor({n, L + R}, rng, 1.0), w = test::random_tensor({L}, rng, 0.25, 1.0);
    const Tensor kva_d = kva.to(Device::CUDA), w_d = w.to(Device::CUDA);
    Tensor cache = Tensor::zeros({p0 + n, L + R}, DType::BF16), cache_d = Tensor::zeros({p0 + n, L + R}, DType::BF16,
                                                                                        Device::CUDA);
    dsa::gpu::kv_rows(Device::CPU, kva.data<float>(), n, L, w.data<float>(), 1e-6f, rc, p0, cache.data<uint16_t>());
    dsa::gpu::kv_rows(Device::CUDA, kva_d.data<float>(), n, L, w_d.data<float>(), 1e-6f, rd, p0,
                      cache_d.data<uint16_t>());
    const Tensor ch = cache_d.to(Device::CPU);
    int64_t off_by_one = 0;  // a RoPE value one f32 ulp apart may round to a neighbouring bf16
    for (int64_t i = 0; i < cache.numel(); ++i) {
      const int d = std::abs(int(cache.data<uint16_t>()[i]) - int(ch.data<uint16_t>()[i]));
      EXPECT_LE(d, 1) << i;
      off_by_one += d;
    }
    EXPECT_LE(off_by_one, 2) << "interleave " << interleave;
  }
  // The reshuffles and the index list: bit for bit.
  const Tensor q = test::random_tensor({n, H, nope + R}, rng, 1.0), qd = q.to(Device::CUDA);
  Tensor qn = Tensor::zeros({H * n, nope}, DType::BF16), qn_d = Tensor::zeros({H * n, nope}, DType::BF16, Device::CUDA);
  Tensor q576 = Tensor::zeros({n, H, L + R}, DType::BF16), q576_d = Tensor::zeros({n, H, L + R}, DType::BF16,
                                                                                     Device::CUDA);
  dsa::gpu::split_query(Device::CPU, q.data<float>(), n, H, nope, R, L, qn.data<uint16_t>(), q576.data<uint16_t>());
  dsa::gpu::split_query(Device::CUDA, qd.data<float>(), n, H, nope, R, L, qn_d.data<uint16_t>(),
                        q576_d.data<uint16_t>());
  const Tensor hm = test::random_tensor({H * n, L}, rng, 1.0), hm_d = hm.to(Device::CUDA);
  dsa::gpu::heads_to_tokens(Device::CPU, hm.data<float>(), n, H, L, q576.data<uint16_t>(), L + R, 0);
  dsa::gpu::heads_to_tokens(Device::CUDA, hm_d.data<float>(), n, H, L, q576_d.data<uint16_t>(), L + R, 0);
  EXPECT_TRUE(same_bits(qn, qn_d));
  EXPECT_TRUE(same_bits(q576, q576_d));
  Tensor th = Tensor::zeros({H * n, L}, DType::BF16), th_d = Tensor::zeros({H * n, L}, DType::BF16, Device::CUDA);
  dsa::gpu::tokens_to_heads(Device::CPU, hm.data<float>(), n, H, L, th.data<uint16_t>());
  dsa::gpu::tokens_to_heads(Device::CUDA, hm_d.data<float>(), n, H, L, th_d.data<uint16_t>());
  EXPECT_TRUE(same_bits(th, th_d));
  Tensor idx = Tensor::empty({n, p0 + n}, DType::I32), idx_d = Tensor::empty({n, p0 + n}, DType::I32, Device::CUDA);
  dsa::gpu::causal_indices(Device::CPU, idx.data<int32_t>(), n, p0 + n, p0);
  dsa::gpu::causal_indices(Device::CUDA, idx_d.data<int32_t>(), n, p0 + n, p0);
  const Tensor idx_h = idx_d.to(Device::CPU);
  EXPECT_TRUE(std::equal(idx.data<int32_t>(), idx.data<int32_t>() + idx.numel(), idx_h.data<int32_t>()));
  Tensor y = test::random_tensor({n, 7}, rng, 1.0), yd = y.to(Device::CUDA);
  const Tensor b = test::random_tensor({7}, rng, 1.0), bd = b.to(Device::CUDA);
  dsa::gpu::add_bias(Device::CPU, y.data<float>(), b.data<float>(), n, 7);
  dsa::gpu::add_bias(Device::CUDA, yd.data<float>(), bd.data<float>(), n, 7);
  const Tensor yh = yd.to(Device::CPU);
  EXPECT_TRUE(std::equal(y.data<float>(), y.data<float>() + y.numel(), yh.data<float>()));
}

// The four comparisons, on the device (DsaFamilyCuda) or with the GPU path run on the host
// (DsaFamilyGpuPath: every build).
void deepseek_layers(bool dev) {
  Pair p(gpu_spec(TinySpec()), 11, dev);  // yarn, half-split indexer RoPE, all F
  expect_layers_match(p, random_tokens(40, 128, 1), dev ? "deepseek_v32" : "deepseek_v32 (host)");
}
void glm_pattern_layers(bool dev) {
  FamilyOptions opt;
  opt.pattern = LayerPattern::parse("FSFS", 4);
  Pair p(gpu_spec(TinySpec::glm()), 12, dev, opt);  // interleaved RoPE, IndexCache 1/2
  expect_layers_match(p, random_tokens(40, 128, 2), dev ? "glm_moe_dsa FSFS" : "glm_moe_dsa FSFS (host)");
}
void dense_mla_forward(bool dev) {
  Pair p(gpu_spec(TinySpec::lite()), 13, dev);  // no q LoRA, no indexer: every causal key as the list
  ASSERT_EQ(p.cpu->pattern(), nullptr);
  expect_forward_matches(p, random_tokens(40, 128, 3), dev ? "glm4_moe_lite" : "glm4_moe_lite (host)");
}
void covering_topk_forward(bool dev) {
  TinySpec s = gpu_spec(TinySpec());
  s.index_topk = 64;  // > the 40 tokens: every selection is every causal key, -1 padded
  Pair p(s, 14, dev);
  expect_forward_matches(p, random_tokens(40, 128, 4), dev ? "deepseek_v32 k >= context" : "k >= context (host)");
}

TEST(DsaFamilyGpuPath, DeepseekV32LayersMatchTheCpuReference) { deepseek_layers(false); }
TEST(DsaFamilyGpuPath, GlmMoeDsaWithAPatternLayersMatchTheCpuReference) { glm_pattern_layers(false); }
TEST(DsaFamilyGpuPath, DenseMlaModelMatchesTheCpuReference) { dense_mla_forward(false); }
TEST(DsaFamilyGpuPath, TopkCoveringTheContextMatchesTheCpuReference) { covering_topk_forward(false); }

TEST(DsaFamilyCuda, DeepseekV32LayersMatchTheCpuReference) {
  IC_CUDA_OR_SKIP();
  deepseek_layers(true);
}
TEST(DsaFamilyCuda, GlmMoeDsaWithAPatternLayersMatchTheCpuReference) {
  IC_CUDA_OR_SKIP();
  glm_pattern_layers(true);
}
TEST(DsaFamilyCuda, DenseMlaModelMatchesTheCpuReference) {
  IC_CUDA_OR_SKIP();
  dense_mla_forward(true);
}
TEST(DsaFamilyCuda, TopkCoveringTheContextMatchesTheCpuReference) {
  IC_CUDA_OR_SKIP();
  covering_topk_forward(true);
}

TEST(DsaFamilyCuda, SharedLayersAttendOverTheirFullLayersSelection) {
  IC_CUDA_OR_SKIP();
  FamilyOptions opt;
  opt.pattern = LayerPattern::parse("FSSF", 4);
  Pair p(gpu_spec(TinySpec()), 15, true, opt);
  MlaMoeModel& m = *p.gpu.model;
  m.reset_stats();
  Taps taps;
  run(m, random_tokens(30, 128, 5), &taps);
  const auto& topk = taps.at("topk");
  auto same = [](const Tensor& a, const Tensor& b) {
    return a.numel() == b.numel() && std::equal(a.data<int32_t>(), a.data<int32_t>() + a.numel(), b.data<int32_t>());
  };
  EXPECT_TRUE(same(topk.at(1), topk.at(0)));
  EXPECT_TRUE(same(topk.at(2), topk.at(0)));
  EXPECT_FALSE(same(topk.at(3), topk.at(0)));  // its own indexer
  EXPECT_EQ(taps.at("index_q").size(), 2u);    // layers 0 and 3 only
  EXPECT_EQ(m.stats().indexer_layer_runs, 2);
  auto cache = m.make_cache(16);
  auto* gc = dynamic_cast<dsa::GpuCache*>(cache.get());
  ASSERT_NE(gc, nullptr);
  EXPECT_TRUE(gc->index_k(0).defined());
  EXPECT_FALSE(gc->index_k(1).defined());
  EXPECT_FALSE(gc->index_k(2).defined());
  EXPECT_TRUE(gc->index_k(3).defined());
  EXPECT_EQ(cache->index_bytes(), 2 * 16 * 128 * 2);  // bf16 keys on the two F layers

  // set_pattern on the GPU model: the new F layer's indexer goes up, its keys into new caches.
  m.set_pattern(LayerPattern::parse("FFSF", 4));
  Taps t2;
  run(m, random_tokens(30, 128, 5), &t2);
  EXPECT_EQ(t2.at("index_q").size(), 3u);
  EXPECT_TRUE(same(t2.at("topk").at(2), t2.at("topk").at(1)));
  EXPECT_TRUE(same(t2.at("topk").at(0), topk.at(0)));  // the same tokens, the same first layer
}

TEST(DsaFamilyCuda, PrefillThenDecodeEqualsOnePrefill) {
  IC_CUDA_OR_SKIP();
  for (const TinySpec& spec : {gpu_spec(TinySpec()), gpu_spec(TinySpec::lite())}) {
    TempFolder dir;
    test::write_folder(dir.str(), spec.config(), test::tiny_weights(spec, 21));
    const auto m = MlaMoeModel::load(dir.str(), Device::CUDA, {});
    const int64_t n = 30, half = 17, V = spec.vocab;
    const std::vector<int32_t> tokens = random_tokens(n, V, 6);
    const Tensor full = run(*m, tokens);
    auto cache = m->make_cache(n);
    Tensor part;
    m->forward(std::span(tokens).first(half), *cache, part, true);
    std::vector<double> e = row_rel_errors(part.data<float>(), full.data<float>(), half, V);
    for (int64_t t = half; t < n; ++t) {
      Tensor step;
      m->forward(std::span(tokens).subspan(t, 1), *cache, step, false);
      e.push_back(row_rel_errors(step.data<float>(), full.data<float>() + t * V, 1, V)[0]);
    }
    // The same arithmetic up to cuBLAS's choice of algorithm per shape (f32 sums in another
    // order, which can move a bf16 rounding): held to the bound of one bf16 path.
    const double worst = *std::max_element(e.begin(), e.end());
    std::printf("[ dsa family cuda %s decode vs prefill ] worst row rel. error %.2e (bound %.2e)\n",
                spec.model_type.c_str(), worst, typical_tol(spec.layers));
    EXPECT_LE(worst, typical_tol(spec.layers)) << spec.model_type;
    EXPECT_EQ(cache->size(), n);
  }
}

// The same on the host run of the GPU path, through forward_layers at p0 > 0 (positions, cache
// rows, the indexer's causal rows and the dense index lists after cached tokens).
TEST(DsaFamilyGpuPath, PrefillThenDecodeEqualsOnePrefill) {
  for (const TinySpec& spec : {gpu_spec(TinySpec()), gpu_spec(TinySpec::lite())}) {
    Pair p(spec, 21, false);
    const int64_t n = 24, half = 15, V = spec.vocab, L = spec.layers;
    const std::vector<int32_t> tokens = random_tokens(n, V, 6);
    const Tensor full = run_gpu(p, tokens, nullptr);
    auto cache = p.gpu.cache(n, p.cpu->pattern());
    auto step = [&](int64_t t0, int64_t t1) {
      Tensor x = p.cpu->embed(std::span(tokens).subspan(t0, t1 - t0));
      IndexReuse reuse = p.cpu->make_reuse();
      p.gpu.layers(0, L, x, *cache, reuse, nullptr, t0);
      return p.gpu.logits(x, V);
    };
    const Tensor part = step(0, half);
    std::vector<double> e = row_rel_errors(part.data<float>(), full.data<float>(), half, V);
    for (int64_t t = half; t < n; ++t)
      e.push_back(row_rel_errors(step(t, t + 1).data<float>(), full.data<float>() + t * V, 1, V)[0]);
    const double worst = *std::max_element(e.begin(), e.end());
    std::printf("[ dsa family gpu path (host) %s decode vs prefill ] worst row rel. error %.2e\n",
                spec.model_type.c_str(), worst);
    EXPECT_LE(worst, typical_tol(L)) << spec.model_type;
  }
}

TEST(DsaFamilyCuda, LogprobsAreTheLogitsLogSoftmax) {
  IC_CUDA_OR_SKIP();
  const TinySpec spec = gpu_spec(TinySpec());
  TempFolder dir;
  test::write_folder(dir.str(), spec.config(), test::tiny_weights(spec, 22));
  const auto m = MlaMoeModel::load(dir.str(), Device::CUDA, {});
  const std::vector<int32_t> tokens = random_tokens(24, spec.vocab, 7), targets = random_tokens(24, spec.vocab, 8);
  const Tensor z = run(*m, tokens);
  auto cache = m->make_cache(24);
  std::vector<float> lp(24);
  m->forward_logprobs(tokens, *cache, targets, lp.data());
  for (int64_t t = 0; t < 24; ++t) {
    const float* r = z.data<float>() + t * spec.vocab;
    double mx = r[0], s = 0.0;
    for (int64_t v = 1; v < spec.vocab; ++v) mx = std::max(mx, static_cast<double>(r[v]));
    for (int64_t v = 0; v < spec.vocab; ++v) s += std::exp(r[v] - mx);
    // f32 log-sum-exp over 128 logits of a few units: ~1e-6; the two runs are the same kernels.
    EXPECT_NEAR(lp[static_cast<size_t>(t)], r[targets[static_cast<size_t>(t)]] - mx - std::log(s), 1e-4) << t;
  }
  EXPECT_EQ(m->device(), Device::CUDA);
  EXPECT_GT(m->weight_bytes(), 0);
}

}  // namespace
}  // namespace ic
