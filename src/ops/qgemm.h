#pragma once
// Quantised matrix multiply for the CPU: y [n_tok, n_out] = x [n_tok, n_in] @ W^T.
//
// Weights are repacked once at load into one affine u8 format,
//   W[o, i] = d[o, b] * q[o, i] + m[o, b],   b = i / 32, q an unsigned code, d and m f16,
// exact for the GGUF types: Q4_1 (q = nibble), Q4_0 (q = nibble, m = -8d), Q8_0
// (q = int8 + 128, m = -128d). 4-bit types keep their codes packed two per byte; Q8_0 and the
// float types use one byte per code. F32/F16/BF16 weights are quantised per 32-block to 8 bits
// with m = min rounded down to f16 and d = (max - m) / 255 rounded up to f16, so every
// dequantised value is within d/2 ~ (max - min) / 510 of the original (about 8 bits relative
// to the block's range; dequantize_row returns the values actually used).
//
// Activations are quantised per token per 32-block to int8: s = max|x_b| / 127 and
// xq = round(x * (127 / max|x_b|)) in [-127, 127], so per element
//   |x - s * xq| <= s * (1/2 + 512 eps_f32)  ~  max|x_b| / 254:
// rounding to an integer costs s/2; x * fl(127 / max) * s = x (1 + 3 delta) with |delta| <= eps
// and |x| <= 127 s (1 + eps) gives the rest (381 eps, rounded up to 512 for the clamp and
// second-order terms). Holds while s is a normal float (max|x_b| >= 127 * 2^-126). Then
//   acc = fma(float(dot_b(q, xq)), d[o,b] * s[t,b], acc);
//   acc = fma(m[o,b], s[t,b] * sum_b(xq), acc)
// for b = 0, 1, ... with an exact int32 dot per block, so results do not depend on the thread
// count, the tile shape or the ISA (every path does the same float operations in that order).
// Threads: OpenMP (omp_get_max_threads) over pairs of 16-row groups x token chunks; or, for
// decode's few tokens, qgemm_batch on a ThreadPool over runs of row groups of several weights
// in one region.
//
// Error against the exact f32 product (see qgemm_error_bound), per output:
//   |qgemm - reference| <= sum_b s_b (1/2 + 512 eps) ||W[o, b]||_1        (activation rounding)
//                        + gamma(2 nb + 4) sum_b (|d s dot_b| + |m s sum_b(xq)|)   (f32 rounding)
// with gamma(n) = n eps / (1 - n eps), eps = 2^-24, nb = n_in / 32: each block adds two terms
// with one fma rounding each, each term carries one rounding of its scale product, and three
// more cover the reference's own roundings (qgemm.cpp, qgemm_error_bound).
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "core/cpu_features.h"
#include "core/dtype.h"

namespace ic {
class Storage;
class ThreadPool;
}

namespace ic::ops {

// Rows are packed in groups of kQgemmRows outputs; the last group is padded with zero rows.
constexpr int64_t kQgemmRows = 16;
constexpr int64_t kQgemmBlock = 32;  // values per block along n_in (GGUF block size)

class PackedWeight {  // W [n_out, n_in] repacked once at load for the CPU kernels
 public:
  PackedWeight() = default;
  // rows: n_out GGUF rows of n_in values of `type` (Q4_0, Q4_1, Q8_0, F32, F16 or BF16), row
  // after row. n_in must be a multiple of 32. Throws ic::Error on other types, bad shapes,
  // non-finite values or scales outside the f16 range.
  static PackedWeight pack(DType type, const void* rows, int64_t n_out, int64_t n_in);

  bool empty() const { return n_out_ == 0; }
  int64_t n_out() const { return n_out_; }
  int64_t n_in() const { return n_in_; }
  int64_t bytes() const;  // packed size, including padding rows
  DType source_type() const { return type_; }
  int code_bits() const { return bits_; }  // 4 or 8

  // Row o as the kernels compute with it: d * q + m, rounded once to f32. dst: [n_in].
  void dequantize_row(int64_t o, float* dst) const;
  // The parts of the affine format, for error analysis and tests.
  int code(int64_t o, int64_t i) const;           // q[o, i]
  float block_scale(int64_t o, int64_t b) const;  // d[o, b]
  float block_min(int64_t o, int64_t b) const;    // m[o, b]

  // Layout, for the kernels: groups of 16 rows, each a run of n_in/32 block records of
  //   codes [16 * 32 * bits / 8 bytes]: K-quads of 4 values, 16 rows x 4 bytes per 64 bytes
  //     (8-bit: quad k of the block at byte 64k; 4-bit: byte 64k + 4r + j holds value 4k + j
  //     in the low nibble and value 16 + 4k + j in the high nibble, as in GGUF's qs)
  //   d [16 f16], m [16 f16]
  const uint8_t* data() const;
  int64_t record_bytes() const { return record_bytes_; }
  int64_t n_groups() const { return (n_out_ + kQgemmRows - 1) / kQgemmRows; }
  int64_t n_blocks() const { return n_in_ / kQgemmBlock; }

 private:
  const uint8_t* record(int64_t o, int64_t b) const;

  std::shared_ptr<Storage> storage_;  // immutable after pack, so copies share it
  DType type_ = DType::F32;
  int bits_ = 8;
  int64_t n_out_ = 0, n_in_ = 0;
  int64_t record_bytes_ = 0;
};

// Activations quantised per token per 32-block (see the header comment).
struct QuantizedActs {
  int64_t n_tok = 0, n_in = 0;
  std::vector<int8_t> q;      // [n_tok, n_in], in [-127, 127]
  std::vector<float> scale;   // [n_tok, n_in / 32]: s = max|x_b| / 127
  std::vector<float> ssum;    // [n_tok, n_in / 32]: s * sum_b(q), rounded once
  std::vector<int32_t> sum;   // [n_tok, n_in / 32]: sum_b(q)
};

// x: [n_tok, n_in] f32, finite (throws ic::Error naming the token otherwise). Reuses `out`'s
// storage, so callers running many GEMMs on one input (q/k/v, gate/up) quantise once.
void quantize_activations(const float* x, int64_t n_tok, int64_t n_in, QuantizedActs& out);
// Same with an explicit ISA; every ISA gives bitwise identical results.
void quantize_activations(const float* x, int64_t n_tok, int64_t n_in, QuantizedActs& out,
                          CpuIsa isa);

// y [n_tok, n_out] = x [n_tok, n_in] @ W^T; fast path (activations quantised to int8 per
// 32-block). x and y are contiguous row-major. Uses cpu_isa() and omp_get_max_threads().
void qgemm(const PackedWeight& w, const float* x, int64_t n_tok, float* y);
// Same with an explicit ISA (must be supported by this CPU) and pre-quantised activations.
void qgemm(const PackedWeight& w, const QuantizedActs& xq, float* y, CpuIsa isa);
void qgemm(const PackedWeight& w, const QuantizedActs& xq, float* y);

// One product of a batch: y [xq->n_tok, w->n_out] = xq @ W^T. The weights of a batch may
// differ; y buffers must not overlap.
struct QgemmTask {
  const PackedWeight* w;
  const QuantizedActs* xq;
  float* y;
};

// Every task in at most one parallel region of `pool`, items of whole row groups (all tokens
// each), handed out dynamically; small batches run on the caller with no region. Bitwise the
// same as qgemm on each task (every output is computed by one item, in the fixed order of the
// header comment), for any pool size. For decode's few tokens: q/k/v or gate/up share one
// fork-join. isa must be supported by this CPU.
void qgemm_batch(std::span<const QgemmTask> tasks, ThreadPool& pool, CpuIsa isa);
void qgemm_batch(std::span<const QgemmTask> tasks, ThreadPool& pool);

// Plain reference: exact weights (dequantize_row), f32 activations, double accumulation.
void qgemm_reference(const PackedWeight& w, const float* x, int64_t n_tok, float* y);

// bound [n_tok, n_out]: the worst case of |qgemm - qgemm_reference| per output, from the
// formula in the header comment, computed a priori from x (not from the quantiser's output).
void qgemm_error_bound(const PackedWeight& w, const float* x, int64_t n_tok, float* bound);

}  // namespace ic::ops
