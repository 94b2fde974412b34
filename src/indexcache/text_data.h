#pragma once
// Training text for indexer distillation: every .txt under the given files and folders, read in
// sorted path order, tokenized, concatenated in that order (a separator token, if any, between
// documents) and cut into non-overlapping windows of ctx tokens; a tail shorter than ctx is
// dropped. Windows are served in a seeded permutation that changes with each epoch; the
// position (epoch, index) fully determines what comes next, so a checkpoint that stores it
// resumes on exactly the same windows.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ic {

// Text -> token ids (a Tokenizer's encode, or anything else in tests).
using TokenizeFn = std::function<std::vector<int32_t>(std::string_view text)>;

// The .txt files under `paths` (files taken as given, folders searched recursively), sorted by
// path and without duplicates. Throws ic::Error naming a path that does not exist, and when no
// file is found at all.
std::vector<std::string> list_text_files(const std::vector<std::string>& paths);

struct TextFileInfo {
  std::string path;
  int64_t bytes = 0;
  int64_t tokens = 0;
};

struct LoaderPosition {
  int64_t epoch = 0;  // 0-based
  int64_t index = 0;  // next slot of this epoch's permutation, in [0, n_windows)
  bool operator==(const LoaderPosition&) const = default;
};

struct TextDataOptions {
  int64_t ctx = 512;         // tokens per window
  int32_t separator = -1;    // token put between documents (EOS); -1 = none
  int64_t max_tokens = 0;    // stop reading files once this many tokens are in (0 = all)
  int64_t max_windows = 0;   // keep only the first windows in corpus order (0 = all; held-out sets)
};

class TextWindows {
 public:
  // Reads and tokenizes every file of list_text_files(paths). Throws ic::Error when there is no
  // file or when the text gives fewer than ctx tokens (no window at all).
  static TextWindows load(const std::vector<std::string>& paths, const TokenizeFn& tokenize,
                          const TextDataOptions& opt);
  // From tokens already in memory (one vector per document).
  static TextWindows from_documents(const std::vector<std::vector<int32_t>>& docs, const TextDataOptions& opt);

  int64_t ctx() const { return ctx_; }
  int64_t n_windows() const { return n_windows_; }
  int64_t n_tokens() const { return static_cast<int64_t>(tokens_.size()); }  // incl. separators and tail
  const std::vector<TextFileInfo>& files() const { return files_; }
  // Window i in corpus order: tokens [i * ctx, (i + 1) * ctx).
  std::span<const int32_t> window(int64_t i) const;
  // FNV-1a 64 over the per-document token counts, ctx, the window count and the whole token
  // stream, as 16 hex digits: two runs that would see different windows get different
  // fingerprints. Paths are left out, so the same corpus reached from another folder matches.
  std::string fingerprint() const;


 private:
  int64_t ctx_ = 0;
  int64_t n_windows_ = 0;
  std::vector<int32_t> tokens_;
  std::vector<TextFileInfo> files_;
};

// The order of n windows in `epoch` for `seed`: a Fisher-Yates shuffle driven by splitmix64 of
// (seed, epoch) with an unbiased bounded draw, so it is the same on every platform and library
// (std::shuffle and std::uniform_int_distribution are not).
std::vector<int64_t> window_permutation(int64_t n, uint64_t seed, int64_t epoch);

// Serves windows in shuffled order, epoch after epoch.
class WindowStream {
 public:
  WindowStream(const TextWindows& data, uint64_t seed) : data_(&data), seed_(seed) {}
  // The window at the current position; then advances (to the next epoch after the last slot).
  std::span<const int32_t> next();
  LoaderPosition position() const { return pos_; }
  // Throws ic::Error when the position is outside this data (index >= n_windows, negative).
  void seek(LoaderPosition pos);

 private:
  const TextWindows* data_;
  uint64_t seed_;
  LoaderPosition pos_;
  int64_t perm_epoch_ = -1;    // epoch whose permutation perm_ holds
  std::vector<int64_t> perm_;  // [n_windows]
};

}  // namespace ic
