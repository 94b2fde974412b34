// The IndexCache config knobs under each engine's rule, on patterns worked out by hand from the
// rules' definitions, plus round trips and the errors.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "core/error.h"
#include "io/hf_folder.h"
#include "model/pattern_conventions.h"
#include "test_util.h"

namespace ic {
namespace {

constexpr PatternRule kRules[] = {PatternRule::THUDM, PatternRule::SGLang, PatternRule::HF};

hf::Config cfg(const std::string& body) { return hf::Config::parse("{" + body + "}", "/m/config.json"); }

// The pattern string, "" for nullopt.
std::string read(const std::string& body, int64_t n, PatternRule r) {
  const std::optional<LayerPattern> p = pattern_from_config(cfg(body), n, r);
  return p ? p->str() : "";
}

// A slow restatement of each engine's per-layer test, as its source writes it (skip = S).
bool skips(PatternRule r, int64_t l, int64_t freq, std::optional<int64_t> offset) {
  auto pymod = [](int64_t a, int64_t m) { return ((a % m) + m) % m; };
  switch (r) {
    case PatternRule::THUDM: return std::max<int64_t>(l - 1, 0) % freq != 0;
    case PatternRule::SGLang:
      if (freq <= 1) return false;
      if (offset) return std::max<int64_t>(l - *offset + 1, 0) % freq != 0;
      return std::max<int64_t>(l - 1, 0) % freq != 0;
    case PatternRule::HF: return pymod(std::max<int64_t>(l - offset.value_or(2) + 1, 0), freq) != 0;
  }
  return false;
}

TEST(PatternConventions, Glm52UnderEachRule) {
  // GLM-5.2's config.json: freq 4, offset 3, 78 layers.
  const std::string body = R"("index_topk_freq": 4, "index_skip_topk_offset": 3)";
  std::vector<int64_t> want = {0, 1, 2};
  for (int64_t l = 6; l <= 74; l += 4) want.push_back(l);
  ASSERT_EQ(want.size(), 21u);
  for (PatternRule r : {PatternRule::SGLang, PatternRule::HF}) {
    const LayerPattern p = *pattern_from_config(cfg(body), 78, r);
    EXPECT_EQ(p.full_layers(), want) << pattern_rule_name(r);
    EXPECT_EQ(p.n_full(), 21);
  }
  // THUDM reads no offset: F at 0, 1, 5, 9, ..., 77 instead.
  const LayerPattern t = *pattern_from_config(cfg(body), 78, PatternRule::THUDM);
  std::vector<int64_t> thudm = {0};
  for (int64_t l = 1; l < 78; l += 4) thudm.push_back(l);
  EXPECT_EQ(t.full_layers(), thudm);
  // And the existing LayerPattern::from_freq is the SGLang/HF formula.
  EXPECT_EQ(LayerPattern::from_freq(78, 4, 3).full_layers(), want);
}

TEST(PatternConventions, HandWorkedSchedules) {
  // freq 4, no offset: THUDM and SGLang anchor at max(l-1, 0), HF's default offset 2 agrees.
  for (PatternRule r : kRules) EXPECT_EQ(read(R"("index_topk_freq": 4)", 10, r), "FFSSSFSSSF");
  // offset 1: FSSS repeated under SGLang and HF; THUDM ignores the offset.
  const std::string o1 = R"("index_topk_freq": 4, "index_skip_topk_offset": 1)";
  EXPECT_EQ(read(o1, 9, PatternRule::SGLang), "FSSSFSSSF");
  EXPECT_EQ(read(o1, 9, PatternRule::HF), "FSSSFSSSF");
  EXPECT_EQ(read(o1, 9, PatternRule::THUDM), "FFSSSFSSS");
  // freq 2, offset 5: five leading F, then every other layer.
  EXPECT_EQ(read(R"("index_topk_freq": 2, "index_skip_topk_offset": 5)", 10, PatternRule::HF),
            "FFFFFSFSFS");
  // freq 1 means every layer, whatever the offset.
  for (PatternRule r : kRules) EXPECT_EQ(read(R"("index_topk_freq": 1)", 5, r), "FFFFF");
  EXPECT_EQ(read(R"("index_topk_freq": 1, "index_skip_topk_offset": 0)", 3, PatternRule::SGLang), "FFF");
  // HF takes any offset; -3 with freq 4 puts layer 0 on the grid, the same as offset 1.
  EXPECT_EQ(read(R"("index_topk_freq": 4, "index_skip_topk_offset": -3)", 9, PatternRule::HF),
            "FSSSFSSSF");
  // Offset alone: freq defaults to 1 under SGLang and HF; THUDM reads neither, so no pattern.
  EXPECT_EQ(read(R"("index_skip_topk_offset": 3)", 4, PatternRule::HF), "FFFF");
  EXPECT_FALSE(pattern_from_config(cfg(R"("index_skip_topk_offset": 3)"), 4, PatternRule::THUDM));
}

TEST(PatternConventions, EveryRuleMatchesItsSourceFormula) {
  for (PatternRule r : kRules)
    for (int64_t n = 1; n <= 40; n += 3)
      for (int64_t freq = 1; freq <= 9; ++freq)
        for (int64_t off = (r == PatternRule::HF ? -6 : 1); off <= 12; ++off) {
          std::string want;
          for (int64_t l = 0; l < n; ++l) want += skips(r, l, freq, off) ? 'S' : 'F';
          if (want[0] == 'S') {
            EXPECT_IC_ERROR(pattern_from_freq(n, freq, off, r), "layer 0 shared");
            continue;
          }
          EXPECT_EQ(pattern_from_freq(n, freq, off, r).str(), want)
              << pattern_rule_name(r) << " n " << n << " freq " << freq << " offset " << off;
          if (r != PatternRule::THUDM && off >= 1) {
            EXPECT_EQ(LayerPattern::from_freq(n, freq, off).str(), want);
          }
        }
}

TEST(PatternConventions, Precedence) {
  const std::string all = R"("indexer_types": ["full", "full", "shared", "full"],
      "index_topk_pattern": "FSFS", "index_topk_freq": 4, "index_skip_topk_offset": 1)";
  EXPECT_EQ(read(all, 4, PatternRule::SGLang), "FFSF");  // indexer_types first
  EXPECT_EQ(read(all, 4, PatternRule::HF), "FFSF");
  EXPECT_EQ(read(all, 4, PatternRule::THUDM), "FSFS");  // no indexer_types in THUDM's patch
  const std::string pf = R"("index_topk_pattern": "FSFS", "index_topk_freq": 4)";
  for (PatternRule r : kRules) EXPECT_EQ(read(pf, 4, r), "FSFS");
  // What each rule left unread.
  EXPECT_EQ(ignored_knobs(cfg(all), PatternRule::HF),
            (std::vector<std::string>{"index_topk_pattern", "index_topk_freq", "index_skip_topk_offset"}));
  EXPECT_EQ(ignored_knobs(cfg(all), PatternRule::THUDM),
            (std::vector<std::string>{"indexer_types", "index_topk_freq", "index_skip_topk_offset"}));
  const std::string fo = R"("index_topk_freq": 4, "index_skip_topk_offset": 3)";
  EXPECT_EQ(ignored_knobs(cfg(fo), PatternRule::THUDM), (std::vector<std::string>{"index_skip_topk_offset"}));
  EXPECT_TRUE(ignored_knobs(cfg(fo), PatternRule::SGLang).empty());
}

TEST(PatternConventions, ListsAndWords) {
  // GLM-5.2's own list, and SGLang's wider vocabulary.
  EXPECT_EQ(read(R"("indexer_types": ["full", "shared", "full"])", 3, PatternRule::HF), "FSF");
  EXPECT_EQ(read(R"("indexer_types": ["Full", " s ", "compute", "skip", "F"])", 5, PatternRule::SGLang),
            "FSFSF");
  EXPECT_IC_ERROR(read(R"("indexer_types": ["Full", "shared"])", 2, PatternRule::HF),
                  "'indexer_types'[0] is \"Full\"");
  EXPECT_IC_ERROR(read(R"("indexer_types": ["full", "sparse"])", 2, PatternRule::SGLang),
                  "'indexer_types'[1] is \"sparse\"");
  EXPECT_IC_ERROR(read(R"("indexer_types": ["full", 1])", 2, PatternRule::HF), "[1] is a JSON number");
  // A pattern list: HF reads it as indexer_types, SGLang as words, THUDM as letters.
  EXPECT_EQ(read(R"("index_topk_pattern": ["full", "shared"])", 2, PatternRule::HF), "FS");
  EXPECT_EQ(read(R"("index_topk_pattern": ["F", "shared"])", 2, PatternRule::SGLang), "FS");
  EXPECT_EQ(read(R"("index_topk_pattern": ["F", "S"])", 2, PatternRule::THUDM), "FS");
  // Lower-case letters: SGLang lower-cases them; HF's map and THUDM's 'S' test would not.
  EXPECT_EQ(read(R"("index_topk_pattern": "fsf")", 3, PatternRule::SGLang), "FSF");
  EXPECT_IC_ERROR(read(R"("index_topk_pattern": "fsf")", 3, PatternRule::HF), "has 'f' at layer 0");
  EXPECT_IC_ERROR(read(R"("index_topk_pattern": "FSA")", 3, PatternRule::THUDM), "has 'A' at layer 2");
  EXPECT_IC_ERROR(read(R"("index_topk_pattern": 7)", 3, PatternRule::HF), "a string of F/S letters");
  // null is absent (GLM-5.2 writes "index_topk_pattern": null next to its freq).
  EXPECT_EQ(read(R"("index_topk_pattern": null, "index_topk_freq": 2)", 4, PatternRule::HF), "FFSF");
}

TEST(PatternConventions, NoKnobsIsNullopt) {
  for (PatternRule r : kRules) {
    EXPECT_FALSE(pattern_from_config(cfg(R"("num_hidden_layers": 4)"), 4, r));
    EXPECT_FALSE(pattern_from_config(cfg(R"("indexer_types": null, "index_topk_freq": null)"), 4, r));
  }
  // THUDM never reads indexer_types.
  EXPECT_FALSE(pattern_from_config(cfg(R"("indexer_types": ["full", "shared"])"), 2, PatternRule::THUDM));
}

TEST(PatternConventions, Errors) {
  for (PatternRule r : kRules) {
    // The first layer must be F.
    EXPECT_IC_ERROR(read(R"("index_topk_pattern": "SFFF")", 4, r), "first layer must be full");
    EXPECT_IC_ERROR(read(R"("index_topk_pattern": "SFFF")", 4, r), "'index_topk_pattern'");
    // Lengths must match the model.
    EXPECT_IC_ERROR(read(R"("index_topk_pattern": "FSF")", 4, r), "has 3 entries but the model has 4 layers");
    EXPECT_IC_ERROR(read(R"("index_topk_pattern": "FSFSF")", 4, r), "has 5 entries");
    EXPECT_IC_ERROR(read(R"("index_topk_freq": 0)", 4, r), "index_topk_freq is 0");
    EXPECT_IC_ERROR(read(R"("index_topk_freq": "4")", 4, r), "'index_topk_freq' is a string, an integer expected");
    EXPECT_IC_ERROR(read(R"("index_topk_freq": 2)", 0, r), "1 to 65536 layers, got 0");
    EXPECT_IC_ERROR(read(R"("index_topk_freq": 2)", int64_t{1} << 40, r), "got 1099511627776");
  }
  for (PatternRule r : {PatternRule::SGLang, PatternRule::HF})
    EXPECT_IC_ERROR(read(R"("indexer_types": ["shared", "full"])", 2, r), "makes layer 0 shared");
  EXPECT_IC_ERROR(read(R"("index_topk_freq": 4, "index_skip_topk_offset": 0)", 4, PatternRule::SGLang),
                  "SGLang needs a positive offset");
  // HF takes offset 0, which makes layer 0 shared for freq > 1.
  EXPECT_IC_ERROR(read(R"("index_topk_freq": 4, "index_skip_topk_offset": 0)", 4, PatternRule::HF),
                  "/m/config.json: index_topk_freq 4 with index_skip_topk_offset 0 makes layer 0 shared");
  // Extreme offsets neither overflow nor pass silently.
  EXPECT_EQ(read(R"("index_topk_freq": 3, "index_skip_topk_offset": 9223372036854775807)", 4,
                 PatternRule::HF), "FFFF");
  // Python: max(l + 2^63 + 1, 0) % 3 is 0 at l = 0 and 3 (2^63 = 2 mod 3).
  EXPECT_EQ(read(R"("index_topk_freq": 3, "index_skip_topk_offset": -9223372036854775808)", 4,
                 PatternRule::HF), "FSSF");
  EXPECT_IC_ERROR(parse_pattern_rule("vllm"), "known: thudm, sglang, hf");
  for (PatternRule r : kRules) EXPECT_EQ(parse_pattern_rule(pattern_rule_name(r)), r);
}

TEST(PatternConventions, FreqOffsetRoundTrips) {
  // Every schedule a rule can write comes back as a (freq, offset) that gives the same pattern.
  for (PatternRule r : kRules)
    for (int64_t n = 1; n <= 30; ++n)
      for (int64_t freq = 1; freq <= 8; ++freq)
        for (int64_t off = 1; off <= 8; ++off) {
          const LayerPattern p = pattern_from_freq(n, freq, off, r);
          const auto fo = as_freq_offset(p, r);
          ASSERT_TRUE(fo.has_value()) << pattern_rule_name(r) << " " << p.str();
          EXPECT_EQ(pattern_from_freq(n, fo->first, fo->second, r), p) << p.str();
          // And through a config.json that says exactly that.
          const std::string body = fmt::format(R"("index_topk_freq": {}, "index_skip_topk_offset": {})",
                                               fo->first, fo->second);
          EXPECT_EQ(read(body, n, r), p.str());
        }
  EXPECT_EQ(as_freq_offset(LayerPattern::parse("FSSSFSSSF", 9), PatternRule::HF), std::make_pair(int64_t{4}, int64_t{1}));
  EXPECT_EQ(as_freq_offset(LayerPattern::from_freq(78, 4, 3), PatternRule::SGLang),
            std::make_pair(int64_t{4}, int64_t{3}));
  EXPECT_EQ(as_freq_offset(LayerPattern::all_full(5), PatternRule::THUDM), std::make_pair(int64_t{1}, int64_t{2}));
  // THUDM's layer 1 is always F; no schedule of it gives FSSS...
  EXPECT_FALSE(as_freq_offset(LayerPattern::parse("FSSSFSSS", 8), PatternRule::THUDM));
  // Not periodic: no rule has it.
  for (PatternRule r : kRules) {
    EXPECT_FALSE(as_freq_offset(LayerPattern::parse("FFSFSSFSSS", 10), r));
    EXPECT_FALSE(as_freq_offset(LayerPattern::parse("FSFSSFSS", 8), r));
  }
  // A tail without a later F takes the smallest freq that pushes it past the end.
  EXPECT_EQ(as_freq_offset(LayerPattern::parse("FFFSS", 5), PatternRule::HF), std::make_pair(int64_t{3}, int64_t{3}));
}

TEST(PatternConventions, RandomPatternsRoundTripWhenPeriodic) {
  // Random patterns: as_freq_offset answers exactly when some schedule gives the pattern
  // (checked against a brute-force search over every freq and offset).
  std::mt19937 rng(20260312);
  for (int trial = 0; trial < 400; ++trial) {
    const int64_t n = 1 + static_cast<int64_t>(rng() % 14);
    std::vector<bool> f(n);
    for (int64_t l = 0; l < n; ++l) f[l] = l == 0 || rng() % 3 == 0;
    const LayerPattern p = LayerPattern::from_flags(f);
    for (PatternRule r : kRules) {
      bool any = false;
      for (int64_t freq = 1; freq <= n + 1 && !any; ++freq)
        for (int64_t off = 1; off <= n + 1 && !any; ++off) any = pattern_from_freq(n, freq, off, r) == p;
      const auto fo = as_freq_offset(p, r);
      EXPECT_EQ(fo.has_value(), any) << pattern_rule_name(r) << " " << p.str();
      if (fo) {
        EXPECT_EQ(pattern_from_freq(n, fo->first, fo->second, r), p);
      }
    }
  }
}

// The case folding the SGLang / TensorRT-LLM readings and the name parsers share: A-Z only, every
// other byte (digits, punctuation, UTF-8) kept as it is.
TEST(PatternConventions, AsciiLowerFoldsOnlyAToZ) {
  EXPECT_EQ(ascii_lower("SGLang-TRTLLM_09@[`{"), "sglang-trtllm_09@[`{");
  EXPECT_EQ(ascii_lower("\xC3\x84" "F"), "\xC3\x84" "f");  // "ÄF": the UTF-8 bytes of Ä are untouched
  EXPECT_EQ(ascii_lower(""), "");
  EXPECT_EQ(pattern_keys::kTypes, std::string("indexer_types"));
  EXPECT_EQ(pattern_keys::kPattern, std::string("index_topk_pattern"));
  EXPECT_EQ(pattern_keys::kFreq, std::string("index_topk_freq"));
  EXPECT_EQ(pattern_keys::kOffset, std::string("index_skip_topk_offset"));
}

}  // namespace
}  // namespace ic
