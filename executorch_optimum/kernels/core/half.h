// IEEE half-precision cache rows: the opt-in 16-bit KV cache stores keys and values as half
// (half the bytes a decode step streams from memory) while every sum stays float32. This header
// converts whole rows both ways; the attention loops widen vectors inline (ring_attention.h).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__) && !defined(EO_NO_RUNTIME_DISPATCH)
#include <immintrin.h>
#define EO_HALF_F16C_DISPATCH 1
#else
#define EO_HALF_F16C_DISPATCH 0
#endif

namespace eo::core {

using half = _Float16;

// The element types a cache may have.
template <class T>
inline constexpr bool kCacheType = std::is_same_v<T, float> || std::is_same_v<T, half>;

// Calls fn(T{}) with T the cache element type the kernels see: half for a float16 cache, else
// float. Both op registrations (PyTorch, ExecuTorch) dispatch through this one switch.
template <class Fn>
inline void with_cache_type(bool is_half, Fn&& fn) {
  if (is_half) {
    fn(half{});
  } else {
    fn(float{});
  }
}

namespace detail {

#if EO_HALF_F16C_DISPATCH
// x86-64 without F16C converts one element at a time in software (a libgcc call each).
inline bool has_f16c() {
  static const bool yes = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return yes;
}

// The vector body of a row conversion, 8 elements at a time; returns how many it converted.
__attribute__((target("avx,f16c"))) inline int64_t convert_f16c(half* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
  }
  return i;
}

__attribute__((target("avx,f16c"))) inline int64_t convert_f16c(float* dst, const half* src, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  return i;
}
#endif

// dst[i] = src[i] as To, i < n, between float and half (F16C's vector body where the CPU has it,
// the compiler's conversion for the rest: the same rounding).
template <class To, class From>
inline void convert_row(To* dst, const From* src, int64_t n) {
  int64_t i = 0;
#if EO_HALF_F16C_DISPATCH
  if (has_f16c()) {
    i = convert_f16c(dst, src, n);
  }
#endif
  for (; i < n; ++i) {
    dst[i] = static_cast<To>(src[i]);
  }
}

}  // namespace detail

// dst[i] = src[i] as T (half: round to nearest even; out of range becomes +-inf), i < n.
template <class T>
inline void store_row(T* dst, const float* src, int64_t n) {
  static_assert(kCacheType<T>, "caches are float or half");
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
  } else {
    detail::convert_row(dst, src, n);
  }
}

// dst[i] = src[i] as float, i < n (exact).
inline void widen_row(float* dst, const half* src, int64_t n) {
  detail::convert_row(dst, src, n);
}

}  // namespace eo::core
