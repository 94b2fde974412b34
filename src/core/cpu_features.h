#pragma once
// Which SIMD instruction set the CPU kernels use. Chosen at run time: the best the CPU
// supports, capped by the IC_CPU_ISA environment variable (scalar|avx2|avx512, read once at
// first use) and by force_cpu_isa() (tests use it to run every path on one machine).
#include <optional>
#include <string_view>

namespace ic {

// Ordered: a higher value needs everything a lower one does.
enum class CpuIsa : int {
  Scalar = 0,  // baseline x86-64
  Avx2 = 1,    // AVX2 + FMA + F16C
  Avx512 = 2,  // AVX-512 F/BW/VL/DQ + VNNI + BF16 (what *_avx512.cpp files are compiled for)
};

std::string_view cpu_isa_name(CpuIsa isa);
// Parses "scalar", "avx2" or "avx512"; throws ic::Error listing the accepted names.
CpuIsa parse_cpu_isa(std::string_view name);

// The best ISA this CPU supports (hardware only, ignores the caps).
CpuIsa cpu_isa_detected();
bool cpu_supports(CpuIsa isa);

// The ISA kernels should use now: min(detected, IC_CPU_ISA, forced).
CpuIsa cpu_isa();

// Caps the active ISA for this process until reset with std::nullopt. Throws ic::Error if the
// CPU lacks `isa`. Meant for tests; not synchronised with kernels already running.
void force_cpu_isa(std::optional<CpuIsa> isa);

}  // namespace ic
