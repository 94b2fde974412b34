// Packing, activation quantisation, the scalar kernel, the reference and the ISA dispatch of
// the quantised GEMM. The SIMD kernels live in qgemm_avx512.cpp and qgemm_avx2.cpp.
#include "ops/qgemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "ops/qgemm_kernels.h"

namespace ic::ops {

namespace {

constexpr float kF16Max = 65504.0f;

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// Neighbouring f16 values, by bit pattern (finite inputs only).
uint16_t f16_next_down(uint16_t h) {
  if ((h & 0x7fffu) == 0) return 0x8001u;  // +-0 -> smallest negative subnormal
  return (h & 0x8000u) ? h + 1 : h - 1;
}
uint16_t f16_next_up(uint16_t h) {
  if ((h & 0x7fffu) == 0) return 0x0001u;
  return (h & 0x8000u) ? h - 1 : h + 1;
}
// Largest f16 <= v and smallest f16 >= v, for |v| <= 65504.
uint16_t f16_round_down(float v) {
  uint16_t h = f32_to_f16(v);
  if (f16_to_f32(h) > v) h = f16_next_down(h);
  return h;
}
uint16_t f16_round_up(float v) {
  uint16_t h = f32_to_f16(v);
  if (f16_to_f32(h) < v) h = f16_next_up(h);
  return h;
}

float source_value(DType type, const void* rows, int64_t idx) {
  switch (type) {
    case DType::F32: return static_cast<const float*>(rows)[idx];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(rows)[idx]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(rows)[idx]);
    default: IC_ASSERT(false);
  }
  return 0.0f;
}

// Writes one row's block into the packed record. codes: [32] in [0, 2^bits).
struct RecordWriter {
  int bits;
  int64_t code_bytes;

  void write(uint8_t* rec, int64_t r, const uint8_t* codes, uint16_t d, uint16_t m) const {
    if (bits == 8) {
      for (int k = 0; k < 32; ++k) rec[64 * (k / 4) + 4 * r + k % 4] = codes[k];
    } else {
      for (int k = 0; k < 16; ++k)
        rec[64 * (k / 4) + 4 * r + k % 4] = static_cast<uint8_t>(codes[k] | codes[k + 16] << 4);
    }
    store_u16(rec + code_bytes + 2 * r, d);
    store_u16(rec + code_bytes + 32 + 2 * r, m);
  }
};

// m = -k * d for Q4_0 (k = 8) and Q8_0 (k = 128): exact in f16 unless it overflows, since
// multiplying by a power of two only moves the exponent (subnormal d gains bits it can hold).
uint16_t f16_neg_multiple(uint16_t d, float k, int64_t o, int64_t b, DType type) {
  const float df = f16_to_f32(d);
  IC_CHECK(std::isfinite(df), "{} weight row {} block {}: scale is not finite", dtype_name(type),
           o, b);
  const float mf = -k * df;
  IC_CHECK(std::fabs(mf) <= kF16Max,
           "{} weight row {} block {}: scale {} too large for the packed format (needs {} * d "
           "within f16)",
           dtype_name(type), o, b, df, k);
  const uint16_t m = f32_to_f16(mf);
  IC_ASSERT(f16_to_f32(m) == mf);
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------- packing

PackedWeight PackedWeight::pack(DType type, const void* rows, int64_t n_out, int64_t n_in) {
  IC_CHECK(n_out > 0 && n_in > 0, "PackedWeight::pack: empty weight [{}, {}]", n_out, n_in);
  IC_CHECK(n_in % kQgemmBlock == 0,
           "PackedWeight::pack: n_in = {} is not a multiple of the block size {}", n_in,
           kQgemmBlock);
  IC_CHECK(rows != nullptr, "PackedWeight::pack: null weight data");
  int bits = 8;
  switch (type) {
    case DType::Q4_0:
    case DType::Q4_1: bits = 4; break;
    case DType::Q8_0:
    case DType::F32:
    case DType::F16:
    case DType::BF16: bits = 8; break;
    default:
      fail("PackedWeight::pack: unsupported weight type {} (supported: Q4_0, Q4_1, Q8_0, F32, "
           "F16, BF16)",
           dtype_name(type));
  }

  PackedWeight w;
  w.type_ = type;
  w.bits_ = bits;
  w.n_out_ = n_out;
  w.n_in_ = n_in;
  const int64_t code_bytes = kQgemmRows * kQgemmBlock * bits / 8;
  w.record_bytes_ = code_bytes + 2 * kQgemmRows * 2;
  const int64_t nb = n_in / kQgemmBlock;
  const int64_t total = w.n_groups() * nb * w.record_bytes_;
  w.storage_ = std::make_shared<Storage>(total, Device::CPU);
  uint8_t* base = static_cast<uint8_t*>(w.storage_->data());
  std::memset(base, 0, total);  // padding rows: codes 0, d = m = 0 -> they compute 0

  const RecordWriter writer{bits, code_bytes};
  const auto* src = static_cast<const uint8_t*>(rows);
  const int64_t row_bytes = dtype_row_bytes(type, n_in);
  uint8_t codes[32];
  for (int64_t o = 0; o < n_out; ++o) {
    const uint8_t* row = src + o * row_bytes;
    for (int64_t b = 0; b < nb; ++b) {
      uint8_t* rec = base + ((o / kQgemmRows) * nb + b) * w.record_bytes_;
      const int64_t r = o % kQgemmRows;
      uint16_t d = 0, m = 0;
      if (type == DType::Q4_1 || type == DType::Q4_0) {
        const uint8_t* blk = row + b * dtype_block_bytes(type);
        d = load_u16(blk);
        const uint8_t* qs = blk + (type == DType::Q4_1 ? 4 : 2);
        if (type == DType::Q4_1) {
          m = load_u16(blk + 2);
          IC_CHECK(std::isfinite(f16_to_f32(d)) && std::isfinite(f16_to_f32(m)),
                   "Q4_1 weight row {} block {}: scale or min is not finite", o, b);
        } else {
          m = f16_neg_multiple(d, 8.0f, o, b, type);
        }
        for (int k = 0; k < 16; ++k) {
          codes[k] = qs[k] & 15;
          codes[k + 16] = qs[k] >> 4;
        }
      } else if (type == DType::Q8_0) {
        const uint8_t* blk = row + b * dtype_block_bytes(type);
        d = load_u16(blk);
        m = f16_neg_multiple(d, 128.0f, o, b, type);
        for (int k = 0; k < 32; ++k)
          codes[k] = static_cast<uint8_t>(static_cast<int8_t>(blk[2 + k]) + 128);
      } else {
        // Float weights: m = min rounded down, d = (max - m)/255 rounded up (both f16), so
        // (w - m)/d lies in [0, 255] and rounding it to a code errs by at most d/2.
        float v[32];
        float lo = std::numeric_limits<float>::infinity(), hi = -lo;
        for (int k = 0; k < 32; ++k) {
          v[k] = source_value(type, rows, o * n_in + b * kQgemmBlock + k);
          IC_CHECK(std::isfinite(v[k]) && std::fabs(v[k]) <= kF16Max,
                   "{} weight [{}, {}] = {} is outside the f16 range the packed format needs",
                   dtype_name(type), o, b * kQgemmBlock + k, v[k]);
          lo = std::min(lo, v[k]);
          hi = std::max(hi, v[k]);
        }
        m = f16_round_down(lo);
        const double mf = f16_to_f32(m);
        const double dt = (static_cast<double>(hi) - mf) / 255.0;
        float df = static_cast<float>(dt);
        if (df < dt) df = std::nextafter(df, std::numeric_limits<float>::infinity());
        d = f16_round_up(df);
        const double dd = f16_to_f32(d);
        IC_ASSERT(mf + 255.0 * dd >= hi);
        for (int k = 0; k < 32; ++k) {
          const double c = dd > 0 ? std::nearbyint((v[k] - mf) / dd) : 0.0;
          codes[k] = static_cast<uint8_t>(std::clamp(c, 0.0, 255.0));
        }
      }
      writer.write(rec, r, codes, d, m);
    }
  }
  return w;
}

int64_t PackedWeight::bytes() const { return storage_ ? storage_->bytes() : 0; }

const uint8_t* PackedWeight::data() const {
  return storage_ ? static_cast<const uint8_t*>(storage_->data()) : nullptr;
}

const uint8_t* PackedWeight::record(int64_t o, int64_t b) const {
  IC_ASSERT(o >= 0 && o < n_out_ && b >= 0 && b < n_blocks());
  return data() + ((o / kQgemmRows) * n_blocks() + b) * record_bytes_;
}

int PackedWeight::code(int64_t o, int64_t i) const {
  const uint8_t* rec = record(o, i / kQgemmBlock);
  const int64_t r = o % kQgemmRows, k = i % kQgemmBlock;
  if (bits_ == 8) return rec[64 * (k / 4) + 4 * r + k % 4];
  const uint8_t byte = rec[64 * ((k % 16) / 4) + 4 * r + k % 4];
  return k < 16 ? byte & 15 : byte >> 4;
}

float PackedWeight::block_scale(int64_t o, int64_t b) const {
  return f16_to_f32(load_u16(record(o, b) + record_bytes_ - 64 + 2 * (o % kQgemmRows)));
}

float PackedWeight::block_min(int64_t o, int64_t b) const {
  return f16_to_f32(load_u16(record(o, b) + record_bytes_ - 32 + 2 * (o % kQgemmRows)));
}

void PackedWeight::dequantize_row(int64_t o, float* dst) const {
  IC_CHECK(o >= 0 && o < n_out_, "dequantize_row: row {} out of range [0, {})", o, n_out_);
  for (int64_t b = 0; b < n_blocks(); ++b) {
    const double d = block_scale(o, b), m = block_min(o, b);
    for (int64_t k = 0; k < kQgemmBlock; ++k) {
      const int64_t i = b * kQgemmBlock + k;
      dst[i] = static_cast<float>(d * code(o, i) + m);  // exact in double, rounded once
    }
  }
}

// ------------------------------------------------------------------- activation quantisation

namespace detail {

// One token; the obvious version the SIMD ones must reproduce bitwise. x * (127 / amax)
// (a multiply, not x / s: a division per element costs more than the rest) and the
// add-subtract rounding (round to nearest even for |v| < 2^22) are exact IEEE operations, so
// any vector width gives the same codes. Returns false if the row has a non-finite value
// (whose block is then left zero).
bool quantize_token_scalar(const float* x,  // [nb * 32]
                           int64_t nb, int8_t* q, float* scale, float* ssum, int32_t* sum) {
  bool finite = true;
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * 32;
    float amax = 0.0f;
    bool block_finite = true;
    for (int k = 0; k < 32; ++k) {
      const float a = std::fabs(xb[k]);
      block_finite &= a <= std::numeric_limits<float>::max();  // false for inf and NaN
      amax = std::max(amax, a);
    }
    finite &= block_finite;
    const float s = block_finite ? amax / 127.0f : 0.0f;
    const float inv = s > 0.0f ? 127.0f / amax : 0.0f;
    int32_t acc = 0;
    int8_t* qb = q + b * 32;
    for (int k = 0; k < 32; ++k) {
      float v = xb[k] * inv;
      v = std::clamp(v, -127.0f, 127.0f);  // only bites for subnormal s
      v = (v + 12582912.0f) - 12582912.0f;  // 1.5 * 2^23
      qb[k] = static_cast<int8_t>(v);
      acc += qb[k];
    }
    scale[b] = s;
    sum[b] = acc;
    ssum[b] = s * static_cast<float>(acc);
  }
  return finite;
}

}  // namespace detail

void quantize_activations(const float* x, int64_t n_tok, int64_t n_in, QuantizedActs& out) {
  quantize_activations(x, n_tok, n_in, out, cpu_isa());
}

void quantize_activations(const float* x, int64_t n_tok, int64_t n_in, QuantizedActs& out,
                          CpuIsa isa) {
  IC_CHECK(cpu_supports(isa), "quantize_activations: ISA {} is not supported by this CPU",
           cpu_isa_name(isa));
  auto* quantize_token = isa == CpuIsa::Avx512 ? detail::quantize_token_avx512
                         : isa == CpuIsa::Avx2 ? detail::quantize_token_avx2
                                               : detail::quantize_token_scalar;
  IC_CHECK(n_tok >= 0, "quantize_activations: n_tok = {}", n_tok);
  IC_CHECK(n_in > 0 && n_in % kQgemmBlock == 0,
           "quantize_activations: n_in = {} is not a positive multiple of {}", n_in,
           kQgemmBlock);
  const int64_t nb = n_in / kQgemmBlock;
  out.n_tok = n_tok;
  out.n_in = n_in;
  out.q.resize(n_tok * n_in);
  out.scale.resize(n_tok * nb);
  out.ssum.resize(n_tok * nb);
  out.sum.resize(n_tok * nb);
  auto one = [&](int64_t t) {
    return quantize_token(x + t * n_in, nb, out.q.data() + t * n_in, out.scale.data() + t * nb,
                          out.ssum.data() + t * nb, out.sum.data() + t * nb);
  };
  int64_t bad = n_tok;  // first token with a non-finite value
  if (n_tok * n_in < (1 << 18)) {
    // Entering even an if(false) OpenMP region costs ~0.3 us, as much as a decode token.
    for (int64_t t = 0; t < n_tok; ++t)
      if (!one(t)) bad = std::min(bad, t);
  } else {
#pragma omp parallel for schedule(static) reduction(min : bad)
    for (int64_t t = 0; t < n_tok; ++t)
      if (!one(t)) bad = std::min(bad, t);
  }
  IC_CHECK(bad == n_tok, "qgemm: activation row {} has a non-finite value", bad);
}

// ----------------------------------------------------------------------------- scalar kernel

namespace detail {

void qgemm_scalar(const QgemmArgs& a, int64_t g0, int64_t g1, int64_t t0, int64_t t1) {
  const int64_t n_in = a.nb * kQgemmBlock;
  const int64_t code_bytes = a.record_bytes - 64;
  std::vector<float> acc((t1 - t0) * kQgemmRows);  // [t1 - t0, 16]
  int32_t q[kQgemmRows][kQgemmBlock];
  float d[kQgemmRows], m[kQgemmRows];
  for (int64_t g = g0; g < g1; ++g) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t b = 0; b < a.nb; ++b) {
      const uint8_t* rec = a.w + (g * a.nb + b) * a.record_bytes;
      for (int r = 0; r < kQgemmRows; ++r) {
        for (int k = 0; k < kQgemmBlock; ++k) {
          if (a.code_bits == 8) {
            q[r][k] = rec[64 * (k / 4) + 4 * r + k % 4];
          } else {
            const uint8_t byte = rec[64 * ((k % 16) / 4) + 4 * r + k % 4];
            q[r][k] = k < 16 ? byte & 15 : byte >> 4;
          }
        }
        d[r] = f16_to_f32(load_u16(rec + code_bytes + 2 * r));
        m[r] = f16_to_f32(load_u16(rec + code_bytes + 32 + 2 * r));
      }
      for (int64_t t = t0; t < t1; ++t) {
        const int8_t* xq = a.xq + t * n_in + b * kQgemmBlock;  // [32]
        const float s = a.xs[t * a.nb + b], ss = a.xss[t * a.nb + b];
        float* at = acc.data() + (t - t0) * kQgemmRows;
        for (int r = 0; r < kQgemmRows; ++r) {
          int32_t dot = 0;
          for (int k = 0; k < kQgemmBlock; ++k) dot += q[r][k] * xq[k];
          at[r] = std::fma(static_cast<float>(dot), d[r] * s, at[r]);
          at[r] = std::fma(m[r], ss, at[r]);
        }
      }
    }
    const int64_t rows = std::min(kQgemmRows, a.n_out - g * kQgemmRows);
    for (int64_t t = t0; t < t1; ++t)
      std::memcpy(a.y + t * a.n_out + g * kQgemmRows, acc.data() + (t - t0) * kQgemmRows,
                  rows * sizeof(float));
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------- dispatch

namespace {

using Kernel = void (*)(const detail::QgemmArgs&, int64_t, int64_t, int64_t, int64_t);

struct KernelChoice {
  Kernel kernel;
  int tok_tile;  // token tile the kernel prefers
};

KernelChoice kernel_for(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Scalar: break;
    case CpuIsa::Avx2: return {detail::qgemm_avx2, 4};
    case CpuIsa::Avx512: return {detail::qgemm_avx512, detail::qgemm_token_tile_avx512()};
  }
  return {detail::qgemm_scalar, 1};
}

detail::QgemmArgs args_of(const PackedWeight& w, const QuantizedActs& xq, float* y) {
  return {w.data(),        w.record_bytes(), w.code_bits(),   w.n_blocks(), w.n_out(),
          xq.q.data(),     xq.scale.data(),  xq.ssum.data(),  xq.sum.data(), y};
}

void check_operands(const PackedWeight& w, const QuantizedActs& xq, CpuIsa isa) {
  IC_CHECK(!w.empty(), "qgemm: empty weight");
  IC_CHECK(xq.n_in == w.n_in(), "qgemm: activations have {} features, weight expects {}",
           xq.n_in, w.n_in());
  IC_CHECK(cpu_supports(isa), "qgemm: ISA {} is not supported by this CPU (best: {})",
           cpu_isa_name(isa), cpu_isa_name(cpu_isa_detected()));
}

// Bytes of packed weights one work item of qgemm_batch streams: small enough that the caller
// and the workers share even a 576 x 576 GEMV, large enough that the claim (one atomic add on
// a shared line) stays a few percent of the item.
constexpr int64_t kBatchItemBytes = 24 * 1024;

}  // namespace

void qgemm_batch(std::span<const QgemmTask> tasks, ThreadPool& pool, CpuIsa isa) {
  const Kernel kernel = kernel_for(isa).kernel;
  struct Part {
    detail::QgemmArgs args;
    int64_t n_tok, n_groups, g_step, first_item;
  };
  std::vector<Part> parts;
  parts.reserve(tasks.size());
  int64_t items = 0, macs = 0;
  for (const QgemmTask& t : tasks) {
    IC_CHECK(t.w && t.xq && t.y, "qgemm_batch: a task has a null weight, input or output");
    check_operands(*t.w, *t.xq, isa);
    if (t.xq->n_tok == 0) continue;
    const int64_t group_bytes = t.w->n_blocks() * t.w->record_bytes();
    const int64_t g_step = std::max<int64_t>(1, kBatchItemBytes / group_bytes);
    parts.push_back({args_of(*t.w, *t.xq, t.y), t.xq->n_tok, t.w->n_groups(), g_step, items});
    items += (t.w->n_groups() + g_step - 1) / g_step;
    macs += t.xq->n_tok * t.w->n_out() * t.w->n_in();
  }
  auto run_items = [&](int64_t i0, int64_t i1) {
    size_t p = 0;
    for (int64_t it = i0; it < i1; ++it) {
      while (p + 1 < parts.size() && parts[p + 1].first_item <= it) ++p;
      const Part& part = parts[p];
      const int64_t g0 = (it - part.first_item) * part.g_step;
      kernel(part.args, g0, std::min(part.n_groups, g0 + part.g_step), 0, part.n_tok);
    }
  };
  // Small batches finish before a worker could take an item (the same bound as qgemm's).
  if (pool.size() == 1 || macs < (1 << 18)) return run_items(0, items);
  pool.parallel_for(items, 1, run_items);
}

void qgemm_batch(std::span<const QgemmTask> tasks, ThreadPool& pool) {
  qgemm_batch(tasks, pool, cpu_isa());
}

void qgemm(const PackedWeight& w, const QuantizedActs& xq, float* y, CpuIsa isa) {
  check_operands(w, xq, isa);
  const int64_t n_tok = xq.n_tok;
  if (n_tok == 0) return;
  const detail::QgemmArgs args = args_of(w, xq, y);
  // Plain locals, not a structured binding: the lambda below captures them, which clang's
  // C++20 mode before version 16 rejects for bindings.
  const KernelChoice chosen = kernel_for(isa);
  const Kernel kernel = chosen.kernel;
  const int64_t tok_tile = chosen.tok_tile;

  // Work items: pairs of row groups x token chunks. Every output is computed by one item in
  // a fixed order, so the split (and the thread count) never changes a result.
  const int threads = omp_get_max_threads();
  const int64_t g_step = 2;
  const int64_t n_gi = (w.n_groups() + g_step - 1) / g_step;
  int64_t n_ti = 1;
  if (n_gi < 4 * threads && n_tok >= 2 * tok_tile)
    n_ti = std::min((n_tok + tok_tile - 1) / tok_tile, (4 * threads + n_gi - 1) / n_gi);
  const int64_t t_chunk = ((n_tok + n_ti - 1) / n_ti + tok_tile - 1) / tok_tile * tok_tile;
  n_ti = (n_tok + t_chunk - 1) / t_chunk;
  const int64_t items = n_gi * n_ti;
  // Small products finish before a thread team wakes up (a few microseconds).
  const bool parallel = threads > 1 && items > 1 && n_tok * w.n_out() * w.n_in() >= (1 << 18);
  auto run = [&](int64_t it) {
    const int64_t gi = it / n_ti, ti = it % n_ti;
    kernel(args, gi * g_step, std::min(w.n_groups(), (gi + 1) * g_step), ti * t_chunk,
           std::min(n_tok, (ti + 1) * t_chunk));
  };
  if (!parallel) {
    for (int64_t it = 0; it < items; ++it) run(it);  // no OpenMP region at all: ~0.3 us less
    return;
  }
  // Dynamic: on a shared machine a descheduled thread's items go to the one still running.
#pragma omp parallel for schedule(dynamic)
  for (int64_t it = 0; it < items; ++it) run(it);
}

void qgemm(const PackedWeight& w, const QuantizedActs& xq, float* y) {
  qgemm(w, xq, y, cpu_isa());
}

void qgemm(const PackedWeight& w, const float* x, int64_t n_tok, float* y) {
  QuantizedActs xq;
  quantize_activations(x, n_tok, w.n_in(), xq);
  qgemm(w, xq, y, cpu_isa());
}

// ------------------------------------------------------------------- reference, error bound

void qgemm_reference(const PackedWeight& w, const float* x, int64_t n_tok, float* y) {
  const int64_t n_in = w.n_in(), n_out = w.n_out();
  std::vector<float> row(n_in);
  for (int64_t o = 0; o < n_out; ++o) {
    w.dequantize_row(o, row.data());
    for (int64_t t = 0; t < n_tok; ++t) {
      double acc = 0.0;
      for (int64_t i = 0; i < n_in; ++i)
        acc += static_cast<double>(row[i]) * static_cast<double>(x[t * n_in + i]);
      y[t * n_out + o] = static_cast<float>(acc);
    }
  }
}

void qgemm_error_bound(const PackedWeight& w, const float* x, int64_t n_tok, float* bound) {
  const int64_t n_in = w.n_in(), n_out = w.n_out(), nb = w.n_blocks();
  const double eps = std::ldexp(1.0, -24);
  // f32 rounding of the kernel: each block adds two terms with one rounding each (fma), and
  // each term carries one rounding of its scale product: gamma(2 nb + 1). Three more cover
  // the reference's own rounding (dequantised weights and the output to f32; the double
  // accumulation is ~2^-29 times smaller).
  const double n_round = 2.0 * nb + 4.0;
  const double gamma = n_round * eps / (1.0 - n_round * eps);
  std::vector<double> e(n_tok * nb);  // [n_tok, nb]: per-element bound on |x - s * xq|
  for (int64_t t = 0; t < n_tok; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      float amax = 0.0f;
      for (int64_t k = 0; k < kQgemmBlock; ++k)
        amax = std::max(amax, std::fabs(x[t * n_in + b * kQgemmBlock + k]));
      e[t * nb + b] = static_cast<double>(amax / 127.0f) * (0.5 + 512.0 * eps);
    }
  }
  std::vector<float> row(n_in);
  std::vector<int> codes(n_in);
  std::vector<double> wabs(nb), dabs(nb), mabs(nb);  // per block: ||W[o, b]||_1, |d|, |m|
  for (int64_t o = 0; o < n_out; ++o) {
    w.dequantize_row(o, row.data());
    for (int64_t i = 0; i < n_in; ++i) codes[i] = w.code(o, i);
    for (int64_t b = 0; b < nb; ++b) {
      wabs[b] = 0.0;
      for (int64_t k = 0; k < kQgemmBlock; ++k) wabs[b] += std::fabs(row[b * kQgemmBlock + k]);
      dabs[b] = std::fabs(w.block_scale(o, b));
      mabs[b] = std::fabs(w.block_min(o, b));
    }
    for (int64_t t = 0; t < n_tok; ++t) {
      double act = 0.0, terms = 0.0;
      for (int64_t b = 0; b < nb; ++b) {
        const double eb = e[t * nb + b];
        double qx = 0.0, xabs = 0.0;
        for (int64_t k = 0; k < kQgemmBlock; ++k) {
          const int64_t i = b * kQgemmBlock + k;
          const double xa = std::fabs(x[t * n_in + i]) + eb;  // >= |s * xq|
          qx += codes[i] * xa;
          xabs += xa;
        }
        act += eb * wabs[b];
        terms += dabs[b] * qx + mabs[b] * xabs;
      }
      bound[t * n_out + o] = static_cast<float>((act + gamma * terms) * (1.0 + 4.0 * eps));
    }
  }
}

}  // namespace ic::ops
