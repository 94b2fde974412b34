// The decode thread pool: every index exactly once, the caller's share, errors, nested and
// small regions; and the paths that run on it (qgemm_batch, decode attention, the SmolLM2
// decode step) against the single-thread OpenMP-free code of the same kernels, bitwise.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "model_test_util.h"
#include "ops/attention.h"
#include "ops/qgemm.h"
#include "test_util.h"

namespace ic {
namespace {

// Runs one region and checks that the chunks tile [0, n) exactly: each index once, each chunk
// starting on a multiple of grain and grain long except the last.
void expect_exact_cover(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> seen(static_cast<size_t>(n));
  std::atomic<int> bad_chunks{0};
  pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
    if (b % grain != 0 || e <= b || (e - b != grain && e != n)) ++bad_chunks;
    for (int64_t i = b; i < e; ++i) seen[i].fetch_add(1);
  });
  EXPECT_EQ(bad_chunks.load(), 0) << "n " << n << " grain " << grain;
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "index " << i << " of " << n << " grain " << grain;
}

TEST(ThreadPool, SplitCoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 7, 64, 1000, 4097})
      for (int64_t grain : {1, 3, 64, 5000}) expect_exact_cover(pool, n, grain);
  }
}

TEST(ThreadPool, ManyShortRegionsBackToBack) {
  // Decode runs ~150 regions a token, microseconds apart: races between a region closing and
  // the next opening show up here as a lost or doubled index.
  ThreadPool pool(3);
  std::vector<int64_t> sum(8);
  for (int r = 0; r < 20000; ++r) {
    const int64_t n = 2 + r % 7;
    std::fill(sum.begin(), sum.end(), 0);
    pool.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) sum[i] += i + 1;  // one writer per index
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sum[i], i + 1) << "region " << r;
  }
  EXPECT_EQ(pool.regions(), 20000);
}

TEST(ThreadPool, CallerTakesAShare) {
  ThreadPool pool(2);
  const auto caller = std::this_thread::get_id();
  std::atomic<int> by_caller{0}, total{0};
  pool.parallel_for(64, 1, [&](int64_t, int64_t) {
    if (std::this_thread::get_id() == caller) ++by_caller;
    ++total;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  });
  EXPECT_EQ(total.load(), 64);
  // The caller claims chunks from the moment it publishes the region, so it cannot be left out.
  EXPECT_GT(by_caller.load(), 0);
}

TEST(ThreadPool, CallerFinishesAloneWhenWorkersSleep) {
  // Workers that never spin sleep between regions; a region must still complete, by the caller
  // if no worker wakes in time, and without waiting for one to wake.
  ThreadPool pool(2, /*spin_us=*/0);
  for (int r = 0; r < 200; ++r) expect_exact_cover(pool, 5, 1);
}

TEST(ThreadPool, SmallRegionsRunInlineOnTheCaller) {
  ThreadPool pool(4);
  const auto caller = std::this_thread::get_id();
  bool on_caller = false;
  pool.parallel_for(10, 16, [&](int64_t b, int64_t e) {
    on_caller = std::this_thread::get_id() == caller && b == 0 && e == 10;
  });
  EXPECT_TRUE(on_caller);
  EXPECT_EQ(pool.regions(), 0);  // a single chunk opens no region
  ThreadPool single(1);
  expect_exact_cover(single, 100, 7);
  EXPECT_EQ(single.regions(), 0);
}

TEST(ThreadPool, NestedRegionsRunInline) {
  ThreadPool pool(3);
  std::vector<std::atomic<int>> seen(40 * 30);
  pool.parallel_for(40, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(30, 4, [&](int64_t jb, int64_t je) {
        for (int64_t j = jb; j < je; ++j) seen[i * 30 + j].fetch_add(1);
      });
  });
  for (size_t k = 0; k < seen.size(); ++k) ASSERT_EQ(seen[k].load(), 1) << k;
  EXPECT_EQ(pool.regions(), 1);  // only the outer one went to the workers
}

TEST(ThreadPool, ConcurrentCallersShareOnePool) {
  ThreadPool pool(2);
  auto many = [&] {
    for (int r = 0; r < 500; ++r) expect_exact_cover(pool, 33, 2);
  };
  std::thread other(many);
  many();
  other.join();
}

TEST(ThreadPool, ExceptionsPropagateAsIcError) {
  ThreadPool pool(3);
  for (int64_t bad : {0, 17, 99}) {  // thrown on the caller's chunk or on a worker's
    try {
      pool.parallel_for(100, 1, [&](int64_t b, int64_t) {
        if (b == bad) fail("chunk {} failed", b);
      });
      ADD_FAILURE() << "no exception for chunk " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), fmt::format("chunk {} failed", bad));
    }
  }
  // Other exceptions become an ic::Error that keeps their message, inline regions included.
  for (int64_t grain : {1, 1000}) {
    try {
      pool.parallel_for(100, grain, [](int64_t b, int64_t) {
        if (b == 0) throw std::out_of_range("index 0 out of range");
      });
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("index 0 out of range"), std::string::npos) << e.what();
    }
  }
  expect_exact_cover(pool, 1000, 3);  // still usable
}

TEST(ThreadPool, BadArgumentsAreErrors) {
  test::expect_error([] { ThreadPool p(0); }, "at least 1");
  ThreadPool pool(2);
  test::expect_error([&] { pool.parallel_for(-1, 1, [](int64_t, int64_t) {}); }, "bad range");
  test::expect_error([&] { pool.parallel_for(10, 0, [](int64_t, int64_t) {}); }, "bad range");
}

// ------------------------------------------------------------------- the paths on the pool

std::vector<CpuIsa> available_isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    if (cpu_supports(isa)) out.push_back(isa);
  return out;
}

// Q4_0 rows (4-bit codes) or F32 rows (packed to 8-bit codes) of random weights.
ops::PackedWeight random_weight(DType type, int64_t n_out, int64_t n_in, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<uint8_t> raw;
  if (type == DType::F32) {
    std::vector<float> v(static_cast<size_t>(n_out * n_in));
    for (float& x : v) x = normal(rng);
    return ops::PackedWeight::pack(type, v.data(), n_out, n_in);
  }
  for (int64_t o = 0; o < n_out; ++o)
    for (int64_t b = 0; b < n_in / 32; ++b) {
      const uint16_t d = f32_to_f16(std::uniform_real_distribution<float>(0.002f, 0.01f)(rng));
      raw.push_back(static_cast<uint8_t>(d & 0xff));
      raw.push_back(static_cast<uint8_t>(d >> 8));
      for (int k = 0; k < 16; ++k) raw.push_back(static_cast<uint8_t>(byte(rng)));
    }
  return ops::PackedWeight::pack(type, raw.data(), n_out, n_in);
}

TEST(ThreadPoolPaths, QgemmBatchMatchesSingleThreadQgemmBitwise) {
  std::mt19937 rng(17);
  const int restore = omp_get_max_threads();
  omp_set_num_threads(1);
  // Shapes of a decode step (q/k/v, gate/up, down, a head) and odd ones with a partial group.
  struct Shape {
    int64_t n_out, n_in;
  };
  for (const auto& batch : std::vector<std::vector<Shape>>{
           {{576, 576}, {192, 576}, {192, 576}}, {{1536, 576}, {1536, 576}}, {{576, 1536}}, {{4100, 64}},
           {{40, 96}, {8, 96}}}) {
    for (DType type : {DType::Q4_0, DType::F32}) {
      for (int64_t n_tok : {1, 2, 3, 5}) {
        std::vector<ops::PackedWeight> ws;
        for (const Shape& s : batch) ws.push_back(random_weight(type, s.n_out, s.n_in, rng));
        const int64_t n_in = batch[0].n_in;
        std::vector<float> x(static_cast<size_t>(n_tok * n_in));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (float& v : x) v = normal(rng);
        ops::QuantizedActs xq;
        ops::quantize_activations(x.data(), n_tok, n_in, xq, CpuIsa::Scalar);
        // The plain single-thread path: scalar kernel, one thread, no pool.
        std::vector<std::vector<float>> want;
        for (const auto& w : ws) {
          want.emplace_back(static_cast<size_t>(n_tok * w.n_out()));
          ops::qgemm(w, xq, want.back().data(), CpuIsa::Scalar);
          // ... which is itself within the stated bound of the exact reference.
          std::vector<float> ref(want.back().size()), bound(want.back().size());
          ops::qgemm_reference(w, x.data(), n_tok, ref.data());
          ops::qgemm_error_bound(w, x.data(), n_tok, bound.data());
          for (size_t i = 0; i < ref.size(); ++i)
            ASSERT_LE(std::fabs(want.back()[i] - ref[i]), bound[i]) << "output " << i;
        }
        for (int threads : {1, 2, 3, 4}) {
          ThreadPool pool(threads);
          for (CpuIsa isa : available_isas()) {
            std::vector<std::vector<float>> got;
            std::vector<ops::QgemmTask> tasks;
            for (const auto& w : ws) got.emplace_back(static_cast<size_t>(n_tok * w.n_out()), NAN);
            for (size_t i = 0; i < ws.size(); ++i) tasks.push_back({&ws[i], &xq, got[i].data()});
            ops::qgemm_batch(tasks, pool, isa);
            for (size_t i = 0; i < ws.size(); ++i)
              ASSERT_EQ(std::memcmp(got[i].data(), want[i].data(), want[i].size() * sizeof(float)), 0)
                  << "task " << i << " of " << ws.size() << ", " << dtype_name(type) << ", n_tok " << n_tok
                  << ", " << threads << " threads, " << cpu_isa_name(isa);
          }
        }
      }
    }
  }
  omp_set_num_threads(restore);
}

TEST(ThreadPoolPaths, QgemmBatchChecksItsTasks) {
  std::mt19937 rng(3);
  const ops::PackedWeight w = random_weight(DType::Q4_0, 32, 64, rng);
  std::vector<float> x(96, 1.0f), y(64);
  ops::QuantizedActs xq;
  ops::quantize_activations(x.data(), 1, 96, xq);
  ThreadPool pool(2);
  const ops::QgemmTask bad[1] = {{&w, &xq, y.data()}};
  test::expect_error([&] { ops::qgemm_batch(bad, pool); }, "activations have 96 features, weight expects 64");
  const ops::QgemmTask null[1] = {{&w, nullptr, y.data()}};
  test::expect_error([&] { ops::qgemm_batch(null, pool); }, "null");
}

TEST(ThreadPoolPaths, DecodeAttentionOnThePoolMatchesOneThreadBitwise) {
  // One query over 2K keys (above the size that opens a region), GQA 9 / 3 x 64 like SmolLM2.
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t heads = 9, kv_heads = 3, hd = 64, cap = 2100, pos0 = 2047;
  std::vector<float> q(heads * hd), k(kv_heads * cap * hd), v(kv_heads * cap * hd);
  for (auto* vec : {&q, &k, &v})
    for (float& x : *vec) x = normal(rng);
  std::vector<float> want(heads * hd), got(heads * hd);
  const int restore = omp_get_max_threads();
  omp_set_num_threads(1);
  ops::AttentionParams p{q.data(), k.data(), v.data(), want.data(), nullptr, 1, heads, kv_heads, hd, cap, pos0, 0.125f};
  ops::cpu::attention(p);
  omp_set_num_threads(restore);
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    p.out = got.data();
    p.pool = &pool;
    ops::cpu::attention(p);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0) << threads << " threads";
  }
}

// The SmolLM2 decode step on the pool against the OpenMP path at one thread (the code before the
// pool): logits of a fixed prompt's prefill and of every decoded token, bit for bit.
TEST(ThreadPoolPaths, ModelDecodeOnThePoolMatchesOpenMpBitwise) {
  IC_TEST_MODEL_OR_SKIP(path);
  LlamaModel& m = test::cpu_model(path);
  const std::vector<int32_t> ids = m.tokenizer().encode("The pool must not change a single bit of this.");
  const int64_t n = static_cast<int64_t>(ids.size());
  auto run = [&](bool pool, int threads) {
    omp_set_num_threads(threads);
    m.set_decode_pool(pool);
    KVCache kv(m.config(), 2 * n, Device::CPU);
    Tensor out;
    m.forward(ids, kv, out, true);
    std::vector<float> all(out.data<float>(), out.data<float>() + out.numel());
    for (int64_t t = 0; t < n; ++t) {  // one token at a time: the decode path
      m.forward(std::span(ids).subspan(t, 1), kv, out, false);
      all.insert(all.end(), out.data<float>(), out.data<float>() + out.numel());
    }
    return all;
  };
  const int restore = omp_get_max_threads();
  const auto before = run(false, 1);
  const auto pool1 = run(true, 1), pool2 = run(true, 2), pool3 = run(true, 3);
  m.set_decode_pool(true);
  omp_set_num_threads(restore);
  EXPECT_TRUE(before == pool1);
  EXPECT_TRUE(before == pool2);
  EXPECT_TRUE(before == pool3);
}

}  // namespace
}  // namespace ic
