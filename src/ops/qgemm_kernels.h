#pragma once
// Internal: the per-ISA qgemm kernels behind ops/qgemm.cpp's dispatch, and the probes the
// benchmark uses to measure this machine's ceilings. Not for other callers.
#include <cstdint>

namespace ic::ops::detail {

struct QgemmArgs {
  const uint8_t* w;       // [n_groups, nb, record_bytes] packed (PackedWeight layout)
  int64_t record_bytes;   // bytes of one (group, block) record
  int code_bits;          // 4 or 8
  int64_t nb;             // blocks per row: n_in / 32
  int64_t n_out;          // valid rows; the last group may be partial
  const int8_t* xq;       // [n_tok, nb * 32] quantised activations
  const float* xs;        // [n_tok, nb] activation block scales s
  const float* xss;       // [n_tok, nb] s * sum(xq)
  const int32_t* xsum;    // [n_tok, nb] sum(xq)
  float* y;               // [n_tok, n_out]
};

// Each computes y for row groups [g0, g1) and tokens [t0, t1), one output at a time in the
// order the header of qgemm.h specifies, so all of them agree bitwise.
void qgemm_scalar(const QgemmArgs& a, int64_t g0, int64_t g1, int64_t t0, int64_t t1);
void qgemm_avx2(const QgemmArgs& a, int64_t g0, int64_t g1, int64_t t0, int64_t t1);
void qgemm_avx512(const QgemmArgs& a, int64_t g0, int64_t g1, int64_t t0, int64_t t1);

// Token tile the kernel prefers (the dispatcher splits tokens in multiples of it).
int qgemm_token_tile_avx512();

// Ceiling probes for the benchmark. Each runs `iters` iterations of a tight loop and returns
// a checksum so the work cannot be optimised away.
// 24 independent vpdpbusd zmm chains: 24 * 64 int8 multiply-adds per iteration.
int64_t probe_vpdpbusd_avx512(int64_t iters);
// Sums `bytes` (multiple of 256) of `data` with 64-byte loads: a streaming read.
int64_t probe_stream_read_avx512(const uint8_t* data, int64_t bytes);

}  // namespace ic::ops::detail
