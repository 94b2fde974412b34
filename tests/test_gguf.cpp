#include <gtest/gtest.h>

#include "core/error.h"
#include "io/gguf.h"
#include "test_util.h"

namespace ic::gguf {
namespace {

TEST(GgufModel, ReadsSmolLM2) {
  IC_TEST_MODEL_OR_SKIP(path);
  const File f = File::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 30);
  EXPECT_EQ(f.get_int("llama.embedding_length"), 576);
  EXPECT_EQ(f.get_int("llama.feed_forward_length"), 1536);
  EXPECT_EQ(f.get_int("llama.attention.head_count"), 9);
  EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 3);
  EXPECT_DOUBLE_EQ(f.get_float("llama.rope.freq_base"), 100000.0);
  EXPECT_FLOAT_EQ(static_cast<float>(f.get_float("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  const TensorInfo& emb = f.tensor("token_embd.weight");
  EXPECT_EQ(emb.type, DType::Q8_0);
  EXPECT_EQ(emb.ne, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(emb.shape(), (Shape{49152, 576}));
  const TensorInfo& q = f.tensor("blk.0.attn_q.weight");
  EXPECT_EQ(q.type, DType::Q4_1);
  EXPECT_EQ(q.shape(), (Shape{576, 576}));
  const Tensor t = f.tensor_view(q);
  EXPECT_EQ(t.nbytes(), q.nbytes);
  EXPECT_EQ(t.raw(), static_cast<const void*>(q.data));
  EXPECT_THROW(f.tensor("no.such.tensor"), Error);
  EXPECT_THROW(f.get_int("general.architecture"), Error);
  EXPECT_THROW(f.get_string("missing.key"), Error);
}

}  // namespace
}  // namespace ic::gguf
