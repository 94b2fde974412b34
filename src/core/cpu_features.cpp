#include "core/cpu_features.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "core/error.h"

namespace ic {

namespace {

// -1 = no forced cap. Function-local so there is no static initialisation order to think of.
std::atomic<int>& forced_isa() {
  static std::atomic<int> forced{-1};
  return forced;
}

CpuIsa detect() {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vnni") &&
                      __builtin_cpu_supports("avx512bf16");
  return avx512 ? CpuIsa::Avx512 : avx2 ? CpuIsa::Avx2 : CpuIsa::Scalar;
}

// Detected ISA capped by IC_CPU_ISA; a bad value throws at first use rather than being ignored.
CpuIsa detected_capped_by_env() {
  static const CpuIsa isa = [] {
    CpuIsa best = cpu_isa_detected();
    if (const char* env = std::getenv("IC_CPU_ISA"); env && *env)
      best = std::min(best, parse_cpu_isa(env));
    return best;
  }();
  return isa;
}

}  // namespace

std::string_view cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Scalar: return "scalar";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
  }
  return "?";
}

CpuIsa parse_cpu_isa(std::string_view name) {
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    if (name == cpu_isa_name(isa)) return isa;
  fail("unknown CPU ISA '{}' (IC_CPU_ISA accepts scalar, avx2, avx512)", name);
}

CpuIsa cpu_isa_detected() {
  static const CpuIsa isa = detect();
  return isa;
}

bool cpu_supports(CpuIsa isa) { return isa <= cpu_isa_detected(); }

CpuIsa cpu_isa() {
  const CpuIsa base = detected_capped_by_env();
  const int forced = forced_isa().load(std::memory_order_relaxed);
  return forced < 0 ? base : std::min(base, static_cast<CpuIsa>(forced));
}

void force_cpu_isa(std::optional<CpuIsa> isa) {
  if (isa) {
    IC_CHECK(cpu_supports(*isa), "cannot force CPU ISA {}: this CPU supports up to {}",
             cpu_isa_name(*isa), cpu_isa_name(cpu_isa_detected()));
    forced_isa().store(static_cast<int>(*isa), std::memory_order_relaxed);
  } else {
    forced_isa().store(-1, std::memory_order_relaxed);
  }
}

}  // namespace ic
