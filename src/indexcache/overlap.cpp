#include "indexcache/overlap.h"

#include <algorithm>

#include "core/error.h"
#include "model/model.h"

namespace ic {

namespace {
// Valid entries of a row, sorted and without duplicates.
std::vector<int32_t> sorted_set(std::span<const int32_t> row) {
  std::vector<int32_t> s;
  s.reserve(row.size());
  for (int32_t v : row)
    if (v >= 0) s.push_back(v);
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  return s;
}

double jaccard_sorted(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  if (a.empty() && b.empty()) return 1.0;
  size_t i = 0, j = 0, inter = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] < b[j]) {
      ++i;
    } else if (b[j] < a[i]) {
      ++j;
    } else {
      ++inter, ++i, ++j;
    }
  }
  return static_cast<double>(inter) / static_cast<double>(a.size() + b.size() - inter);
}
}  // namespace

double jaccard(std::span<const int32_t> a, std::span<const int32_t> b) {
  return jaccard_sorted(sorted_set(a), sorted_set(b));
}

std::vector<Tensor> capture_topk(Model& model, std::span<const int32_t> tokens) {
  IC_CHECK(model.pattern() != nullptr, "capture_topk: the model runs dense (it has no indexers)");
  const int64_t L = model.info().n_layers, k = model.topk();
  const int64_t n = static_cast<int64_t>(tokens.size());
  std::vector<Tensor> out;
  for (int64_t l = 0; l < L; ++l) out.push_back(Tensor::empty({n, k}, DType::I32));
  // The forward runs in chunks; each layer reports its chunk's rows in order.
  std::vector<int64_t> filled(static_cast<size_t>(L), 0);
  model.set_tensor_callback([&](const std::string& name, int layer, const Tensor& t) {
    if (name != "topk" || layer < 0) return;
    const size_t l = static_cast<size_t>(layer);
    IC_ASSERT(filled[l] + t.dim(0) <= n && t.dim(1) == k);
    out[l].slice_rows(filled[l], filled[l] + t.dim(0)).copy_from(t.device() == Device::CPU ? t : t.to(Device::CPU));
    filled[l] += t.dim(0);
  });
  try {
    const auto kv_owner = model.make_cache(n);
  ModelCache& kv = *kv_owner;
    Tensor logits;
    model.forward(tokens, kv, logits, false);
  } catch (...) {
    model.set_tensor_callback(nullptr);
    throw;
  }
  model.set_tensor_callback(nullptr);
  for (int64_t l = 0; l < L; ++l) IC_ASSERT(filled[l] == n);
  return out;
}

OverlapMatrix layer_overlap(const std::vector<Tensor>& topk, int64_t min_position) {
  const int64_t L = static_cast<int64_t>(topk.size());
  IC_CHECK(L > 0, "layer_overlap: no layers");
  const int64_t n = topk[0].dim(0), k = topk[0].dim(1);
  for (const Tensor& t : topk)
    IC_CHECK(t.dtype() == DType::I32 && t.dim(0) == n && t.dim(1) == k,
             "layer_overlap: selections must all be I32 [{}, {}], got {}", n, k, t.desc());
  IC_CHECK(min_position >= 0 && min_position < n, "layer_overlap: no query rows from position {} in {} tokens",
           min_position, n);
  OverlapMatrix m;
  m.n_layers = L;
  m.rows = n - min_position;
  m.min_position = min_position;
  m.jaccard.assign(static_cast<size_t>(L * L), 0.0);
  // Sort each row once; then every pair is a linear merge.
  std::vector<std::vector<std::vector<int32_t>>> sets(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l)
    for (int64_t t = min_position; t < n; ++t)
      sets[l].push_back(sorted_set({topk[l].data<int32_t>() + t * k, static_cast<size_t>(k)}));
  const int64_t pairs = L * (L + 1) / 2;
#pragma omp parallel for schedule(dynamic)
  for (int64_t p = 0; p < pairs; ++p) {
    int64_t a = 0, rest = p;
    while (rest >= L - a) rest -= L - a, ++a;
    const int64_t b = a + rest;
    double s = 0.0;  // one thread per pair, rows in order: independent of the thread count
    for (int64_t r = 0; r < m.rows; ++r) s += jaccard_sorted(sets[a][r], sets[b][r]);
    m.jaccard[a * L + b] = m.jaccard[b * L + a] = s / static_cast<double>(m.rows);
  }
  return m;
}

}  // namespace ic
