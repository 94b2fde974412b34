#pragma once
// Runs a CPU kernel written over a 16-lane vector type (ops/simd.h) in the build for the ISA
// cpu_isa() picks: AVX-512 with v16f, AVX2 with f32x16 (two v8f), else baseline x86-64 with
// f32x16. Each instantiation is compiled with its target attribute, so GCC uses that ISA's
// registers inside it; IC_CPU_ISA and force_cpu_isa() select the path (tests run all of them).
//
//   IC_SIMD_DISPATCH(name, template_kernel)  defines  void name(Args...)  calling
//   template_kernel<V>(args...) for the right V.
#include "core/cpu_features.h"
#include "ops/simd.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define IC_SIMD_DISPATCH(name, kernel)                                                        \
  template <class... A>                                                                       \
  __attribute__((target("arch=x86-64-v4"))) decltype(auto) name##_avx512(A&&... a) {          \
    return kernel<::ic::ops::v16f>(static_cast<A&&>(a)...);                                  \
  }                                                                                           \
  template <class... A>                                                                       \
  __attribute__((target("arch=x86-64-v3"))) decltype(auto) name##_avx2(A&&... a) {            \
    return kernel<::ic::ops::f32x16>(static_cast<A&&>(a)...);                                \
  }                                                                                           \
  template <class... A>                                                                       \
  decltype(auto) name##_base(A&&... a) {                                                      \
    return kernel<::ic::ops::f32x16>(static_cast<A&&>(a)...);                                \
  }                                                                                           \
  template <class... A>                                                                       \
  decltype(auto) name(A&&... a) {                                                             \
    switch (::ic::cpu_isa()) {                                                                \
      case ::ic::CpuIsa::Avx512: return name##_avx512(static_cast<A&&>(a)...);                \
      case ::ic::CpuIsa::Avx2: return name##_avx2(static_cast<A&&>(a)...);                    \
      default: return name##_base(static_cast<A&&>(a)...);                                    \
    }                                                                                         \
  }
#else
#define IC_SIMD_DISPATCH(name, kernel)                              \
  template <class... A>                                             \
  decltype(auto) name(A&&... a) {                                   \
    return kernel<::ic::ops::f32x16>(static_cast<A&&>(a)...);      \
  }
#endif
