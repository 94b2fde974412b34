// Tensor and expert parallelism (docs/PARALLEL.md): the collectives of parallel/communicator.h on
// 1 to 4 in-process ranks against plain loops, and the DSA family's sharded CPU forward on 2 and 4
// ranks against one rank on the tiny HF checkpoints of tests/data/hf/ (logits within an f32 bound,
// the F layers' selections identical, taps, decode, the communication counted), and its errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/hf_folder.h"
#include "model/dsa_family/cache.h"
#include "model/dsa_family/model.h"
#include "model/dsa_family/moe.h"
#include "model/dsa_family/shard.h"
#include "parallel/communicator.h"
#include "parallel/local_group.h"

namespace ic {
namespace {

using parallel::Communicator;
using parallel::LocalGroup;
using parallel::run_ranks;

constexpr double kEps32 = 1.0 / (1 << 23);

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// ---- the collectives ----

TEST(ParallelComm, AllReduceSumIsThePlainSumOnEveryRank) {
  for (int N = 1; N <= 4; ++N)
    for (size_t m : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}}) {
      std::vector<std::vector<float>> in(N), out(N);
      for (int r = 0; r < N; ++r) in[r] = out[r] = random_floats(m, 100 * N + r);
      LocalGroup g(N);
      run_ranks(g, [&](Communicator& c) { c.all_reduce_sum(out[c.rank()]); });
      for (size_t i = 0; i < m; ++i) {
        double s = 0.0, a = 0.0;  // the plain loop: double, in rank order, rounded once
        for (int r = 0; r < N; ++r) s += in[r][i], a += std::abs(in[r][i]);
        for (int r = 0; r < N; ++r) {
          ASSERT_EQ(out[r][i], static_cast<float>(s)) << "N " << N << " m " << m << " i " << i << " rank " << r;
          ASSERT_LE(std::abs(out[r][i] - s), kEps32 * a) << i;
        }
      }
      EXPECT_EQ(g.rank(N - 1).stats().all_reduce_calls, 1);
      EXPECT_EQ(g.rank(N - 1).stats().all_reduce_bytes, static_cast<int64_t>(m * 4));
    }
  parallel::SingleRank one;
  std::vector<float> x = random_floats(5, 1), y = x;
  one.all_reduce_sum(y);
  EXPECT_EQ(x, y);
}

TEST(ParallelComm, AllGatherBroadcastAllToAll) {
  for (int N = 1; N <= 4; ++N) {
    const size_t m = 5;
    std::vector<std::vector<float>> in(N), gathered(N, std::vector<float>(N * m)), bc(N);
    for (int r = 0; r < N; ++r) in[r] = random_floats(m, 7 * N + r), bc[r] = random_floats(m, 99 + r);
    const int root = N - 1;
    const std::vector<float> root_value = bc[root];
    // all_to_all: rank r sends r * 10 + d to rank d (2 values each); all_to_all_v: r sends
    // (r + d) % 3 floats valued 100 r + d to rank d.
    std::vector<std::vector<int64_t>> a2a_in(N), a2a_out(N, std::vector<int64_t>(2 * N));
    std::vector<std::vector<float>> v_in(N), v_out(N);
    std::vector<std::vector<int64_t>> sc(N), rc(N);
    for (int r = 0; r < N; ++r)
      for (int d = 0; d < N; ++d) {
        a2a_in[r].insert(a2a_in[r].end(), {r * 10 + d, -(r * 10 + d)});
        sc[r].push_back((r + d) % 3);
        rc[r].push_back((d + r) % 3);  // what rank d sends to r
        for (int k = 0; k < (r + d) % 3; ++k) v_in[r].push_back(100.0f * r + d);
      }
    for (int r = 0; r < N; ++r) {
      int64_t t = 0;
      for (int64_t c : rc[r]) t += c;
      v_out[r].assign(static_cast<size_t>(t), -1.0f);
    }
    LocalGroup g(N);
    run_ranks(g, [&](Communicator& c) {
      const int r = c.rank();
      c.all_gather(in[r], gathered[r]);
      c.broadcast(bc[r], root);
      c.all_to_all(a2a_in[r], a2a_out[r]);
      c.all_to_all_v(v_in[r], sc[r], v_out[r], rc[r]);
      c.barrier();
    });
    for (int r = 0; r < N; ++r) {
      for (int q = 0; q < N; ++q)
        for (size_t i = 0; i < m; ++i) ASSERT_EQ(gathered[r][q * m + i], in[q][i]);
      EXPECT_EQ(bc[r], root_value) << r;
      for (int s = 0; s < N; ++s) {
        EXPECT_EQ(a2a_out[r][2 * s], s * 10 + r);
        EXPECT_EQ(a2a_out[r][2 * s + 1], -(s * 10 + r));
      }
      std::vector<float> expect;
      for (int s = 0; s < N; ++s)
        for (int k = 0; k < (s + r) % 3; ++k) expect.push_back(100.0f * s + r);
      EXPECT_EQ(v_out[r], expect) << r;
      EXPECT_EQ(g.rank(r).stats().barriers, 1);
    }
  }
}

TEST(ParallelComm, MismatchesAndFailuresAbortEveryRank) {
  LocalGroup g(3);
  // Sizes that differ: every rank sees it, nobody waits forever.
  try {
    run_ranks(g, [&](Communicator& c) {
      std::vector<float> x(c.rank() == 1 ? 4 : 3, 1.0f);
      c.all_reduce_sum(x);
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce_sum: rank"), std::string::npos) << e.what();
  }
  // Different collectives.
  try {
    run_ranks(g, [&](Communicator& c) {
      std::vector<float> x(3, 1.0f);
      if (c.rank() == 2) c.barrier(); else c.all_reduce_sum(x);
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("collective order"), std::string::npos) << e.what();
  }
  // A rank failing on its own: the others, waiting in a collective, are woken; its error is the one raised.
  try {
    run_ranks(g, [&](Communicator& c) {
      if (c.rank() == 1) throw Error("rank one's own failure");
      std::vector<float> x(3, 1.0f);
      c.all_reduce_sum(x);
    });
    FAIL() << "no error";
  } catch (const parallel::GroupAborted& e) {
    FAIL() << "the abort was raised instead of the failure: " << e.what();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "rank one's own failure");
  }
  // all_to_all_v counts that disagree with the sender's.
  EXPECT_THROW(run_ranks(g, [&](Communicator& c) {
                 std::vector<float> send(3, 1.0f), recv(c.rank() == 0 ? 4 : 3);
                 std::vector<int64_t> sc{1, 1, 1}, rc{1, 1, 1};
                 if (c.rank() == 0) rc = {2, 1, 1};
                 c.all_to_all_v(send, sc, recv, rc);
               }),
               Error);
  // The group works again after a failure.
  std::vector<std::vector<float>> x(3, std::vector<float>(2, 1.0f));
  run_ranks(g, [&](Communicator& c) { c.all_reduce_sum(x[c.rank()]); });
  EXPECT_EQ(x[2][1], 3.0f);
  EXPECT_THROW(LocalGroup(0), Error);
}

// ---- the DSA family on N ranks ----

std::string hf_dir(const std::string& name) { return std::string(IC_SOURCE_DIR) + "/tests/data/hf/" + name; }

std::vector<int32_t> prompt(int64_t n, int64_t vocab) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 37 + 11) % vocab);
  return t;
}

struct Outputs {
  std::vector<float> logits;                   // [n, vocab]
  std::map<std::pair<std::string, int>, Tensor> taps;  // copies
};

Outputs run(MlaMoeModel& m, const std::vector<int32_t>& tokens) {
  Outputs r;
  m.set_tensor_callback([&r](const std::string& name, int layer, const Tensor& t) {
    if (name == "topk" || name == "q" || name == "attn" || name == "moe_route") r.taps[{name, layer}] = t.to(Device::CPU);
  });
  auto cache = m.make_cache(static_cast<int64_t>(tokens.size()));
  Tensor logits;
  m.forward(tokens, *cache, logits, true);
  m.set_tensor_callback({});
  r.logits.assign(logits.data<float>(), logits.data<float>() + logits.numel());
  return r;
}

double max_abs(const std::vector<float>& v) {
  double a = 0.0;
  for (float x : v) a = std::max(a, static_cast<double>(std::abs(x)));
  return a;
}

// Every dot product accumulates in double on both paths, so only the f32 roundings of the split
// reductions' outputs differ: one rank rounds each output once; N ranks round each rank's partial
// sum and then the sum of the N partials: N + 1 roundings of at most eps32/2 of a value of the
// output's size (a factor 2 for partials that partly cancel). Two split reductions per layer
// (o_proj, the FFN), passed on with O(1) gain (normalised inputs, the residual stream) through L
// layers and the replicated head, relative to the logits' size:
// tol = (N + 1) eps32 * 2 * 2 L max|logit|.
double tolerance(const MlaMoeConfig& c, int N, double logit_scale) {
  return (N + 1) * kEps32 * 2.0 * 2.0 * static_cast<double>(c.n_layers) * logit_scale;
}

class ParallelFamily : public ::testing::TestWithParam<const char*> {};

TEST_P(ParallelFamily, LogitsSelectionsAndTapsMatchOneRank) {
  auto m = MlaMoeModel::load(hf_dir(GetParam()), Device::CPU, {});
  const MlaMoeConfig& c = m->config();
  const std::vector<int32_t> tokens = prompt(24, c.vocab);
  const Outputs one = run(*m, tokens);
  const double scale = std::max(1.0, max_abs(one.logits));
  for (const dsa::ParallelSpec p : {dsa::ParallelSpec{2, 1}, dsa::ParallelSpec{2, 2}, dsa::ParallelSpec{4, 1},
                                    dsa::ParallelSpec{4, 4}, dsa::ParallelSpec{2, 2, true},
                                    dsa::ParallelSpec{4, 4, true}}) {
    SCOPED_TRACE(fmt::format("{} --tp {} --ep {}{}", GetParam(), p.tp, p.ep, p.a2a ? " --ep-a2a" : ""));
    m->set_parallel(p);
    const Outputs par = run(*m, tokens);
    ASSERT_EQ(par.logits.size(), one.logits.size());
    double worst = 0.0;
    for (size_t i = 0; i < one.logits.size(); ++i)
      worst = std::max(worst, std::abs(static_cast<double>(par.logits[i]) - one.logits[i]));
    EXPECT_LE(worst, tolerance(c, p.tp, scale));
    EXPECT_GT(worst, 0.0) << "N ranks round partial sums: bit-identical logits mean nothing was split";
    std::printf("%s --tp %d --ep %d%s: largest logit difference %.3g (tolerance %.3g, logits up to %.3g)\n",
                GetParam(), p.tp, p.ep, p.a2a ? " --ep-a2a" : "", worst, tolerance(c, p.tp, scale), scale);
    // The F layers' selections (and every layer's experts) are the same; layer 0's query and
    // attention output, whose inputs are the same bits, are the same bits once gathered.
    for (const auto& [key, t] : one.taps) {
      ASSERT_TRUE(par.taps.count(key)) << key.first << " " << key.second;
      const Tensor& u = par.taps.at(key);
      ASSERT_EQ(u.shape(), t.shape()) << key.first;
      if (key.first == "topk" || key.first == "moe_route") {
        EXPECT_TRUE(std::equal(t.data<int32_t>(), t.data<int32_t>() + t.numel(), u.data<int32_t>()))
            << key.first << " layer " << key.second;
      } else if (key.second == 0) {
        EXPECT_TRUE(std::equal(t.data<float>(), t.data<float>() + t.numel(), u.data<float>())) << key.first;
      }
    }
  }
  m->set_parallel({});
  EXPECT_EQ(run(*m, tokens).logits, one.logits) << "back on one rank: the single-rank path, bit for bit";
}

INSTANTIATE_TEST_SUITE_P(ParallelTiny, ParallelFamily,
                         ::testing::Values("deepseek_v32-tiny", "glm_moe_dsa-tiny", "glm4_moe_lite-tiny"));

TEST(ParallelFamilyRun, PatternDecodeAndCommunicationCounted) {
  FamilyOptions fo;
  fo.pattern = LayerPattern::parse("FSFS", 4);
  auto m = MlaMoeModel::load(hf_dir("glm_moe_dsa-tiny"), Device::CPU, fo);
  const MlaMoeConfig& c = m->config();
  const std::vector<int32_t> tokens = prompt(20, c.vocab);
  const Outputs one = run(*m, tokens);
  m->set_parallel({2, 2});
  const Outputs par = run(*m, tokens);
  for (int l : {0, 1, 2, 3}) {  // S layers attend over their F layer's selection, on every rank
    const Tensor& a = one.taps.at({"topk", l});
    const Tensor& b = par.taps.at({"topk", l});
    EXPECT_TRUE(std::equal(a.data<int32_t>(), a.data<int32_t>() + a.numel(), b.data<int32_t>())) << l;
  }
  EXPECT_GT(m->stats().indexer_layer_runs, 0);

  // Communication: two all-reduces of the n x hidden stream per layer, nothing else without taps.
  const int64_t n = 16;
  auto cache = m->make_cache(n + 4);
  EXPECT_EQ(cache->bytes(), 2 * dynamic_cast<dsa::ParallelCache&>(*cache).rank_bytes()) << "replicated on each rank";
  m->reset_comm_stats();
  Tensor logits;
  m->forward(std::span(tokens).first(n), *cache, logits, true);
  for (int r = 0; r < 2; ++r) {
    const parallel::CommStats s = m->comm_stats(r);
    EXPECT_EQ(s.all_reduce_calls, 2 * c.n_layers) << r;
    EXPECT_EQ(s.all_reduce_bytes, 2 * c.n_layers * n * c.hidden * 4) << r;
    EXPECT_EQ(s.all_gather_calls + s.broadcast_calls + s.all_to_all_calls, 0) << r;
  }
  // Prefill then decode on 2 ranks equals one prefill on 2 ranks, bit for bit (replicated caches).
  Tensor step;
  for (int64_t i = n; i < 20; ++i) m->forward(std::span(tokens).subspan(static_cast<size_t>(i), 1), *cache, step, false);
  const int64_t V = c.vocab;
  EXPECT_TRUE(std::equal(step.data<float>(), step.data<float>() + V, par.logits.data() + 19 * V));
}

// The all-to-all MoE block on 1 to 4 ranks is moe_forward bit for bit (each expert sees the same
// row, each token adds its choices in the same order), for a token count the ranks do not divide.
TEST(ParallelFamilyRun, AllToAllMoeIsTheOneRankMoeBitForBit) {
  auto m = MlaMoeModel::load(hf_dir("deepseek_v32-tiny"), Device::CPU, {});
  const MlaMoeConfig& c = m->config();
  std::vector<dsa::LayerWeights> layers;
  for (int64_t l = 0; l < c.n_layers; ++l) layers.push_back(m->layer(l));
  const int64_t l = 1;  // the first MoE layer
  ASSERT_TRUE(layers[l].moe);
  for (int64_t n : {1, 7, 13}) {
    const std::vector<float> v = random_floats(static_cast<size_t>(n * c.hidden), static_cast<uint32_t>(n));
    Tensor h = Tensor::empty({n, c.hidden}, DType::F32);
    std::copy(v.begin(), v.end(), h.data<float>());
    const dsa::Routing r = dsa::route(c, layers[l].experts, h);
    const Tensor ref = dsa::moe_forward(layers[l].experts, r, h);
    for (int N : {2, 4}) {
      const dsa::ParallelSpec p{N, N, true};
      std::vector<dsa::RankShard> shards;
      for (int q = 0; q < N; ++q) shards.push_back(dsa::shard_model(c, layers, p, q));
      std::vector<Tensor> out(static_cast<size_t>(N));
      LocalGroup g(N);
      run_ranks(g, [&](Communicator& comm) {
        out[comm.rank()] = dsa::moe_forward_a2a(comm, shards[comm.rank()].layers[l], r, h);
      });
      for (int q = 0; q < N; ++q)
        EXPECT_TRUE(std::equal(ref.data<float>(), ref.data<float>() + ref.numel(), out[q].data<float>()))
            << "n " << n << " N " << N << " rank " << q;
      // Per rank: one counts exchange, dispatch and combine, one all-gather; no all-reduce.
      const parallel::CommStats s = g.rank(0).stats();
      EXPECT_EQ(s.all_to_all_calls, 3);
      EXPECT_EQ(s.all_gather_calls, 1);
      EXPECT_EQ(s.all_reduce_calls, 0);
    }
  }
}

TEST(ParallelFamilyRun, Errors) {
  auto m = MlaMoeModel::load(hf_dir("deepseek_v32-tiny"), Device::CPU, {});
  auto expect_error = [&](const dsa::ParallelSpec& p, const std::string& what) {
    try {
      m->set_parallel(p);
      FAIL() << "no error for --tp " << p.tp << " --ep " << p.ep;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error({3, 1}, "4 attention heads (num_attention_heads) do not split over --tp 3");
  expect_error({4, 2}, "--ep 2 with --tp 4: expert parallelism runs inside the tensor-parallel group");
  expect_error({2, 1, true}, "the all-to-all MoE path (--ep-a2a) splits experts over the ranks");
  // A cache made before the switch is refused.
  auto cache = m->make_cache(8);
  m->set_parallel({2, 2});
  Tensor x = m->embed(prompt(4, m->config().vocab));
  IndexReuse reuse = m->make_reuse();
  EXPECT_THROW(m->forward_layers(0, 1, x, *cache, 0, reuse), Error);

  // Experts that do not divide: the same folder's config with 6 routed experts, random weights.
  MlaMoeConfig c = m->config();
  c.n_routed_experts = 6;
  c.n_group = 1;
  c.topk_group = 1;
  FamilyOptions fo;
  fo.parallel = {4, 4};
  try {
    MlaMoeModel::random(c, 1, Device::CPU, "random:test", fo);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("6 routed experts (n_routed_experts) do not split over --ep 4"),
              std::string::npos)
        << e.what();
  }
  fo.parallel = {2, 2};
  auto r = MlaMoeModel::random(c, 1, Device::CPU, "random:test", fo);  // 6 experts over 2 ranks: fine
  EXPECT_EQ(r->parallel().ep, 2);
}

}  // namespace
}  // namespace ic
