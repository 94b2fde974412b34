// The distillation loss, its backward and the teacher targets on the GPU (distill_loss_cuda,
// attention_targets / mean_targets on device tensors) against the double references, plus the
// trainer's --device cuda path. GPU tests skip without a usable device; tolerances follow the
// error model of tests/test_distill.cpp (Higham gamma_L bounds), never picked to pass.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "distill_test_util.h"
#include "indexcache/distill_loss.h"
#include "indexcache/teacher.h"
#include "indexcache/text_data.h"
#include "indexcache/trainer.h"
#include "model/llama.h"
#include "op_test_util.h"
#include "test_util.h"

namespace ic {
namespace {

using namespace distill_test;
using test::gamma;
using test::kU;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();  // target entries past the diagonal

#define NEED_GPU() \
  if (!::ic::cuda_available()) GTEST_SKIP() << "no usable CUDA device (or a CPU-only build)"

const char* kNames[] = {"wq", "wk", "k_norm", "k_bias", "wproj"};
const Tensor& part(const IndexerWeights& w, int i) {
  const Tensor* t[] = {&w.wq, &w.wk, &w.k_norm, &w.k_bias, &w.wproj};
  return *t[i];
}

// Random selections: indices in [-1, n) (future ones and duplicates included), row 3 (when it
// exists) has only -1 and future indices, so its support is empty.
Tensor random_selected(int64_t n, int64_t k, std::mt19937& gen) {
  Tensor sel = Tensor::empty({n, k}, DType::I32);
  std::uniform_int_distribution<int> u(-1, static_cast<int>(n) - 1);
  for (int64_t i = 0; i < sel.numel(); ++i) sel.data<int32_t>()[i] = u(gen);
  if (n > 4)
    for (int64_t j = 0; j < k; ++j) sel.data<int32_t>()[3 * k + j] = j % 2 ? -1 : static_cast<int32_t>(4 + j % (n - 4));
  return sel;
}

// Fills a large block of device memory with NaN and frees it, so the scratch buffers the next
// GPU call allocates most likely start as NaN: a kernel that reads scratch it never wrote shows
// up as a non-finite result.
void poison_device_heap() {
  Tensor host = Tensor::empty({int64_t{64} << 20}, DType::F32);  // 256 MiB
  std::fill(host.data<float>(), host.data<float>() + host.numel(), std::numeric_limits<float>::quiet_NaN());
  Tensor dev = host.to(Device::CUDA);
}

bool all_finite(const IndexerWeights& g) {
  for (int i = 0; i < 5; ++i)
    for (int64_t j = 0; j < part(g, i).numel(); ++j)
      if (!std::isfinite(part(g, i).data<float>()[j])) return false;
  return true;
}
bool bitwise_equal(const IndexerWeights& a, const IndexerWeights& b) {
  for (int i = 0; i < 5; ++i)
    if (std::memcmp(part(a, i).raw(), part(b, i).raw(), part(a, i).nbytes()) != 0) return false;
  return true;
}

struct Case {
  int64_t n, D, H, d, rope_dim;
  ops::RopeStyle style;
  int64_t topk, chunk_rows;  // chunk_rows 0 = automatic
};

std::string case_name(const Case& c, bool sparse) {
  return fmt::format("n {} D {} H {} d {} rope {} {} topk {} chunk {} {}", c.n, c.D, c.H, c.d, c.rope_dim,
                     ops::rope_style_name(c.style), c.topk, c.chunk_rows, sparse ? "sparse" : "dense");
}

// GPU vs the double reference. Error model (tests/test_distill.cpp, check_fast_vs_reference):
// every quantity passes through f32 reductions of total length at most
// L = D (projections) + 3d (q.k, LayerNorm) + H (head sum) + 3n (dq, weight sums over tokens)
// + n H (dk sums over queries and heads; GEMMs in any order: gamma_L bounds every order), the
// scores' error ~ gamma_L |I| is amplified by (1 + max|I|) through the softmax; per tensor,
// normwise ||g_gpu - g_ref|| <= 4 gamma_L (1 + max|I|) ||g_ref|| + flips, flips from
// pre-activations within eps_a = 4 gamma_{D+d} |q| |k| of 0 (either ReLU branch is then
// f32-correct). Loss: |gpu - ref| <= 4 gamma_L sum_t (1 + 2 max_s |I[t, s]|).
// Recall: ties near the k-th score may reorder, so recall is checked in [0, 1] here and
// exactly on constructed targets below.
void check_case(const Case& c, bool sparse, uint32_t seed) {
  SCOPED_TRACE(case_name(c, sparse) + fmt::format(" seed {}", seed));
  std::mt19937 gen(seed);
  IndexerConfig cfg;
  cfg.n_heads = c.H;
  cfg.head_dim = c.d;
  cfg.rope_dim = c.rope_dim;
  cfg.rope_style = c.style;
  cfg.topk = c.topk;
  const int64_t n = c.n, D = c.D;
  const IndexerWeights w = random_weights(cfg, D, gen);
  DistillInput in{random_tensor({n, D}, gen, 1.0f), random_target(n, gen, kNaN), Tensor()};
  if (sparse) in.selected = random_selected(n, std::max<int64_t>(4, n / 4), gen);

  IndexerWeights gr = IndexerWeights::zeros(cfg, D), gg = IndexerWeights::zeros(cfg, D);
  const DistillStats sr = distill_loss_reference(cfg, w, in, &gr);
  poison_device_heap();
  const DistillStats sg = distill_loss_cuda(cfg, w, in, &gg, c.chunk_rows);
  ASSERT_TRUE(std::isfinite(sg.loss) && std::isfinite(sg.recall_sum));
  ASSERT_TRUE(all_finite(gg)) << "a GPU kernel read scratch it never wrote (or p past the diagonal)";

  const Forward f = forward(cfg, w, in.x);
  const ErrorScales es = error_scales(cfg, w, in.x, in.p, in.selected, f, kU);
  const double max_I = es.max_I, loss_scale = es.loss_scale, max_x = es.max_x, max_gamma = es.max_gamma;
  const double flip = es.flip;
  const int64_t risky = es.risky;
  const double gL = gamma(D + 3.0 * c.d + c.H + 3.0 * n + 1.0 * n * c.H);

  EXPECT_EQ(sg.rows, sr.rows);
  EXPECT_NEAR(sg.loss, sr.loss, 4 * gL * loss_scale);
  EXPECT_GE(sg.recall_sum, 0.0);
  EXPECT_LE(sg.recall_sum, static_cast<double>(sg.rows) * (1 + 1e-6));
  double tol[5];
  for (int i = 0; i < 5; ++i) {
    const double err = frob_diff(part(gg, i), part(gr, i)), ref = frob(part(gr, i));
    tol[i] = 4 * gL * (1 + max_I) * ref + flip;
    EXPECT_LE(err, tol[i]) << kNames[i] << " |ref| " << ref << " risky kinks " << risky;
  }

  // Twice, bitwise; device-resident inputs, weights and gradient (the trainer's path) give the
  // same bits as host ones, and the gradient is ADDED to what the buffer holds.
  IndexerWeights gg2 = IndexerWeights::zeros(cfg, D);
  const DistillStats sg2 = distill_loss_cuda(cfg, w, in, &gg2, c.chunk_rows);
  EXPECT_EQ(sg.loss, sg2.loss);
  EXPECT_EQ(sg.recall_sum, sg2.recall_sum);
  EXPECT_TRUE(bitwise_equal(gg, gg2)) << "not deterministic";
  const DistillInput din{in.x.to(Device::CUDA), in.p.to(Device::CUDA),
                         sparse ? in.selected.to(Device::CUDA) : Tensor()};
  IndexerWeights gd = weights_to(IndexerWeights::zeros(cfg, D), Device::CUDA);
  const DistillStats sd = distill_loss_cuda(cfg, weights_to(w, Device::CUDA), din, &gd, c.chunk_rows);
  EXPECT_EQ(sd.loss, sg.loss);
  EXPECT_TRUE(bitwise_equal(weights_to(gd, Device::CPU), gg)) << "device-resident path differs";
  // Loss only: the same statistics.
  const DistillStats sl = distill_loss_cuda(cfg, w, in, nullptr, c.chunk_rows);
  EXPECT_EQ(sl.loss, sg.loss);
  EXPECT_EQ(sl.rows, sg.rows);
  EXPECT_EQ(sl.recall_sum, sg.recall_sum);
  // Accumulation: a gradient buffer holding 1 ends at 1 + g. cuBLAS may pick another kernel
  // for beta = 1, so (result - 1) is held to the reference like g itself, plus the rounding of
  // the final addition, u (1 + |g|) per element.
  IndexerWeights ones = IndexerWeights::zeros(cfg, D);
  for (Tensor* t : {&ones.wq, &ones.wk, &ones.k_norm, &ones.k_bias, &ones.wproj})
    std::fill(t->data<float>(), t->data<float>() + t->numel(), 1.0f);
  IndexerWeights acc = weights_to(ones, Device::CUDA);
  distill_loss_cuda(cfg, weights_to(w, Device::CUDA), din, &acc, c.chunk_rows);
  const IndexerWeights acc_h = weights_to(acc, Device::CPU);
  for (int i = 0; i < 5; ++i) {
    double err = 0.0, round = 0.0;
    for (int64_t j = 0; j < part(gr, i).numel(); ++j) {
      const double g = part(gr, i).data<float>()[j], got = part(acc_h, i).data<float>()[j];
      err += (got - 1.0 - g) * (got - 1.0 - g);
      round += (1.0 + std::abs(g)) * (1.0 + std::abs(g));
    }
    EXPECT_LE(std::sqrt(err), tol[i] + 2 * kU * std::sqrt(round)) << kNames[i] << " accumulated";
  }
  std::printf("  %s: loss %.6f vs %.6f, rows %lld, recall %.4f vs %.4f, risky kinks %lld\n",
              case_name(c, sparse).c_str(), sg.loss, sr.loss, static_cast<long long>(sg.rows), sg.recall(),
              sr.recall(), static_cast<long long>(risky));
}

// n not a multiple of 32/64 and n = 1; H in {1, 4, 16}; d in {32, 64, 128}; rope slices of
// both styles (and none); automatic and forced row blocks (several blocks, a ragged last one).
const Case kCases[] = {
    {1, 24, 1, 32, 32, ops::RopeStyle::kHalf, 4, 0},
    {13, 40, 4, 32, 16, ops::RopeStyle::kAdjacent, 5, 0},
    {77, 64, 16, 64, 64, ops::RopeStyle::kHalf, 16, 0},
    {77, 64, 16, 64, 64, ops::RopeStyle::kHalf, 16, 7},
    {150, 80, 4, 128, 64, ops::RopeStyle::kAdjacent, 16, 64},
    {97, 48, 1, 128, 0, ops::RopeStyle::kHalf, 200, 0},  // top-k above n: recall 1
    {130, 72, 4, 64, 32, ops::RopeStyle::kHalf, 3, 33},
};

TEST(DistillCuda, MatchesReferenceDense) {
  NEED_GPU();
  uint32_t seed = 101;
  for (const Case& c : kCases) check_case(c, false, seed++);
}

TEST(DistillCuda, MatchesReferenceSparse) {
  NEED_GPU();
  uint32_t seed = 201;
  for (const Case& c : kCases) check_case(c, true, seed++);
}

// Recall on constructed targets (test_distill.cpp's RecallOnConstructedTargets): p puts 0.6 on
// the row's best-scoring key and 0.4 on its worst, so recall is 0.6 for rows with t >= topk and
// 1 before. Also a row of all-equal scores (zero head weights): every tie, the lowest indices win.
TEST(DistillCuda, RecallOnConstructedTargets) {
  NEED_GPU();
  IndexerConfig cfg = mid_config(ops::RopeStyle::kHalf);
  cfg.topk = 3;
  const int64_t n = 300;  // rows longer than one pass of the 256-thread row kernel
  BestWorstCase c = best_worst_case(cfg, n, 32, 51);
  EXPECT_NEAR(distill_loss_cuda(cfg, c.w, {c.x, c.p, Tensor()}, nullptr).recall(), c.recall, 1e-6);

  // All scores 0: the top-k is s = 0..k-1; p puts 0.25 on s = 1 and 0.75 on s = t.
  std::fill(c.w.wproj.data<float>(), c.w.wproj.data<float>() + c.w.wproj.numel(), 0.0f);
  Tensor p2 = Tensor::zeros({n, n}, DType::F32);
  double expect = 0.0;
  for (int64_t t = 0; t < n; ++t) {
    p2.data<float>()[t * n + std::min<int64_t>(1, t)] += 0.25f;
    p2.data<float>()[t * n + t] += 0.75f;
    expect += t < cfg.topk ? 1.0 : 0.25;
  }
  EXPECT_NEAR(distill_loss_cuda(cfg, c.w, {c.x, p2, Tensor()}, nullptr).recall(), expect / n, 1e-6);
}

// The shape of the bad-input tests: 2 heads x 16, RoPE on 8 dims, the default top-k.
IndexerConfig bad_input_config() {
  IndexerConfig cfg;
  cfg.n_heads = 2;
  cfg.head_dim = 16;
  cfg.rope_dim = 8;
  return cfg;
}

TEST(DistillCuda, RejectsBadInputsOnTheDevice) {
  NEED_GPU();
  const IndexerConfig cfg = bad_input_config();
  std::mt19937 gen(61);
  const IndexerWeights w = random_weights(cfg, 24, gen);
  const Tensor x = random_tensor({5, 24}, gen, 1.0f).to(Device::CUDA);
  Tensor p = random_target(5, gen, kNaN);
  p.data<float>()[2 * 5 + 1] = -0.1f;
  try {
    distill_loss_cuda(cfg, w, {x, p.to(Device::CUDA), Tensor()}, nullptr);
    ADD_FAILURE() << "negative p accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("p[2, 1] = -0.1"), std::string::npos) << e.what();
  }
  Tensor sel = Tensor::zeros({5, 2}, DType::I32);
  sel.data<int32_t>()[3] = 5;
  try {
    distill_loss_cuda(cfg, w, {x, random_target(5, gen, kNaN).to(Device::CUDA), sel.to(Device::CUDA)}, nullptr);
    ADD_FAILURE() << "selected index 5 of 5 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("selected[1, 1] = 5"), std::string::npos) << e.what();
  }
  EXPECT_THROW(distill_loss_cuda(cfg, w, {x, Tensor::zeros({5, 4}, DType::F32, Device::CUDA), Tensor()}, nullptr),
               Error);
}

// Teacher on the GPU vs the double reference (tolerance of test_distill.cpp's Teacher test:
// each logit errs by gamma_hd sum|q k| / sqrt(hd), exp by ~2 ulps, the sums by gamma_{n+H+4}),
// rows exactly 0 past the diagonal, bitwise repeatable; several row blocks are not forced here
// (R = n at this size) but the same loop serves both.
TEST(DistillCuda, TeacherMatchesReference) {
  NEED_GPU();
  const int64_t n = 130, Hq = 9, Hkv = 3, hd = 64;
  std::mt19937 gen(71);
  const Tensor q = random_tensor({n, Hq, hd}, gen, 0.5f), k = random_tensor({n, Hkv, hd}, gen, 0.5f);
  poison_device_heap();
  const Tensor pg = attention_targets(q.to(Device::CUDA), k.to(Device::CUDA));
  ASSERT_EQ(pg.device(), Device::CUDA);
  const Tensor ph = pg.to(Device::CPU), pr = attention_targets_reference(q, k);
  double max_q = 0.0, max_k = 0.0;
  for (int64_t i = 0; i < q.numel(); ++i) max_q = std::max(max_q, std::abs(1.0 * q.data<float>()[i]));
  for (int64_t i = 0; i < k.numel(); ++i) max_k = std::max(max_k, std::abs(1.0 * k.data<float>()[i]));
  const double logit_err = gamma(hd) * hd * max_q * max_k / 8.0 + 2 * kU * 8;
  const double rel = 2 * logit_err + gamma(n + Hq + 4.0) + 4 * kU;
  for (int64_t t = 0; t < n; ++t) {
    double sum = 0.0;
    for (int64_t s = 0; s < n; ++s) {
      const float a = ph.data<float>()[t * n + s], b = pr.data<float>()[t * n + s];
      if (s > t) {
        ASSERT_EQ(a, 0.0f) << t << "," << s;
        continue;
      }
      sum += a;
      ASSERT_LE(std::abs(a - b), rel * b) << t << "," << s;
    }
    EXPECT_NEAR(sum, 1.0, gamma(n + 2.0));
  }
  const Tensor pg2 = attention_targets(q.to(Device::CUDA), k.to(Device::CUDA)).to(Device::CPU);
  EXPECT_EQ(0, std::memcmp(pg2.raw(), ph.raw(), ph.nbytes()));

  // mean_targets on the device: the host's arithmetic, so the same bits.
  const Tensor p1 = attention_targets(q, random_tensor({n, Hkv, hd}, gen, 0.5f)), p2 = attention_targets(q, k);
  const Tensor host_mean = mean_targets(std::vector<Tensor>{p1, p2, pr});
  const Tensor dev_mean =
      mean_targets(std::vector<Tensor>{p1.to(Device::CUDA), p2.to(Device::CUDA), pr.to(Device::CUDA)});
  ASSERT_EQ(dev_mean.device(), Device::CUDA);
  EXPECT_EQ(0, std::memcmp(dev_mean.to(Device::CPU).raw(), host_mean.raw(), host_mean.nbytes()));
}

// A CPU build says clearly that the CUDA path is missing.
TEST(DistillCuda, CpuBuildRefusesTheCudaPath) {
  if (cuda_compiled()) GTEST_SKIP() << "this build has CUDA";
  const IndexerConfig cfg = bad_input_config();
  std::mt19937 gen(81);
  const IndexerWeights w = random_weights(cfg, 24, gen);
  const DistillInput in{random_tensor({5, 24}, gen, 1.0f), random_target(5, gen, kNaN), Tensor()};
  try {
    distill_loss_cuda(cfg, w, in, nullptr);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("-DWITH_CUDA=ON"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------
// The trainer's CUDA path on the real model (tests/test_trainer.cpp's tiny configuration).
class DistillCudaTrainer : public ::testing::Test {
 protected:
  void SetUp() override {
    model_path_ = test::find_test_model();
    std::ifstream in(std::string(IC_SOURCE_DIR) + "/tests/data/reference_text.txt", std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    text_ = ss.str().substr(0, 12000);
  }
  TextWindows windows(LlamaModel& m) const {
    const Tokenizer& tok = m.tokenizer();
    TextDataOptions opt;
    opt.ctx = 64;
    opt.separator = tok.eos_id();
    return TextWindows::from_documents({tok.encode(text_, false)}, opt);
  }
  TrainerConfig tiny(LlamaModel& m, DistillMode mode, int64_t steps, Device device) const {
    return tiny_trainer_config(mode, steps, m.config().rope_base, m.config().n_layers, device);
  }
  std::string model_path_, text_;
};

TEST_F(DistillCudaTrainer, CpuBuildRefusesDeviceCuda) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is available";
  if (model_path_.empty()) GTEST_SKIP() << "model not found (set IC_MODEL or add models/)";
  auto model = LlamaModel::load(model_path_);
  const TextWindows data = windows(*model);
  try {
    Trainer t(*model, data, tiny(*model, DistillMode::kWarmup, 2, Device::CUDA));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs a CUDA build"), std::string::npos) << e.what();
  }
}

// Same model (on the host, so the captures are identical), loss on the host vs on the GPU.
// Step 1 starts from the same weights, so each layer's mean KL is two f32 evaluations of the
// same double quantity: per row they differ by <= 4 gamma_L (1 + 2 max|I|) (the loss bound of
// check_case; L = D + 3d + H + 3n + nH), plus the targets' difference: host and GPU p each lie
// within relative eps_p of the double p (the Teacher bound, from the captures' max |q|, |k|),
// which moves a row's KL by <= 2 eps_p (1 + |log r| + |log q|) <= 2 eps_p (1 + 2 max|I| +
// log n + max|log r|); max|log r| is bounded by the teacher logits' spread 2 max|logit|.
// Both max|I| and the logits are measured on step 1's windows. Later steps: AdamW moves every
// weight by about lr sign(m) early on, so the runs stay together unless f32 noise flips a
// near-zero gradient element; checked loosely (2%) as a sanity bound, with the loss going down.
TEST_F(DistillCudaTrainer, GpuLossMatchesCpuLossOnTheSameCaptures) {
  NEED_GPU();
  IC_TEST_MODEL_OR_SKIP(path);
  auto model = LlamaModel::load(path);
  const TextWindows data = windows(*model);
  for (DistillMode mode : {DistillMode::kWarmup, DistillMode::kPattern}) {
    const TrainerConfig cc = tiny(*model, mode, 4, Device::CPU);
    Trainer cpu(*model, data, cc);
    Trainer gpu(*model, data, tiny(*model, mode, 4, Device::CUDA));
    // The step-1 bound, per F layer, averaged like StepReport::mean_kl.
    double bound = 0.0;
    {
      WindowStream stream(data, cc.seed);
      const std::vector<int64_t> full = cpu.pattern().full_layers();
      std::vector<double> sum(full.size(), 0.0);
      int64_t rows = 0;
      for (int64_t b = 0; b < cc.batch; ++b) {
        const auto caps = capture_layers(*model, stream.next());
        const int64_t n = caps[0].x.dim(0), D = caps[0].x.dim(1);
        const double gL = gamma(D + 3.0 * cc.indexer.head_dim + cc.indexer.n_heads + 3.0 * n +
                                1.0 * n * cc.indexer.n_heads);
        rows += n;
        for (size_t i = 0; i < full.size(); ++i) {
          const Forward f = forward(cc.indexer, cpu.weights(full[i]), caps[full[i]].x);
          double max_logit = 0.0, max_q = 0.0, max_k = 0.0;
          for (int64_t j = full[i]; j < (i + 1 < full.size() ? full[i + 1] : static_cast<int64_t>(caps.size())); ++j) {
            const Tensor &q = caps[j].q, &k = caps[j].k;
            for (int64_t e = 0; e < q.numel(); ++e) max_q = std::max(max_q, std::abs(1.0 * q.data<float>()[e]));
            for (int64_t e = 0; e < k.numel(); ++e) max_k = std::max(max_k, std::abs(1.0 * k.data<float>()[e]));
            const int64_t hd = q.dim(2);
            max_logit = std::max(max_logit, max_q * max_k * hd / std::sqrt(1.0 * hd));
            const double logit_err = gamma(hd) * hd * max_q * max_k / std::sqrt(1.0 * hd) + 16 * kU;
            const double eps_p = 2 * logit_err + gamma(n + q.dim(1) + 4.0) + 4 * kU;
            for (int64_t t = 0; t < n; ++t) {
              double m = 0.0;
              for (int64_t s2 = 0; s2 <= t; ++s2) m = std::max(m, std::abs(f.I[t * n + s2]));
              sum[i] += 4 * gL * (1 + 2 * m) + 2 * eps_p * (1 + 2 * m + std::log(n) + 2 * max_logit);
            }
          }
        }
      }
      for (double v : sum) bound += v / static_cast<double>(rows) / static_cast<double>(full.size());
    }
    std::vector<double> kc, kg;
    while (!cpu.done()) {
      const StepReport a = cpu.step(), b = gpu.step();
      kc.push_back(a.mean_kl);
      kg.push_back(b.mean_kl);
      EXPECT_EQ(a.stats.rows, b.stats.rows);
      EXPECT_TRUE(std::isfinite(b.mean_kl) && std::isfinite(b.recall));
      std::printf("  %s step %lld: mean KL cpu %.6f gpu %.6f, recall cpu %.4f gpu %.4f\n", distill_mode_name(mode),
                  static_cast<long long>(a.step), a.mean_kl, b.mean_kl, a.recall, b.recall);
    }
    EXPECT_NEAR(kg[0], kc[0], bound);
    std::printf("  %s step 1: |gpu - cpu| %.2e, bound %.2e\n", distill_mode_name(mode), std::abs(kg[0] - kc[0]), bound);
    for (size_t i = 1; i < kc.size(); ++i) EXPECT_NEAR(kg[i], kc[i], 2e-2 * kc[i]) << "step " << i + 1;
    EXPECT_LT(kg.back(), kg.front());
  }
}

// The whole CUDA path (model forward, captures, teacher, loss on the GPU) is deterministic: two
// runs give bitwise-identical weights; and a checkpoint resumes bitwise on the GPU as well.
TEST_F(DistillCudaTrainer, FullGpuRunIsDeterministicAndResumes) {
  NEED_GPU();
  IC_TEST_MODEL_OR_SKIP(path);
  auto model = LlamaModel::load(path, Device::CUDA);
  const TextWindows data = windows(*model);
  const TrainerConfig cfg = tiny(*model, DistillMode::kPattern, 4, Device::CUDA);
  Trainer a(*model, data, cfg), b(*model, data, cfg);
  double first = 0.0, last = 0.0;
  for (int i = 0; i < 4; ++i) {
    const StepReport r = a.step();
    b.step();
    if (i == 0) first = r.mean_kl;
    last = r.mean_kl;
  }
  EXPECT_LT(last, first);
  for (int64_t l : a.pattern().full_layers()) EXPECT_TRUE(bitwise_equal(a.weights(l), b.weights(l))) << l;

  const std::string ckpt = ::testing::TempDir() + "ic_distill_cuda_resume.ckpt";
  Trainer c(*model, data, cfg);
  c.step();
  c.step();
  c.save_checkpoint(ckpt);
  Trainer d(*model, data, cfg);
  d.resume(ckpt);
  d.step();
  d.step();
  for (int64_t l : a.pattern().full_layers()) EXPECT_TRUE(bitwise_equal(a.weights(l), d.weights(l))) << l;
  std::remove(ckpt.c_str());
}

}  // namespace
}  // namespace ic
