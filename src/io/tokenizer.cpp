#include "io/tokenizer.h"

#include <algorithm>
#include <limits>

#include "core/error.h"
#include "io/unicode.h"

namespace ic {
namespace {

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// (controls, space, 0x7F-0xA0, 0xAD) for U+0100.. in byte order, so that every token is
// printable text without spaces.
std::array<uint32_t, 256> byte_to_codepoint() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    map[b] = printable ? b : next++;
  }
  return map;
}

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    // The byte-level alphabet stays below U+0800; nothing longer is needed here.
    IC_ASSERT(cp < 0x800);
  }
}

std::string_view type_name(int32_t t) {
  switch (t) {
    case kTokenNormal: return "normal";
    case kTokenControl: return "control";
    case kTokenUserDefined: return "user-defined";
    default: return "other";
  }
}

struct BpeSymbol {
  int32_t id, prev, next;  // id -1: merged into its left neighbour
};
struct BpeCandidate {
  int32_t rank, left, right, left_id, right_id, result;
  // std::push_heap keeps the largest on top; "larger" here is the worse rank, then the right-most,
  // so the top is the best rank, leftmost on ties (as HF).
  bool operator<(const BpeCandidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
};

}  // namespace

// Encoding the same word again costs one lookup: ids of each distinct piece, stored flat.
// Also holds scratch buffers so that BPE does not allocate per piece.
struct Tokenizer::WordCache {
  std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> spans;  // piece -> ids
  std::vector<int32_t> ids;
  std::vector<std::string_view> pieces;
  std::vector<BpeSymbol> syms;
  std::vector<BpeCandidate> heap;
};

Tokenizer::Tokenizer(TokenizerData data) : data_(std::move(data)), pre_(PreTokenizer::Gpt2) {
  IC_CHECK(data_.model == "gpt2",
           "tokenizer: model '{}' (tokenizer.ggml.model) is not supported; only 'gpt2' (byte-level BPE)",
           data_.model);
  pre_ = pre_tokenizer_from_name(data_.pre);
  const size_t n = data_.tokens.size();
  IC_CHECK(n > 0 && n < static_cast<size_t>(std::numeric_limits<int32_t>::max()),
           "tokenizer: vocabulary has {} tokens", n);
  IC_CHECK(data_.token_types.empty() || data_.token_types.size() == n,
           "tokenizer: {} token types for {} tokens", data_.token_types.size(), n);
  const auto check_id = [&](int32_t id, std::string_view what) {
    IC_CHECK(id >= -1 && id < static_cast<int64_t>(n), "tokenizer: {} id {} is outside the vocabulary of {}",
             what, id, n);
  };
  check_id(data_.bos_id, "BOS");
  check_id(data_.eos_id, "EOS");
  check_id(data_.unk_id, "unknown-token");
  check_id(data_.pad_id, "padding");
  for (const int32_t id : data_.post_prefix) check_id(id, "post-processor");
  for (const int32_t id : data_.post_suffix) check_id(id, "post-processor");

  const std::array<uint32_t, 256> to_cp = byte_to_codepoint();
  std::vector<int16_t> to_byte(512, -1);
  for (int b = 0; b < 256; ++b) to_byte[to_cp[b]] = static_cast<int16_t>(b);

  // The bytes a byte-level token text stands for; false at the first character outside the alphabet.
  const auto byte_level_bytes = [&](const std::string& text, std::string& bytes, size_t& bad_pos) {
    for (size_t pos = 0; pos < text.size();) {
      const unicode::Decoded d = unicode::decode_utf8(text, pos);
      if (d.cp >= to_byte.size() || to_byte[d.cp] < 0) {
        bad_pos = pos;
        return false;
      }
      bytes += static_cast<char>(to_byte[d.cp]);
      pos += d.len;
    }
    return true;
  };
  pieces_.resize(n);
  token_ids_.reserve(n);
  std::vector<bool> in_alphabet(n, false);
  for (size_t id = 0; id < n; ++id) {
    const std::string& text = data_.tokens[id];
    const int32_t type = data_.token_types.empty() ? kTokenNormal : data_.token_types[id];
    token_ids_.emplace(text, static_cast<int32_t>(id));  // a duplicate keeps the first id, as llama.cpp
    const bool added = type == kTokenControl || type == kTokenUserDefined;
    if (added && !text.empty()) specials_.push_back({text, static_cast<int32_t>(id), type == kTokenControl, false});
    if (added && !data_.hf_byte_level_decode) {
      pieces_[id] = text;  // llama.cpp: added tokens are their plain text, not byte-level encoded
      continue;
    }
    std::string bytes;
    size_t bad_pos = 0;
    in_alphabet[id] = byte_level_bytes(text, bytes, bad_pos);
    IC_CHECK(in_alphabet[id] || data_.hf_byte_level_decode,
             "tokenizer: {} token {} '{}' has a character (byte offset {}) outside the byte-level alphabet",
             type_name(type), id, text, bad_pos);
    // HF's ByteLevel decoder falls back to a token's text when a character is outside the alphabet.
    pieces_[id] = in_alphabet[id] ? std::move(bytes) : text;
  }

  // SmolLM2's vocabulary lacks 21 of the 256 byte tokens (0x04, 0x06, ..., 0xC0, 0xF5-0xFF).
  // HF drops such bytes from the input (the BPE model has no unknown token), and so do we:
  // byte_token_ holds -1 for them.
  for (int b = 0; b < 256; ++b) {
    std::string text;
    append_utf8(text, to_cp[b]);
    byte_token_[b] = token_id(text);
  }

  merges_.reserve(data_.merges.size());
  for (size_t rank = 0; rank < data_.merges.size(); ++rank) {
    const std::string& m = data_.merges[rank];
    const size_t sp = m.find(' ');
    IC_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < m.size() && m.find(' ', sp + 1) == std::string::npos,
             "tokenizer: merge {} '{}' is not two tokens separated by one space", rank, m);
    const std::string_view left(m.data(), sp), right(m.data() + sp + 1, m.size() - sp - 1);
    const int32_t l = token_id(left), r = token_id(right);
    const int32_t result = token_id(std::string(left) + std::string(right));
    IC_CHECK(l >= 0 && r >= 0 && result >= 0,
             "tokenizer: merge {} '{}': '{}' is not in the vocabulary", rank, m,
             l < 0 ? std::string(left) : r < 0 ? std::string(right) : std::string(left) + std::string(right));
    // A repeated merge keeps its best rank.
    merges_.insert(l, r, {static_cast<int32_t>(rank), result});
  }

  for (const int32_t id : data_.second_pass_specials) {
    check_id(id, "second-pass special token");
    const auto it = std::find_if(specials_.begin(), specials_.end(), [&](const Special& s) { return s.id == id; });
    IC_CHECK(it != specials_.end(), "tokenizer: second-pass special token {} is not a control or user-defined token",
             id);
    it->second_pass = true;
    has_second_pass_ = true;
  }
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const Special& a, const Special& b) { return a.text.size() > b.text.size(); });
  for (const Special& s : specials_) special_first_byte_[static_cast<uint8_t>(s.text[0])] = true;

  if (data_.ignore_merges) {
    for (size_t id = 0; id < n; ++id) {
      const int32_t type = data_.token_types.empty() ? kTokenNormal : data_.token_types[id];
      // A token outside the alphabet is no piece's byte-level form (HF looks the piece up by that).
      if (type != kTokenControl && type != kTokenUserDefined && in_alphabet[id] && !pieces_[id].empty())
        normal_by_bytes_.emplace(pieces_[id], static_cast<int32_t>(id));
    }
  }
}

int32_t Tokenizer::whole_piece_token(std::string_view piece) const {
  const auto it = normal_by_bytes_.find(piece);
  return it == normal_by_bytes_.end() ? -1 : it->second;
}

bool Tokenizer::byte_has_token(uint8_t byte) const { return byte_token_[byte] >= 0; }

int32_t Tokenizer::token_id(std::string_view token_text) const {
  const auto it = token_ids_.find(token_text);
  return it == token_ids_.end() ? -1 : it->second;
}

bool Tokenizer::is_control(int32_t id) const {
  IC_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id {} is outside the vocabulary of {}", id,
           vocab_size());
  return !data_.token_types.empty() && data_.token_types[id] == kTokenControl;
}

const std::string& Tokenizer::piece(int32_t id) const {
  IC_CHECK(id >= 0 && id < vocab_size(), "tokenizer: token id {} is outside the vocabulary of {}", id,
           vocab_size());
  return pieces_[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (const int32_t id : ids) out += piece(id);
  return out;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  WordCache cache;
  encode_pass(text, false, parse_special, cache, out);
  return out;
}

void Tokenizer::encode_pass(std::string_view text, bool second_pass, bool parse_special, WordCache& cache,
                            std::vector<int32_t>& out) const {
  const auto rest = [&](std::string_view t) {
    if (!second_pass && has_second_pass_) {
      encode_pass(t, true, parse_special, cache, out);
    } else {
      encode_plain(t, cache, out);
    }
  };
  size_t start = 0;  // first byte not yet encoded
  for (size_t i = 0; i < text.size();) {
    const Special* hit = nullptr;
    if (special_first_byte_[static_cast<uint8_t>(text[i])]) {
      for (const Special& s : specials_) {
        if (s.second_pass == second_pass && text.substr(i).starts_with(s.text)) {
          hit = &s;
          break;
        }
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    if (hit->control && !parse_special) {
      // HF finds the match, then leaves it as text: the search goes on after it.
      i += hit->text.size();
      continue;
    }
    rest(text.substr(start, i - start));
    out.push_back(hit->id);
    i += hit->text.size();
    start = i;
  }
  rest(text.substr(start));
}

void Tokenizer::encode_plain(std::string_view text, WordCache& cache, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  cache.pieces.clear();
  pretokenize(pre_, text, cache.pieces);
  for (const std::string_view p : cache.pieces) {
    if (data_.ignore_merges && p.size() > 1) {
      const int32_t id = whole_piece_token(p);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
    }
    if (p.size() == 1) {
      const int32_t id = byte_token_[static_cast<uint8_t>(p[0])];
      if (id >= 0) out.push_back(id);
      continue;
    }
    const auto it = cache.spans.find(p);
    if (it != cache.spans.end()) {
      const auto [begin, count] = it->second;
      out.insert(out.end(), cache.ids.begin() + begin, cache.ids.begin() + begin + count);
      continue;
    }
    const size_t begin = cache.ids.size();
    bpe(p, cache, cache.ids);
    const size_t count = cache.ids.size() - begin;
    cache.spans.emplace(p, std::pair<uint32_t, uint32_t>(static_cast<uint32_t>(begin), static_cast<uint32_t>(count)));
    out.insert(out.end(), cache.ids.begin() + begin, cache.ids.end());
  }
}

void Tokenizer::bpe(std::string_view piece, WordCache& scratch, std::vector<int32_t>& out) const {
  // Symbols form a linked list over the piece's bytes; a heap yields the best-ranked adjacent
  // pair (leftmost on ties, as HF does). Stale heap entries are skipped when popped.
  // Bytes without a token are left out, so their neighbours become adjacent and may merge,
  // exactly as in HF's BPE.
  std::vector<BpeSymbol>& syms = scratch.syms;
  std::vector<BpeCandidate>& heap = scratch.heap;
  syms.clear();
  heap.clear();
  for (const char ch : piece) {
    const int32_t id = byte_token_[static_cast<uint8_t>(ch)];
    if (id >= 0) syms.push_back({id, static_cast<int32_t>(syms.size()) - 1, -1});
  }
  const int32_t n = static_cast<int32_t>(syms.size());
  if (n == 0) return;
  for (int32_t k = 0; k + 1 < n; ++k) syms[k].next = k + 1;
  const auto push = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const MergeTable::Merge* m = merges_.find(syms[l].id, syms[r].id);
    if (!m) return;
    heap.push_back({m->rank, l, r, syms[l].id, syms[r].id, m->result});
    std::push_heap(heap.begin(), heap.end());
  };
  for (int32_t k = 0; k + 1 < n; ++k) push(k, k + 1);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const BpeCandidate c = heap.back();
    heap.pop_back();
    BpeSymbol& left = syms[c.left];
    if (left.id != c.left_id || left.next != c.right || syms[c.right].id != c.right_id) continue;
    BpeSymbol& right = syms[c.right];
    left.id = c.result;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = c.left;
    right.id = -1;
    push(left.prev, c.left);
    push(c.left, left.next);
  }
  for (int32_t k = 0; k >= 0; k = syms[k].next) out.push_back(syms[k].id);
}

}  // namespace ic
