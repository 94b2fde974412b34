#include "core/cpu_features.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "core/error.h"

namespace ic {

namespace {

// -1 = no forced cap. Function-local so there is no static initialisation order to think of.
std::atomic<int>& forced_isa() {
  static std::atomic<int> forced{-1};
  return forced;
}

#if defined(__x86_64__) || defined(__i386__)

// CPUID registers of one leaf/subleaf; all zero when the CPU has no such leaf.
struct CpuidRegs {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegs cpuid(unsigned leaf, unsigned subleaf) {
  CpuidRegs r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) r = {};
  return r;
}

bool bit(unsigned reg, int n) { return (reg >> n) & 1u; }

// XCR0: which register states the OS saves on a context switch. Inline asm rather than
// _xgetbv(), which needs -mxsave on this file; callers check OSXSAVE first, else it faults.
uint64_t xcr0() {
  unsigned lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

// CPUID + XGETBV read directly rather than __builtin_cpu_supports, whose feature names differ
// between compilers (clang 14 rejects "f16c"). A vector extension counts only if the OS also
// saves its registers on a context switch (XCR0), as GCC's builtin and the kernel's
// /proc/cpuinfo flags both require: without that the instructions fault.
CpuIsa detect() {
  const CpuidRegs l1 = cpuid(1, 0);
  const bool osxsave = bit(l1.ecx, 27);
  const uint64_t xcr = osxsave ? xcr0() : 0;
  const bool os_avx = (xcr & 0x6) == 0x6;        // XMM (bit 1) + YMM (bit 2) state
  const bool os_avx512 = (xcr & 0xe6) == 0xe6;   // + opmask, ZMM_Hi256, Hi16_ZMM (bits 5-7)
  const bool avx = os_avx && bit(l1.ecx, 28);
  const bool fma = bit(l1.ecx, 12), f16c = bit(l1.ecx, 29);

  const CpuidRegs l7 = cpuid(7, 0);
  const CpuidRegs l7s1 = l7.eax >= 1 ? cpuid(7, 1) : CpuidRegs{};  // l7.eax: highest subleaf
  const bool avx2 = avx && fma && f16c && bit(l7.ebx, 5);
  const bool avx512 = avx2 && os_avx512 && bit(l7.ebx, 16) /* F */ && bit(l7.ebx, 17) /* DQ */ &&
                      bit(l7.ebx, 30) /* BW */ && bit(l7.ebx, 31) /* VL */ &&
                      bit(l7.ecx, 11) /* VNNI */ && bit(l7s1.eax, 5) /* BF16 */;
  return avx512 ? CpuIsa::Avx512 : avx2 ? CpuIsa::Avx2 : CpuIsa::Scalar;
}

#else

CpuIsa detect() { return CpuIsa::Scalar; }  // the SIMD kernels are x86 only

#endif

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
