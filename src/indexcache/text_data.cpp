#include "indexcache/text_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/ranges.h>

#include "core/error.h"

namespace ic {

namespace fs = std::filesystem;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IC_CHECK(in.good(), "text data: cannot open '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  IC_CHECK(!in.bad(), "text data: read error in '{}'", path);
  return ss.str();
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Uniform in [0, bound) by rejection (no modulo bias).
uint64_t bounded(uint64_t& state, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t r;
  do r = splitmix64(state);
  while (r >= limit);
  return r % bound;
}

struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  }
};

}  // namespace

std::vector<std::string> list_text_files(const std::vector<std::string>& paths) {
  IC_CHECK(!paths.empty(), "text data: no files or folders given");
  std::vector<std::string> out;
  for (const std::string& p : paths) {
    std::error_code ec;
    const fs::file_status st = fs::status(p, ec);
    IC_CHECK(!ec && fs::exists(st), "text data: '{}' does not exist", p);
    if (fs::is_directory(st)) {
      for (auto it = fs::recursive_directory_iterator(p, fs::directory_options::follow_directory_symlink, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
        if (it->path().extension() == ".txt" && fs::is_regular_file(it->path())) out.push_back(it->path().string());
      IC_CHECK(!ec, "text data: cannot list '{}': {}", p, ec.message());
    } else {
      out.push_back(p);  // a file named explicitly is taken whatever its extension
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  IC_CHECK(!out.empty(), "text data: no .txt file under {}", fmt::format("'{}'", fmt::join(paths, "', '")));
  return out;
}

TextWindows TextWindows::load(const std::vector<std::string>& paths, const TokenizeFn& tokenize,
                              const TextDataOptions& opt) {
  const std::vector<std::string> files = list_text_files(paths);
  std::vector<std::vector<int32_t>> docs;
  std::vector<TextFileInfo> infos;
  int64_t total = 0;
  for (const std::string& f : files) {
    if (opt.max_tokens > 0 && total >= opt.max_tokens) break;
    const std::string text = read_text(f);
    docs.push_back(tokenize(text));
    infos.push_back({f, static_cast<int64_t>(text.size()), static_cast<int64_t>(docs.back().size())});
    total += static_cast<int64_t>(docs.back().size());
  }
  TextWindows w;
  try {
    w = from_documents(docs, opt);
  } catch (const Error& e) {
    fail("{} ({} files under '{}')", e.what(), files.size(), fmt::join(paths, "', '"));
  }
  w.files_ = std::move(infos);
  return w;
}

TextWindows TextWindows::from_documents(const std::vector<std::vector<int32_t>>& docs, const TextDataOptions& opt) {
  IC_CHECK(opt.ctx >= 2, "text data: window length ctx must be >= 2, got {}", opt.ctx);
  IC_CHECK(opt.max_tokens >= 0 && opt.max_windows >= 0, "text data: max_tokens {} and max_windows {} must be >= 0",
           opt.max_tokens, opt.max_windows);
  TextWindows w;
  w.ctx_ = opt.ctx;
  for (size_t d = 0; d < docs.size(); ++d) {
    if (d > 0 && opt.separator >= 0) w.tokens_.push_back(opt.separator);
    w.tokens_.insert(w.tokens_.end(), docs[d].begin(), docs[d].end());
  }
  if (opt.max_tokens > 0 && w.n_tokens() > opt.max_tokens) w.tokens_.resize(static_cast<size_t>(opt.max_tokens));
  w.n_windows_ = w.n_tokens() / opt.ctx;
  if (opt.max_windows > 0) w.n_windows_ = std::min(w.n_windows_, opt.max_windows);
  IC_CHECK(w.n_windows_ > 0, "text data: too little text: {} tokens in {} documents, a window needs {}", w.n_tokens(),
           docs.size(), opt.ctx);
  for (size_t d = 0; d < docs.size(); ++d)
    w.files_.push_back({fmt::format("<document {}>", d), 0, static_cast<int64_t>(docs[d].size())});
  return w;
}

std::span<const int32_t> TextWindows::window(int64_t i) const {
  IC_CHECK(i >= 0 && i < n_windows_, "text data: window {} out of range [0, {})", i, n_windows_);
  return std::span<const int32_t>(tokens_).subspan(static_cast<size_t>(i * ctx_), static_cast<size_t>(ctx_));
}

std::string TextWindows::fingerprint() const {
  Fnv1a h;
  for (const TextFileInfo& f : files_) h.add(&f.tokens, sizeof f.tokens);
  h.add(&ctx_, sizeof ctx_);
  h.add(&n_windows_, sizeof n_windows_);
  h.add(tokens_.data(), tokens_.size() * sizeof(int32_t));
  return fmt::format("{:016x}", h.h);
}

std::vector<int64_t> window_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  IC_CHECK(n >= 0 && epoch >= 0, "window_permutation: n {} and epoch {} must be >= 0", n, epoch);
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  uint64_t state = seed;
  splitmix64(state);
  state ^= static_cast<uint64_t>(epoch) * 0xD1B54A32D192ED03ull;
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[bounded(state, static_cast<uint64_t>(i + 1))]);
  return p;
}

std::span<const int32_t> WindowStream::next() {
  if (perm_epoch_ != pos_.epoch) {
    perm_ = window_permutation(data_->n_windows(), seed_, pos_.epoch);
    perm_epoch_ = pos_.epoch;
  }
  const std::span<const int32_t> w = data_->window(perm_[pos_.index]);
  if (++pos_.index == data_->n_windows()) pos_ = {pos_.epoch + 1, 0};
  return w;
}

void WindowStream::seek(LoaderPosition pos) {
  IC_CHECK(pos.epoch >= 0 && pos.index >= 0 && pos.index < data_->n_windows(),
           "text data: position (epoch {}, index {}) is outside data of {} windows", pos.epoch, pos.index,
           data_->n_windows());
  pos_ = pos;
}

}  // namespace ic
