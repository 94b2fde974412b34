// CPU feature detection: the ISA read from CPUID + XGETBV must be the one the kernel's
// /proc/cpuinfo flags imply (Linux clears a flag when the OS does not save its registers, so
// this also checks the XCR0 test), and the names, parser and caps behave as documented.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "core/cpu_features.h"
#include "core/error.h"

namespace ic {
namespace {

// The flags of the first processor in /proc/cpuinfo; empty when the file is not there.
std::set<std::string> proc_cpuinfo_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> flags;
    for (std::string w; words >> w;) flags.insert(w);
    return flags;
  }
  return {};
}

TEST(CpuFeatures, DetectedMatchesProcCpuinfo) {
  const std::set<std::string> flags = proc_cpuinfo_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags on this system";
  const auto has_all = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (!flags.count(n)) return false;
    return true;
  };
  // The kernel's names for what CpuIsa::Avx2 and CpuIsa::Avx512 promise (cpu_features.h).
  const bool avx2 = has_all({"avx", "avx2", "fma", "f16c"});
  const bool avx512 = avx2 && has_all({"avx512f", "avx512bw", "avx512vl", "avx512dq",
                                       "avx512_vnni", "avx512_bf16"});
  const CpuIsa expected = avx512 ? CpuIsa::Avx512 : avx2 ? CpuIsa::Avx2 : CpuIsa::Scalar;
  EXPECT_EQ(cpu_isa_name(cpu_isa_detected()), cpu_isa_name(expected));
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    EXPECT_EQ(cpu_supports(isa), isa <= expected) << cpu_isa_name(isa);
}

TEST(CpuFeatures, NamesRoundTripAndBadNameListsChoices) {
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    EXPECT_EQ(parse_cpu_isa(cpu_isa_name(isa)), isa);
  try {
    parse_cpu_isa("AVX2");  // names are exact, lower case
    FAIL() << "parse_cpu_isa accepted 'AVX2'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'AVX2'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("scalar, avx2, avx512"), std::string::npos) << msg;
  }
}

TEST(CpuFeatures, ForceCapsAndRefusesWhatTheCpuLacks) {
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512}) {
    if (cpu_supports(isa)) {
      force_cpu_isa(isa);
      EXPECT_LE(cpu_isa(), isa);
    } else {
      EXPECT_THROW(force_cpu_isa(isa), Error) << cpu_isa_name(isa);
    }
  }
  force_cpu_isa(std::nullopt);
  EXPECT_LE(cpu_isa(), cpu_isa_detected());
}

}  // namespace
}  // namespace ic
