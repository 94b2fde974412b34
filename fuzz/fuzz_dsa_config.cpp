// libFuzzer target for the DSA family's config.json reading: any byte string must give an
// MlaMoeConfig or throw ic::Error, never crash, hang or allocate without bound. An accepted config
// is also used the way the loader uses it before any weight is read: the rotary table, the
// softmax scale, a cache of a few tokens, and the IndexCache pattern under each engine's rule.
//
// Seeds: fuzz/corpus/dsa_config/ holds config.json files of the three architectures (the
// models/presets shapes and the tiny test checkpoints' configs).
#include <cstdint>
#include <string>

#include "core/error.h"
#include "io/hf_folder.h"
#include "model/dsa_family/cache.h"
#include "model/dsa_family/config.h"
#include "model/dsa_family/rope.h"
#include "model/pattern_conventions.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const ic::hf::Config c = ic::hf::Config::parse(text, "fuzz/config.json");
    const ic::MlaMoeConfig m = ic::MlaMoeConfig::from_hf(c);
    const ic::dsa::RopeTable rope(m.rope, m.qk_rope_dim);
    volatile double sink = m.softmax_scale() + rope.attention_factor();
    (void)sink;
    for (ic::PatternRule r : {ic::PatternRule::THUDM, ic::PatternRule::SGLang, ic::PatternRule::HF}) {
      const std::optional<ic::LayerPattern> p = ic::pattern_from_config(c, m.n_layers, r);
      // A cache of two tokens: per-layer rows of the latent width (bounded by the config checks).
      if (p && m.has_indexer_arch() && m.n_layers * (m.kv_lora_rank + m.qk_rope_dim + m.index_head_dim) < (1 << 22))
        ic::dsa::MlaCache cache(m, 2, &*p, m.index_head_dim);
    }
  } catch (const ic::Error&) {
  }
  return 0;
}
