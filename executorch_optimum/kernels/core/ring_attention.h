// Ring-buffer KV cache update and sliding-window attention over the ring, on raw float buffers.
// Portable: no torch, no ExecuTorch types. Registered for PyTorch in torch_ops.cpp and for the
// ExecuTorch runtime in et_kernels.cpp.
//
// Layout (the one ExecuTorch's llama::update_cache / custom_sdpa use): value and query are
// [B, S, H, D], caches are [B, C, H, D] (C = ring capacity); the last dim must be contiguous,
// the other dims may have any strides.
//
// Slot positions are not stored: they are derived from the end position. The contract is that
// a ring's rows were written by ring_update_cache calls whose positions run 0, 1, 2, ... in
// order (any chunking; a call with start_pos = 0 starts a new sequence). Then, after a call
// that wrote positions [start_pos, end), slot s holds the largest absolute position
// p < end with p = s (mod C), or nothing when that p is negative (see ring_slot_position).
// So the ring holds exactly the positions [max(0, end - C), end).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string_view>
#include <vector>

#include "executorch_optimum/kernels/core/half.h"

namespace eo::core {

// Element strides of the first three dims of a [B, S or C, H, D] tensor (dim 3 has stride 1).
struct Strides3 {
  int64_t b;
  int64_t s;
  int64_t h;
};

// Largest head dim the attention kernel accepts.
inline constexpr int64_t kMaxHeadDim = 1024;

// Absolute position held by ring slot `slot` (0 <= slot < capacity) once positions [0, end)
// have been written in order into a ring of `capacity` slots; -1 if the slot is still empty.
inline int64_t ring_slot_position(int64_t end, int64_t capacity, int64_t slot) {
  if (end <= 0) {
    return -1;
  }
  const int64_t last = end - 1;
  const int64_t back = ((last - slot) % capacity + capacity) % capacity;
  const int64_t p = last - back;
  return p >= 0 ? p : -1;
}

// Writes value rows i = 0..S-1 (absolute positions start_pos + i) into slot (start_pos + i) % C.
// When S > C, rows 0..S-C-1 would be overwritten within this same call: only the last C rows
// are written, each slot exactly once, so the result does not depend on write order. A half
// cache (T = half) stores each value rounded to nearest.
template <class T>
inline void ring_update_cache(const float* value, Strides3 vs, T* cache, Strides3 cs, int64_t B, int64_t S,
                              int64_t H, int64_t D, int64_t C, int64_t start_pos) {
  const int64_t first = S > C ? S - C : 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = first; i < S; ++i) {
      const int64_t slot = (start_pos + i) % C;
      for (int64_t h = 0; h < H; ++h) {
        store_row(cache + b * cs.b + slot * cs.s + h * cs.h, value + b * vs.b + i * vs.s + h * vs.h, D);
      }
    }
  }
}

struct RingSdpaShape {
  int64_t B;    // batch
  int64_t S;    // queries in this call
  int64_t Hq;   // query heads
  int64_t Hkv;  // key/value heads (Hq % Hkv == 0; query head h reads kv head h / (Hq / Hkv))
  int64_t D;    // head dim
  int64_t C;    // ring capacity
};

struct RingSdpaParams {
  int64_t start_pos;  // absolute position of query 0
  int64_t window;     // query p sees keys q with p - window < q <= p; window <= 0: no limit
  float scale;        // score = scale * <q, k>
  float softcap;      // > 0: score = softcap * tanh(score / softcap) before softmax; 0: off
};

// Null when the arguments are valid, else a message naming the problem.
inline const char* check_ring_update(int64_t value_dims, int64_t cache_dims, const int64_t* value_sizes,
                                     const int64_t* cache_sizes, int64_t start_pos) {
  if (value_dims != 4 || cache_dims != 4) {
    return "value and cache must be 4-D: [B, S, H, D] and [B, C, H, D]";
  }
  if (value_sizes[0] != cache_sizes[0] || value_sizes[2] != cache_sizes[2] ||
      value_sizes[3] != cache_sizes[3]) {
    return "value [B, S, H, D] and cache [B, C, H, D] must agree in B, H and D";
  }
  if (cache_sizes[1] < 1) {
    return "the cache must have at least one slot";
  }
  if (start_pos < 0) {
    return "start_pos must be >= 0";
  }
  return nullptr;
}

inline const char* check_ring_sdpa(int64_t q_dims, int64_t k_dims, int64_t v_dims, const int64_t* q_sizes,
                                   const int64_t* k_sizes, const int64_t* v_sizes,
                                   const RingSdpaParams& p) {
  if (q_dims != 4 || k_dims != 4 || v_dims != 4) {
    return "query, k_cache and v_cache must be 4-D: [B, S, Hq, D], [B, C, Hkv, D], [B, C, Hkv, D]";
  }
  for (int d = 0; d < 4; ++d) {
    if (k_sizes[d] != v_sizes[d]) {
      return "k_cache and v_cache must have the same shape";
    }
  }
  if (q_sizes[0] != k_sizes[0] || q_sizes[3] != k_sizes[3]) {
    return "query and caches must agree in batch and head dim";
  }
  if (k_sizes[1] < 1 || k_sizes[2] < 1 || q_sizes[2] % k_sizes[2] != 0) {
    return "query heads must be a multiple of kv heads, and the cache must have at least one slot";
  }
  if (q_sizes[3] > kMaxHeadDim) {
    return "head dim too large (max 1024)";
  }
  if (p.start_pos < 0) {
    return "start_pos must be >= 0";
  }
  if (!(p.softcap >= 0.0f)) {
    return "softcap must be >= 0 (0 turns it off)";
  }
  return nullptr;
}

// First absolute key position query `pos` attends to; it attends to [ring_window_lo(...), pos].
// Empty (lo > pos) only when pos itself was overwritten within the call (S > C).
inline int64_t ring_window_lo(int64_t pos, int64_t end, int64_t capacity, int64_t window) {
  int64_t lo = std::max<int64_t>(0, end - capacity);
  if (window > 0) {
    lo = std::max(lo, pos - window + 1);
  }
  return lo;
}

namespace detail {

#if !defined(__GNUC__) && !defined(__clang__)
#error "eo kernels use GCC/Clang vector extensions"
#endif

// The SIMD helpers are templates on a GCC/Clang vector type V (vf4 = one SSE/NEON register; on
// x86-64 also vf8 = one AVX2 register and vf16 = one AVX-512 register, picked at run time) and
// always inlined into the function that picks V, so each instantiation is compiled for that
// function's instruction set. Head dims that are not a multiple of the vector width take a
// scalar tail. Needs GCC >= 12 or Clang (__builtin_shufflevector).
#define EO_ALWAYS_INLINE __attribute__((always_inline))
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // 32-byte vectors only cross always-inlined calls
#endif

typedef float vf4 __attribute__((vector_size(16)));

template <class V>
inline constexpr int64_t kLanes = static_cast<int64_t>(sizeof(V) / sizeof(float));

template <class V>
EO_ALWAYS_INLINE inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <class V>
EO_ALWAYS_INLINE inline void store(float* p, V v) {
  std::memcpy(p, &v, sizeof(v));
}

// A vector of cache elements as floats: a plain load from a float cache; from a half cache one
// widening load (vcvtph2ps; asm because the intrinsics cannot inline through these templates,
// which carry no target attribute of their own). x86's 128-bit path may lack F16C and widens
// element by element, as other targets do (where the compiler has a native conversion).
template <class V>
EO_ALWAYS_INLINE inline V load_kv(const float* p) {
  return load<V>(p);
}

template <class V>
EO_ALWAYS_INLINE inline V load_kv(const half* p) {
  V v;
  for (int64_t i = 0; i < kLanes<V>; ++i) {
    v[i] = static_cast<float>(p[i]);
  }
  return v;
}

inline constexpr int64_t kKeyBlock = 64;  // keys per online-softmax step
inline constexpr int64_t kRowTarget = 32; // query rows sharing one pass over the keys
inline constexpr int64_t kTransposeRows = 8;  // from this many rows a key block is transposed

// The int32 vector with V's lane count (exp builds 2^n from exponent bits).
template <class V>
struct IntOf;
typedef int32_t vi4 __attribute__((vector_size(16)));
template <>
struct IntOf<vf4> {
  using type = vi4;
};
template <class V>
using IntVec = typename IntOf<V>::type;

// Lane i of *out = the sum of the lanes of a[i] (a transpose-and-add: log2(L) rounds of
// pairwise shuffles instead of one horizontal sum per vector).
EO_ALWAYS_INLINE inline void sum_lanes_each(const vf4* a, vf4* out) {
  const vf4 x0 = __builtin_shufflevector(a[0], a[1], 0, 4, 2, 6) + __builtin_shufflevector(a[0], a[1], 1, 5, 3, 7);
  const vf4 x1 = __builtin_shufflevector(a[2], a[3], 0, 4, 2, 6) + __builtin_shufflevector(a[2], a[3], 1, 5, 3, 7);
  *out = __builtin_shufflevector(x0, x1, 0, 1, 4, 5) + __builtin_shufflevector(x0, x1, 2, 3, 6, 7);
}

#if defined(__x86_64__) && !defined(EO_NO_RUNTIME_DISPATCH)
#define EO_X86_DISPATCH 1
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef int32_t vi16 __attribute__((vector_size(64)));
template <>
struct IntOf<vf8> {
  using type = vi8;
};
template <>
struct IntOf<vf16> {
  using type = vi16;
};

// Widening loads for the AVX2 (F16C) and AVX-512 paths; see load_kv.
template <>
EO_ALWAYS_INLINE inline vf8 load_kv<vf8>(const half* p) {
  vf8 v;
  asm("vcvtph2ps %1, %0" : "=x"(v) : "m"(*reinterpret_cast<const char(*)[16]>(p)));
  return v;
}

template <>
EO_ALWAYS_INLINE inline vf16 load_kv<vf16>(const half* p) {
  vf16 v;
  asm("vcvtph2ps %1, %0" : "=v"(v) : "m"(*reinterpret_cast<const char(*)[32]>(p)));
  return v;
}

EO_ALWAYS_INLINE inline void sum_lanes_each(const vf8* a, vf8* out) {
  vf8 x[4];
  for (int i = 0; i < 4; ++i) {
    x[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 8, 2, 10, 4, 12, 6, 14) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
  }
  vf8 y[2];
  for (int i = 0; i < 2; ++i) {
    y[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
           __builtin_shufflevector(x[2 * i], x[2 * i + 1], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  *out = __builtin_shufflevector(y[0], y[1], 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(y[0], y[1], 4, 5, 6, 7, 12, 13, 14, 15);
}

EO_ALWAYS_INLINE inline void sum_lanes_each(const vf16* a, vf16* out) {
  vf16 x[8];
  for (int i = 0; i < 8; ++i) {
    x[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14,
                                   30) +
           __builtin_shufflevector(a[2 * i], a[2 * i + 1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15,
                                   31);
  }
  vf16 y[4];
  for (int i = 0; i < 4; ++i) {
    y[i] = __builtin_shufflevector(x[2 * i], x[2 * i + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28,
                                   29) +
           __builtin_shufflevector(x[2 * i], x[2 * i + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30,
                                   31);
  }
  vf16 w[2];
  for (int i = 0; i < 2; ++i) {
    w[i] = __builtin_shufflevector(y[2 * i], y[2 * i + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26,
                                   27) +
           __builtin_shufflevector(y[2 * i], y[2 * i + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30,
                                   31);
  }
  *out = __builtin_shufflevector(w[0], w[1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
         __builtin_shufflevector(w[0], w[1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
}
#else
#define EO_X86_DISPATCH 0
#endif

// out[j] = <q, k[j]> for j < count (count <= kLanes<V>).
template <class V>
EO_ALWAYS_INLINE inline void dot_keys(const float* q, const float* const* k, int64_t count, int64_t D, float* out) {
  constexpr int64_t L = kLanes<V>;
  const int64_t body = D / L * L;
  // One key at a time (one row pointer live, no spills); missing keys stay zero.
  V acc[L];
#pragma GCC unroll 16  // keeps the accumulators in registers
  for (int64_t j = 0; j < L; ++j) {
    V a = {};
    if (j < count) {
      for (int64_t d = 0; d < body; d += L) {
        a += load<V>(q + d) * load<V>(k[j] + d);
      }
    }
    acc[j] = a;
  }
  V sums;
  sum_lanes_each(acc, &sums);
  for (int64_t d = body; d < D; ++d) {
    for (int64_t j = 0; j < count; ++j) {
      sums[j] += q[d] * k[j][d];
    }
  }
  if (count == L) {
    store<V>(out, sums);  // a whole block: one vector store, not an inlined memcpy
    return;
  }
  for (int64_t j = 0; j < count; ++j) {
    out[j] = sums[j];
  }
}

// Vectors of keys per pass of scores_4rows: 4 rows x kChunks<V> accumulators stay in registers.
// A pass (kChunks<V> * kLanes<V> keys) divides kKeyBlock.
template <class V>
inline constexpr int64_t kChunks = kLanes<V> >= 16 ? 4 : 2;
static_assert(kKeyBlock % (kChunks<vf4> * kLanes<vf4>) == 0);
#if EO_X86_DISPATCH
static_assert(kKeyBlock % (kChunks<vf8> * kLanes<vf8>) == 0 && kKeyBlock % (kChunks<vf16> * kLanes<vf16>) == 0);
#endif

// s[r][j] = <q[r], key j> for four rows and the keys j in [c0 * L, c1 * L) of a block stored
// transposed (kt[d * kKeyBlock + j]): a 4 x (kChunks * L) register tile per pass, one broadcast
// and kChunks vector loads per d. Prefill's rows share the block, so the transpose pays off.
template <class V>
EO_ALWAYS_INLINE inline void scores_4rows(const float* const* q, const float* kt, int64_t c0, int64_t c1, int64_t D,
                                          float* const* s) {
  constexpr int64_t L = kLanes<V>;
  constexpr int64_t P = kChunks<V>;
  for (int64_t c = c0; c < c1; c += P) {
    V acc[4][P] = {};
    const float* base = kt + c * L;
    for (int64_t d = 0; d < D; ++d) {
      V k[P];
#pragma GCC unroll 4
      for (int64_t i = 0; i < P; ++i) {
        k[i] = load<V>(base + d * kKeyBlock + i * L);
      }
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const V qb = V{} + q[r][d];
#pragma GCC unroll 4
        for (int64_t i = 0; i < P; ++i) {
          acc[r][i] += qb * k[i];
        }
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r) {
#pragma GCC unroll 4
      for (int64_t i = 0; i < P; ++i) {
        store<V>(s[r] + (c + i) * L, acc[r][i]);
      }
    }
  }
}

// kt[d * kKeyBlock + j] = k[j][d] for j < n (n <= kKeyBlock), in 4 x 4 register tiles: cache rows
// are often 4 KiB apart, which a scalar column walk thrashes in L1. Columns n .. n+3 may be filled
// with copies of key 0 (their scores are never read).
EO_ALWAYS_INLINE inline void transpose_keys(const float* const* k, int64_t n, int64_t D, float* kt) {
  for (int64_t j0 = 0; j0 < n; j0 += 4) {
    const float* r[4];
    for (int64_t i = 0; i < 4; ++i) {
      r[i] = k[j0 + i < n ? j0 + i : 0];
    }
    int64_t d = 0;
    for (; d + 4 <= D; d += 4) {
      const vf4 a = load<vf4>(r[0] + d), b = load<vf4>(r[1] + d), c = load<vf4>(r[2] + d), e = load<vf4>(r[3] + d);
      const vf4 t0 = __builtin_shufflevector(a, b, 0, 4, 1, 5), t1 = __builtin_shufflevector(a, b, 2, 6, 3, 7);
      const vf4 t2 = __builtin_shufflevector(c, e, 0, 4, 1, 5), t3 = __builtin_shufflevector(c, e, 2, 6, 3, 7);
      float* out = kt + d * kKeyBlock + j0;
      store<vf4>(out, __builtin_shufflevector(t0, t2, 0, 1, 4, 5));
      store<vf4>(out + kKeyBlock, __builtin_shufflevector(t0, t2, 2, 3, 6, 7));
      store<vf4>(out + 2 * kKeyBlock, __builtin_shufflevector(t1, t3, 0, 1, 4, 5));
      store<vf4>(out + 3 * kKeyBlock, __builtin_shufflevector(t1, t3, 2, 3, 6, 7));
    }
    for (; d < D; ++d) {
      for (int64_t i = 0; i < 4; ++i) {
        kt[d * kKeyBlock + j0 + i] = r[i][d];
      }
    }
  }
}

// exp(x) lane-wise for x <= 0 (scores minus their running max): 2^n * e^r with |r| <= ln2/2 and
// a degree-7 Taylor polynomial (relative error < 1e-8 before float rounding); x below -87 gives
// e^-87 (~1e-38) instead of a denormal or zero, which no softmax sum can notice.
template <class V>
EO_ALWAYS_INLINE inline V exp_nonpositive(V x) {
  const V lo = V{} - 87.0f;
  x = x < lo ? lo : x;
  const V round = V{} + 12582912.0f;  // 1.5 * 2^23: adding and subtracting rounds to an integer
  const V n = (x * 1.44269504088896341f + round) - round;
  const V r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  V p = V{} + (1.0f / 5040.0f);
  p = p * r + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const IntVec<V> bits = (__builtin_convertvector(n, IntVec<V>) + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// s[j] *= scale for j in [a, b]; returns the largest (vector body, scalar tail; the same
// products and the same max as one scalar pass).
template <class V>
EO_ALWAYS_INLINE inline float scale_and_max(float* s, int64_t a, int64_t b, float scale) {
  constexpr int64_t L = kLanes<V>;
  float top = -std::numeric_limits<float>::infinity();
  int64_t j = a;
  if (b + 1 - a >= L) {
    V vmax = V{} + top;
    for (; j + L <= b + 1; j += L) {
      const V x = load<V>(s + j) * scale;
      store<V>(s + j, x);
      vmax = x > vmax ? x : vmax;
    }
    for (int64_t i = 0; i < L; ++i) {
      top = std::max(top, vmax[i]);
    }
  }
  for (; j <= b; ++j) {
    s[j] *= scale;
    top = std::max(top, s[j]);
  }
  return top;
}

// w[j] = exp(s[j] - m) for j in [a, b] (vector body, scalar-width tail through a padded vector).
template <class V>
EO_ALWAYS_INLINE inline float exp_shifted(float* s, int64_t a, int64_t b, float m) {
  constexpr int64_t L = kLanes<V>;
  V total = {};
  int64_t j = a;
  for (; j + L <= b + 1; j += L) {
    const V w = exp_nonpositive<V>(load<V>(s + j) - m);
    store<V>(s + j, w);
    total += w;
  }
  float sum = 0.0f;
  for (int64_t i = 0; i < L; ++i) {
    sum += total[i];
  }
  if (j <= b) {
    const int64_t rest = b + 1 - j;
    float tail[L];
    for (int64_t i = 0; i < L; ++i) {
      tail[i] = i < rest ? s[j + i] - m : 0.0f;
    }
    const V w = exp_nonpositive<V>(load<V>(tail));
    for (int64_t i = 0; i < rest; ++i) {
      s[j + i] = w[i];
      sum += w[i];
    }
  }
  return sum;
}

// acc[r] += sum_j w[r][j] * v[j] for R <= 4 rows, keys j in [ja, jb]: each value row is loaded
// once for all R rows.
template <class V, int R>
EO_ALWAYS_INLINE inline void axpy_rows(float* const* acc, const float* const* w, const float* const* vrows,
                                       int64_t ja, int64_t jb, int64_t D) {
  constexpr int64_t L = kLanes<V>;
  int64_t d = 0;
  for (; d + 2 * L <= D; d += 2 * L) {
    V a[R], b[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      a[r] = load<V>(acc[r] + d);
      b[r] = load<V>(acc[r] + d + L);
    }
    for (int64_t j = ja; j <= jb; ++j) {
      const V v0 = load<V>(vrows[j] + d);
      const V v1 = load<V>(vrows[j] + d + L);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        a[r] += w[r][j] * v0;
        b[r] += w[r][j] * v1;
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      store<V>(acc[r] + d, a[r]);
      store<V>(acc[r] + d + L, b[r]);
    }
  }
  for (; d < D; ++d) {
    for (int64_t j = ja; j <= jb; ++j) {
      for (int r = 0; r < R; ++r) {
        acc[r][d] += w[r][j] * vrows[j][d];
      }
    }
  }
}

// axpy_rows for the first `real` rows of a group of four (the rest are padding).
template <class V>
EO_ALWAYS_INLINE inline void axpy_group(int64_t real, float* const* acc, const float* const* w,
                                        const float* const* vrows, int64_t ja, int64_t jb, int64_t D) {
  switch (real) {
    case 1:
      axpy_rows<V, 1>(acc, w, vrows, ja, jb, D);
      break;
    case 2:
      axpy_rows<V, 2>(acc, w, vrows, ja, jb, D);
      break;
    case 3:
      axpy_rows<V, 3>(acc, w, vrows, ja, jb, D);
      break;
    default:
      axpy_rows<V, 4>(acc, w, vrows, ja, jb, D);
      break;
  }
}

// The cache rows (keys and values, every kv head) of the positions a thread scores next, handed
// to the memory a few cache lines per scored key while the current rows are scored, so that
// they stream in under the arithmetic instead of after it. Prefetches change no result.
// Measured alternating decode steps in one SmolLM2 8da4w program (Intel Xeon, 2 threads):
// 1.004x at 40 cache positions, 1.016x at 128, 1.046x at 600; with more but smaller parts
// instead, 0.95x.
struct RowPrefetch {
  RowPrefetch() = default;
  // Rows of positions [lo, hi] (slots lo % C onwards), spread over `scored_keys` key visits.
  RowPrefetch(const float* k, Strides3 ks, const float* v, Strides3 vs, int64_t Hkv, int64_t D, int64_t C,
              int64_t lo, int64_t hi, int64_t scored_keys)
      : base_{reinterpret_cast<const char*>(k), reinterpret_cast<const char*>(v)},
        slot_bytes_{ks.s * static_cast<int64_t>(sizeof(float)), vs.s * static_cast<int64_t>(sizeof(float))},
        row_bytes_(((Hkv - 1) * std::max(ks.h, vs.h) + D) * static_cast<int64_t>(sizeof(float))),
        C_(C),
        slot_(lo % C),
        left_(hi - lo + 1) {
    const int64_t lines = left_ * ((row_bytes_ + kLine - 1) / kLine);
    per_key_ = scored_keys > 0 ? (lines + scored_keys - 1) / scored_keys : lines;
  }

  // Hands over the lines due for `keys` scored keys.
  EO_ALWAYS_INLINE void after_keys(int64_t keys) {
    for (int64_t n = per_key_ * keys; n > 0 && left_ > 0; --n) {
      __builtin_prefetch(base_[0] + slot_ * slot_bytes_[0] + offset_, 0, 3);
      __builtin_prefetch(base_[1] + slot_ * slot_bytes_[1] + offset_, 0, 3);
      offset_ += kLine;
      if (offset_ >= row_bytes_) {
        offset_ = 0;
        slot_ = slot_ + 1 == C_ ? 0 : slot_ + 1;
        --left_;
      }
    }
  }

 private:
  static constexpr int64_t kLine = 64;
  const char* base_[2] = {nullptr, nullptr};  // keys, values of one batch row
  int64_t slot_bytes_[2] = {0, 0};
  int64_t row_bytes_ = 0;  // one position's span over every kv head
  int64_t C_ = 1;
  int64_t slot_ = 0;  // the next position's slot
  int64_t left_ = 0;  // positions not yet handed over
  int64_t offset_ = 0;
  int64_t per_key_ = 0;
};

// One work item: `rows` query rows (a tile of queries x a subgroup of the query heads that share
// kv head `hkv`) against their key intervals, with an online softmax per row.
struct RowSet {
  std::vector<const float*> q;  // query row pointers (padded to a multiple of 4)
  std::vector<float*> out;      // output row pointers (null for padding)
  std::vector<int64_t> lo, hi;  // inclusive absolute key positions each row attends to
  std::vector<float> acc, scores, m, l;
  std::vector<const float*> krows, vrows;
  std::vector<float> kt;  // the key block transposed [D][kKeyBlock] (many rows only)
  // Score through transposed key blocks. Set by the caller from all the rows of a (kv head,
  // query tile), not the rows of one item: the two paths round differently, and items split
  // by thread count must give the same bits.
  bool transpose_keys = false;
  RowPrefetch* prefetch = nullptr;  // rows to prefetch while scoring (decode), or none
};

template <class V>
EO_ALWAYS_INLINE inline void attend_rows(RowSet& rs, int64_t rows, const float* kbase, const float* vbase,
                                         int64_t k_step, int64_t v_step, int64_t D, int64_t C,
                                         const RingSdpaParams& p) {
  const int64_t padded = (rows + 3) / 4 * 4;
  rs.acc.assign(static_cast<std::size_t>(padded * D), 0.0f);
  rs.scores.assign(static_cast<std::size_t>(padded * kKeyBlock), 0.0f);
  rs.m.assign(static_cast<std::size_t>(padded), -std::numeric_limits<float>::infinity());
  rs.l.assign(static_cast<std::size_t>(padded), 0.0f);
  rs.krows.resize(kKeyBlock);
  rs.vrows.resize(kKeyBlock);
  // Few rows (decode): dot products straight from the cache rows. Many rows (prefill): transpose
  // each key block once, then register-tiled scores.
  const bool transposed = rs.transpose_keys;
  if (transposed) {
    rs.kt.assign(static_cast<std::size_t>(D * kKeyBlock), 0.0f);
  }
  int64_t first = std::numeric_limits<int64_t>::max();
  int64_t last = std::numeric_limits<int64_t>::min();
  for (int64_t r = 0; r < rows; ++r) {
    if (rs.lo[r] <= rs.hi[r]) {
      first = std::min(first, rs.lo[r]);
      last = std::max(last, rs.hi[r]);
    }
  }
  for (int64_t t0 = first; t0 <= last; t0 += kKeyBlock) {
    const int64_t n = std::min(kKeyBlock, last - t0 + 1);
    int64_t slot = t0 % C;
    for (int64_t j = 0; j < n; ++j) {
      rs.krows[j] = kbase + slot * k_step;
      rs.vrows[j] = vbase + slot * v_step;
      slot = slot + 1 == C ? 0 : slot + 1;
    }
    if (transposed) {
      transpose_keys(rs.krows.data(), n, D, rs.kt.data());
    }
    for (int64_t r0 = 0; r0 < padded; r0 += 4) {
      // Block-local key range [ja, jb] each row of this group of four attends to.
      int64_t ja[4], jb[4];
      int64_t ga = n, gb = -1;
      for (int u = 0; u < 4; ++u) {
        const int64_t r = r0 + u;
        ja[u] = r < rows ? std::max<int64_t>(0, rs.lo[r] - t0) : n;
        jb[u] = r < rows ? std::min<int64_t>(n - 1, rs.hi[r] - t0) : -1;
        if (ja[u] <= jb[u]) {
          ga = std::min(ga, ja[u]);
          gb = std::max(gb, jb[u]);
        }
      }
      if (ga > gb) {
        continue;
      }
      float* srows[4];
      float* arows[4];
      for (int u = 0; u < 4; ++u) {
        srows[u] = rs.scores.data() + (r0 + u) * kKeyBlock;
        arows[u] = rs.acc.data() + (r0 + u) * D;
      }
      if (transposed) {
        const float* qrows[4] = {rs.q[r0], rs.q[r0 + 1], rs.q[r0 + 2], rs.q[r0 + 3]};
        // Whole passes of kChunks vectors covering [ga, gb]; kKeyBlock is a multiple of a pass.
        constexpr int64_t pass = kChunks<V> * kLanes<V>;
        scores_4rows<V>(qrows, rs.kt.data(), ga / pass * kChunks<V>, (gb / pass + 1) * kChunks<V>, D, srows);
      }
      for (int u = 0; u < 4; ++u) {
        float* s = srows[u];
        const int64_t r = r0 + u;
        if (ja[u] > jb[u]) {
          std::fill(s + ga, s + gb + 1, 0.0f);  // no key for this row here: zero weights
          continue;
        }
        if (!transposed) {
          for (int64_t j = ja[u]; j <= jb[u]; j += kLanes<V>) {
            const int64_t count = std::min(kLanes<V>, jb[u] + 1 - j);
            dot_keys<V>(rs.q[r], rs.krows.data() + j, count, D, s + j);
            if (rs.prefetch != nullptr) {
              rs.prefetch->after_keys(count);
            }
          }
        }
        float block_max = -std::numeric_limits<float>::infinity();
        if (p.softcap > 0.0f) {
          for (int64_t j = ja[u]; j <= jb[u]; ++j) {
            const float x = p.softcap * std::tanh(p.scale * s[j] / p.softcap);
            s[j] = x;
            block_max = std::max(block_max, x);
          }
        } else {
          block_max = scale_and_max<V>(s, ja[u], jb[u], p.scale);
        }
        const float new_m = std::max(rs.m[r], block_max);
        if (rs.l[r] > 0.0f && new_m > rs.m[r]) {
          const float corr = std::exp(rs.m[r] - new_m);
          rs.l[r] *= corr;
          float* acc = arows[u];
          for (int64_t d = 0; d < D; ++d) {
            acc[d] *= corr;
          }
        }
        rs.m[r] = new_m;
        std::fill(s + ga, s + ja[u], 0.0f);  // keys of the group this row does not see
        std::fill(s + jb[u] + 1, s + gb + 1, 0.0f);
        rs.l[r] += exp_shifted<V>(s, ja[u], jb[u], new_m);
      }
      axpy_group<V>(std::min<int64_t>(4, rows - r0), arows, srows, rs.vrows.data(), ga, gb, D);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = rs.l[r] > 0.0f ? 1.0f / rs.l[r] : 0.0f;
    const float* a = rs.acc.data() + r * D;
    float* o = rs.out[r];
    int64_t d = 0;
    for (; d + kLanes<V> <= D; d += kLanes<V>) {
      store<V>(o + d, load<V>(a + d) * inv);
    }
    for (; d < D; ++d) {
      o[d] = a[d] * inv;
    }
  }
}


#if EO_X86_DISPATCH
__attribute__((target("avx2,fma,f16c"))) inline void attend_rows_avx2(RowSet& rs, int64_t rows, const float* kbase,
                                                                  const float* vbase, int64_t k_step,
                                                                  int64_t v_step, int64_t D, int64_t C,
                                                                  const RingSdpaParams& p) {
  attend_rows<vf8>(rs, rows, kbase, vbase, k_step, v_step, D, C, p);
}

__attribute__((target("avx512f"))) inline void attend_rows_avx512(RowSet& rs, int64_t rows, const float* kbase,
                                                                   const float* vbase, int64_t k_step,
                                                                   int64_t v_step, int64_t D, int64_t C,
                                                                   const RingSdpaParams& p) {
  attend_rows<vf16>(rs, rows, kbase, vbase, k_step, v_step, D, C, p);
}
#endif

enum class Simd { kGeneric, kAvx2, kAvx512 };

// The vector path this process takes: the widest the CPU has (x86-64: AVX-512F, else AVX2+FMA+F16C;
// other targets: 128-bit vf4). EO_KERNELS_SIMD=generic|avx2 in the environment caps it (tests
// run every path on one machine). Chosen once per process.
inline Simd simd_path() {
#if EO_X86_DISPATCH
  static const Simd path = [] {
    const char* cap = std::getenv("EO_KERNELS_SIMD");
    const std::string_view want = cap == nullptr ? "avx512" : cap;
    const bool avx2 =
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (want == "generic" || !avx2) {
      return Simd::kGeneric;
    }
    if (want == "avx2" || !__builtin_cpu_supports("avx512f")) {
      return Simd::kAvx2;
    }
    return Simd::kAvx512;
  }();
  return path;
#else
  return Simd::kGeneric;
#endif
}

inline const char* simd_name() {
  switch (simd_path()) {
    case Simd::kAvx512:
      return "avx512f (runtime dispatch)";
    case Simd::kAvx2:
      return "avx2+fma (runtime dispatch)";
    default:
      return "128-bit vectors (SSE/NEON)";
  }
}

inline void attend_rows_any(RowSet& rs, int64_t rows, const float* kbase, const float* vbase, int64_t k_step,
                            int64_t v_step, int64_t D, int64_t C, const RingSdpaParams& p) {
#if EO_X86_DISPATCH
  switch (simd_path()) {
    case Simd::kAvx512:
      attend_rows_avx512(rs, rows, kbase, vbase, k_step, v_step, D, C, p);
      return;
    case Simd::kAvx2:
      attend_rows_avx2(rs, rows, kbase, vbase, k_step, v_step, D, C, p);
      return;
    default:
      break;
  }
#endif
  attend_rows<vf4>(rs, rows, kbase, vbase, k_step, v_step, D, C, p);
}

// Keys scored together by qk_rows: kScoreKeys<V> x R accumulators (and the key and query
// vectors) stay in registers; independent sums, so the adds overlap instead of each waiting on
// the one before (one key at a time, a decode step waited on the add latency).
template <class V>
inline constexpr int kScoreKeys = kLanes<V> >= 16 ? 4 : 2;

// a[r][k] = <q row r, key row kh[k]> summed lane-wise over the vector body of D, for R <= 4
// query rows sharing K key rows: each key vector is loaded once for all rows. Each (row, key)'s
// products are added in d order into one accumulator, as dot_keys does, so its scores have
// dot_keys' bits. Row r, key k goes to out + r * out_step + k * L.
template <class V, int R, int K, class T>
EO_ALWAYS_INLINE inline void qk_rows(const float* q, int64_t q_h, const T* const* kh, int64_t body, float* out,
                                     int64_t out_step) {
  constexpr int64_t L = kLanes<V>;
  V a[R][K] = {};
  for (int64_t d = 0; d < body; d += L) {
    V kv[K];
#pragma GCC unroll 4
    for (int k = 0; k < K; ++k) {
      kv[k] = load_kv<V>(kh[k] + d);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const V qv = load<V>(q + r * q_h + d);
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k) {
        a[r][k] += qv * kv[k];
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int k = 0; k < K; ++k) {
      store<V>(out + r * out_step + k * L, a[r][k]);
    }
  }
}

template <class V, int K, class T>
EO_ALWAYS_INLINE inline void qk_rows_any(int64_t rows, const float* q, int64_t q_h, const T* const* kh,
                                         int64_t body, float* out, int64_t out_step) {
  switch (rows) {
    case 1:
      qk_rows<V, 1, K, T>(q, q_h, kh, body, out, out_step);
      break;
    case 2:
      qk_rows<V, 2, K, T>(q, q_h, kh, body, out, out_step);
      break;
    case 3:
      qk_rows<V, 3, K, T>(q, q_h, kh, body, out, out_step);
      break;
    default:
      qk_rows<V, 4, K, T>(q, q_h, kh, body, out, out_step);
      break;
  }
}

// Where one decode part's keys are (positions lo..hi <= lo + kKeyBlock - 1 of one batch row) and
// where its results go: per query head, the normalised output row, its max and its sum. T is
// the caches' element type (float or half).
template <class T>
struct DecodePart {
  const float* q;  // query head 0; head h at q + h * q_h
  int64_t q_h;
  const T* k;  // this batch row's caches
  const T* v;
  Strides3 ks, vs;
  int64_t lo, hi;
  float* out;  // head h's row at out + h * out_h
  int64_t out_h;
  float* m;  // head h's max at m[h * ml_h], sum at l[h * ml_h]
  float* l;
  int64_t ml_h;
};

// Per-thread buffers of decode_part: scores [Hq][kKeyBlock], lane sums [Hq][L keys][L],
// accumulators [Hq][D].
struct DecodeScratch {
  std::vector<float> scores, lanes, acc;
};

// One decode part in position order: the scores of every query head against each cache row
// (all kv heads of a position are adjacent), then a softmax per head, then the values, again
// row by row. The rows stream from memory in address order while they are used, so the
// reading and the arithmetic overlap, where ring_sdpa_decode's other path walks a part's rows
// first and scores them afterwards. Same arithmetic, in the same order per output element, as
// attend_rows over one key block without transposed keys (up to 4 query heads per kv head):
// there the two paths give the same bits.
template <class V, class T>
EO_ALWAYS_INLINE inline void decode_part(const DecodePart<T>& dp, int64_t Hq, int64_t Hkv, int64_t D, int64_t C,
                                         const RingSdpaParams& p, DecodeScratch& sc) {
  constexpr int64_t L = kLanes<V>;
  constexpr int64_t K = kScoreKeys<V>;
  static_assert(L % K == 0, "score keys must tile a block of lanes");
  const int64_t group = Hq / Hkv;
  const int64_t n = dp.hi - dp.lo + 1;
  const int64_t body = D / L * L;
  const int64_t first_slot = dp.lo % C;
  auto slot_of = [&](int64_t j) {
    const int64_t s = first_slot + j;
    return s >= C ? s - C : s;
  };
  sc.scores.resize(static_cast<std::size_t>(Hq * kKeyBlock));
  sc.lanes.resize(static_cast<std::size_t>(Hq * L * L));
  sc.acc.assign(static_cast<std::size_t>(Hq * D), 0.0f);
  float* lanes = sc.lanes.data();
  // Scores, L keys at a time: lanes[h][i] accumulates key i's products with head h lane-wise;
  // sum_lanes_each then turns a head's L vectors into its L scores (as in dot_keys).
  for (int64_t j0 = 0; j0 < n; j0 += L) {
    const int64_t nj = std::min(L, n - j0);
    for (int64_t i0 = 0; i0 < nj; i0 += K) {
      // Keys past the part score a real row (the part's last) and are zeroed below.
      const T* krow[K];
      for (int64_t k = 0; k < K; ++k) {
        krow[k] = dp.k + slot_of(j0 + std::min(i0 + k, nj - 1)) * dp.ks.s;
      }
      for (int64_t hkv = 0; hkv < Hkv; ++hkv) {
        const T* kh[K];
        for (int64_t k = 0; k < K; ++k) {
          kh[k] = krow[k] + hkv * dp.ks.h;
        }
        for (int64_t h0 = hkv * group; h0 < (hkv + 1) * group; h0 += 4) {
          const int64_t rows = std::min<int64_t>(4, (hkv + 1) * group - h0);
          qk_rows_any<V, K, T>(rows, dp.q + h0 * dp.q_h, dp.q_h, kh, body, lanes + (h0 * L + i0) * L, L * L);
        }
      }
    }
    for (int64_t i = nj; i < L; ++i) {
      for (int64_t h = 0; h < Hq; ++h) {
        store<V>(lanes + (h * L + i) * L, V{});
      }
    }
    for (int64_t h = 0; h < Hq; ++h) {
      V acc[L];
      for (int64_t i = 0; i < L; ++i) {
        acc[i] = load<V>(lanes + (h * L + i) * L);
      }
      V sums;
      sum_lanes_each(acc, &sums);
      const float* qh = dp.q + h * dp.q_h;
      const int64_t kh = (h / group) * dp.ks.h;
      for (int64_t d = body; d < D; ++d) {
        for (int64_t i = 0; i < nj; ++i) {
          sums[i] += qh[d] * static_cast<float>(dp.k[slot_of(j0 + i) * dp.ks.s + kh + d]);
        }
      }
      float* s = sc.scores.data() + h * kKeyBlock + j0;
      if (nj == L) {
        store<V>(s, sums);
        continue;
      }
      for (int64_t i = 0; i < nj; ++i) {
        s[i] = sums[i];
      }
    }
  }
  for (int64_t h = 0; h < Hq; ++h) {
    float* s = sc.scores.data() + h * kKeyBlock;
    float m = -std::numeric_limits<float>::infinity();
    if (p.softcap > 0.0f) {
      for (int64_t j = 0; j < n; ++j) {
        s[j] = p.softcap * std::tanh(p.scale * s[j] / p.softcap);
        m = std::max(m, s[j]);
      }
    } else {
      m = scale_and_max<V>(s, 0, n - 1, p.scale);
    }
    dp.m[h * dp.ml_h] = m;
    dp.l[h * dp.ml_h] = exp_shifted<V>(s, 0, n - 1, m);
  }
  // Values, kPvRows positions per pass over the accumulators (as axpy_rows: two vectors of a
  // row at a time, keys in order, a scalar tail past the last pair).
  constexpr int64_t kPvRows = 4;
  constexpr int64_t kPvVectors = L >= 16 ? 8 : 4;
  const int64_t vbody = D / (2 * L) * (2 * L);
  for (int64_t j0 = 0; j0 < n; j0 += kPvRows) {
    const int64_t nj = std::min(kPvRows, n - j0);
    const T* vrows[kPvRows];
    for (int64_t i = 0; i < nj; ++i) {
      vrows[i] = dp.v + slot_of(j0 + i) * dp.vs.s;
    }
    for (int64_t h = 0; h < Hq; ++h) {
      const float* w = sc.scores.data() + h * kKeyBlock + j0;
      const int64_t vh = (h / group) * dp.vs.h;
      float* acc = sc.acc.data() + h * D;
      int64_t d = 0;
      // kPvVectors accumulators at a time (independent sums: the adds overlap), then pairs.
      for (; d + kPvVectors * L <= vbody; d += kPvVectors * L) {
        V a[kPvVectors];
#pragma GCC unroll 8
        for (int64_t t = 0; t < kPvVectors; ++t) {
          a[t] = load<V>(acc + d + t * L);
        }
        for (int64_t i = 0; i < nj; ++i) {
#pragma GCC unroll 8
          for (int64_t t = 0; t < kPvVectors; ++t) {
            a[t] += w[i] * load_kv<V>(vrows[i] + vh + d + t * L);
          }
        }
#pragma GCC unroll 8
        for (int64_t t = 0; t < kPvVectors; ++t) {
          store<V>(acc + d + t * L, a[t]);
        }
      }
      for (; d < vbody; d += 2 * L) {
        V a0 = load<V>(acc + d);
        V a1 = load<V>(acc + d + L);
        for (int64_t i = 0; i < nj; ++i) {
          a0 += w[i] * load_kv<V>(vrows[i] + vh + d);
          a1 += w[i] * load_kv<V>(vrows[i] + vh + d + L);
        }
        store<V>(acc + d, a0);
        store<V>(acc + d + L, a1);
      }
      for (; d < D; ++d) {
        for (int64_t i = 0; i < nj; ++i) {
          acc[d] += w[i] * static_cast<float>(vrows[i][vh + d]);
        }
      }
    }
  }
  for (int64_t h = 0; h < Hq; ++h) {
    const float l = dp.l[h * dp.ml_h];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const float* a = sc.acc.data() + h * D;
    float* o = dp.out + h * dp.out_h;
    int64_t d = 0;
    for (; d + L <= D; d += L) {
      store<V>(o + d, load<V>(a + d) * inv);
    }
    for (; d < D; ++d) {
      o[d] = a[d] * inv;
    }
  }
}

#if EO_X86_DISPATCH
template <class T>
__attribute__((target("avx2,fma,f16c"))) inline void decode_part_avx2(const DecodePart<T>& dp, int64_t Hq,
                                                                       int64_t Hkv, int64_t D, int64_t C,
                                                                       const RingSdpaParams& p, DecodeScratch& sc) {
  decode_part<vf8>(dp, Hq, Hkv, D, C, p, sc);
}

template <class T>
__attribute__((target("avx512f"))) inline void decode_part_avx512(const DecodePart<T>& dp, int64_t Hq, int64_t Hkv,
                                                                   int64_t D, int64_t C, const RingSdpaParams& p,
                                                                   DecodeScratch& sc) {
  decode_part<vf16>(dp, Hq, Hkv, D, C, p, sc);
}
#endif

template <class T>
inline void decode_part_any(const DecodePart<T>& dp, int64_t Hq, int64_t Hkv, int64_t D, int64_t C,
                            const RingSdpaParams& p, DecodeScratch& sc) {
#if EO_X86_DISPATCH
  switch (simd_path()) {
    case Simd::kAvx512:
      decode_part_avx512(dp, Hq, Hkv, D, C, p, sc);
      return;
    case Simd::kAvx2:
      decode_part_avx2(dp, Hq, Hkv, D, C, p, sc);
      return;
    default:
      break;
  }
#endif
  decode_part<vf4>(dp, Hq, Hkv, D, C, p, sc);
}

// Softmax over all keys from per-part softmaxes: part c has normalised output o_c, max m_c
// and sum l_c = sum exp(s - m_c); its weight is l_c * exp(m_c - M) with M the largest m_c.
// Rows are (batch, query head) of a single query; out is [B, 1, Hq, D].
inline void merge_key_parts(const float* part_out, const float* part_m, const float* part_l, int64_t parts,
                            const RingSdpaShape& sh, float* out) {
  for (int64_t row = 0; row < sh.B * sh.Hq; ++row) {
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < parts; ++c) {
      if (part_l[row * parts + c] > 0.0f) {
        top = std::max(top, part_m[row * parts + c]);
      }
    }
    float* o = out + row * sh.D;
    std::fill(o, o + sh.D, 0.0f);
    float total = 0.0f;
    for (int64_t c = 0; c < parts; ++c) {
      const float l = part_l[row * parts + c];
      if (l <= 0.0f) {
        continue;
      }
      const float w = l * std::exp(part_m[row * parts + c] - top);
      total += w;
      const float* src = part_out + (row * parts + c) * sh.D;
      for (int64_t d = 0; d < sh.D; ++d) {
        o[d] += w * src[d];
      }
    }
    const float inv = total > 0.0f ? 1.0f / total : 0.0f;
    for (int64_t d = 0; d < sh.D; ++d) {
      o[d] *= inv;
    }
  }
}

// Loads one word of every cache line of the rows at positions [lo, hi] (every kv head of one
// batch row), position by position: in address order for a [B, C, H, D] cache, which the
// hardware prefetcher streams; returns the words
// OR-ed (integer ORs: a one-cycle chain, where a float sum's adds would serialise the walk).
inline uint32_t touch_rows(const float* base, Strides3 s, int64_t Hkv, int64_t D, int64_t C, int64_t lo, int64_t hi) {
  constexpr int64_t kLineFloats = 64 / sizeof(float);
  uint32_t bits = 0;
  int64_t slot = lo % C;
  for (int64_t t = lo; t <= hi; ++t) {
    const float* row = base + slot * s.s;
    for (int64_t h = 0; h < Hkv; ++h) {
      for (int64_t d = 0; d < D; d += kLineFloats) {
        uint32_t word;
        std::memcpy(&word, row + h * s.h + d, sizeof(word));
        bits |= word;
      }
    }
    slot = slot + 1 == C ? 0 : slot + 1;
  }
  return bits;
}

// Keeps a value the compiler would otherwise drop (and with it the loads behind it).
inline void keep(uint32_t x) {
#if defined(__GNUC__) || defined(__clang__)
  asm volatile("" : : "r"(x));
#else
  static volatile uint32_t sink;
  sink = x;
#endif
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace detail

// Parts of a decode step's keys: about kDecodePartKeys each, and at least kDecodeMinParts
// (while parts keep kDecodeMinPartKeys keys) so that short contexts still feed a few threads.
inline constexpr int64_t kDecodePartKeys = 64;
// decode_part scores a whole part in one key block: decode_key_parts keeps parts within
// kDecodePartKeys keys, and this keeps those within the block's scratch.
static_assert(kDecodePartKeys <= detail::kKeyBlock, "a decode part must fit one key block");
inline constexpr int64_t kDecodeMinParts = 4;
inline constexpr int64_t kDecodeMinPartKeys = 16;

// How many parts a single query's `keys` (>= 1) are split into; depends on nothing else, so
// the result does not depend on the thread count.
inline int64_t decode_key_parts(int64_t keys) {
  const int64_t by_size = (keys + kDecodePartKeys - 1) / kDecodePartKeys;
  const int64_t by_threads = std::min(kDecodeMinParts, (keys + kDecodeMinPartKeys - 1) / kDecodeMinPartKeys);
  return std::max(by_size, by_threads);
}

// Decode parts go position by position (detail::decode_part) when one cache row, every kv head
// of a position, spans this many bytes or more; shorter rows are walked, then scored head by
// head. Measured alternating in one process (cold caches, 2 threads, 60-1000 keys, nine head
// shapes): rows of 4 KiB or more (Qwen3: 8 kv heads x 128 floats) took 0.62-0.93x the time
// position by position, rows of 2 KiB or less (SmolLM2: 768 B) 1.01-1.5x. Likely why: head by
// head, the rows of a part sit a row apart, so at 4 KiB their equal offsets share L1 sets.
inline constexpr int64_t kPositionMajorRowBytes = 4096;

// Attention of a single query (S == 1, a decode step); see ring_sdpa for the contract. A decode
// step finds each layer's cache cold in memory, so the work follows the memory: items are
// parts of the keys (contiguous cache rows) with every kv head: a thread walks its first part in
// address order (detail::touch_rows), and prefetches each next part while it scores the one
// before (detail::RowPrefetch). One softmax per (query head, part),
// merged at the end. Splitting by heads instead made each thread read one head's rows a stride
// apart, waiting on one cache line after another: SmolLM2 8da4w decode ran 7-8 % slower at 128
// cache positions and ~20 % slower at 900. Half caches always go position by position.
template <class T, class ParallelFor>
void ring_sdpa_decode(const float* q, Strides3 qs, const T* k, Strides3 ks, const T* v, Strides3 vs, float* out,
                      const RingSdpaShape& sh, const RingSdpaParams& p, ParallelFor&& parallel_for) {
  const int64_t group = sh.Hq / sh.Hkv;
  const int64_t key_lo = ring_window_lo(p.start_pos, p.start_pos + 1, sh.C, p.window);
  const int64_t keys = p.start_pos - key_lo + 1;
  const int64_t parts = decode_key_parts(keys);
  const int64_t part_keys = (keys + parts - 1) / parts;
  // Partial results per (batch, query head, part): normalised rows, their max and sum.
  std::vector<float> part_out(static_cast<std::size_t>(sh.B * sh.Hq * parts * sh.D));
  std::vector<float> part_m(static_cast<std::size_t>(sh.B * sh.Hq * parts));
  std::vector<float> part_l(part_m.size(), 0.0f);
  const bool by_position =
      !std::is_same_v<T, float> || ks.s * static_cast<int64_t>(sizeof(float)) >= kPositionMajorRowBytes;
  parallel_for(sh.B * parts, [&](int64_t begin, int64_t stop) {
    detail::RowSet rs;
    rs.transpose_keys = (group + 3) / 4 * 4 >= detail::kTransposeRows;
    detail::DecodeScratch scratch;
    detail::RowPrefetch prefetch;
    uint32_t touched = 0;
    // Item u: batch row u / parts, keys [first_key(u), last_key(u)] (empty past the last key).
    auto first_key = [&](int64_t u) { return key_lo + u % parts * part_keys; };
    auto last_key = [&](int64_t u) { return std::min(p.start_pos, first_key(u) + part_keys - 1); };
    for (int64_t u = begin; u < stop; ++u) {
      const int64_t part = u % parts;
      const int64_t b = u / parts;
      const int64_t lo = first_key(u);
      const int64_t hi = last_key(u);
      if (lo > hi) {
        continue;  // fewer keys than parts * part_keys: this part is empty (its sum stays 0)
      }
      if (by_position) {
        const int64_t first = b * sh.Hq * parts + part;
        const detail::DecodePart<T> dp{q + b * qs.b, qs.h, k + b * ks.b, v + b * vs.b, ks, vs, lo, hi,
                                    part_out.data() + first * sh.D, parts * sh.D, part_m.data() + first,
                                    part_l.data() + first, parts};
        detail::decode_part_any(dp, sh.Hq, sh.Hkv, sh.D, sh.C, p, scratch);
        continue;
      }
      if constexpr (std::is_same_v<T, float>) {
        // A thread's first part is walked before it is scored; each later one is prefetched while
        // the part before it is scored (the transposed path, which has no per-key loop to hand the
        // prefetches over from, walks every part).
        const bool overlap = !rs.transpose_keys;
        if (u == begin || !overlap) {
          touched |= detail::touch_rows(k + b * ks.b, ks, sh.Hkv, sh.D, sh.C, lo, hi);
          touched |= detail::touch_rows(v + b * vs.b, vs, sh.Hkv, sh.D, sh.C, lo, hi);
        }
        rs.prefetch = nullptr;
        if (overlap && u + 1 < stop) {
          const int64_t next_b = (u + 1) / parts;
          const int64_t next_lo = first_key(u + 1);
          const int64_t next_hi = last_key(u + 1);
          if (next_lo <= next_hi) {
            prefetch = detail::RowPrefetch(k + next_b * ks.b, ks, v + next_b * vs.b, vs, sh.Hkv, sh.D, sh.C, next_lo,
                                           next_hi, group * (hi - lo + 1) * sh.Hkv);
            rs.prefetch = &prefetch;
          }
        }
        for (int64_t hkv = 0; hkv < sh.Hkv; ++hkv) {
          rs.q.clear();
          rs.out.clear();
          for (int64_t h = hkv * group; h < hkv * group + group; ++h) {
            rs.q.push_back(q + b * qs.b + h * qs.h);
            rs.out.push_back(part_out.data() + ((b * sh.Hq + h) * parts + part) * sh.D);
          }
          rs.lo.assign(static_cast<std::size_t>(group), lo);
          rs.hi.assign(static_cast<std::size_t>(group), hi);
          while (rs.q.size() % 4 != 0) {
            rs.q.push_back(rs.q.back());  // padding rows: computed, never written out
          }
          detail::attend_rows_any(rs, group, k + b * ks.b + hkv * ks.h, v + b * vs.b + hkv * vs.h, ks.s, vs.s, sh.D,
                                  sh.C, p);
          for (int64_t r = 0; r < group; ++r) {
            const int64_t slot = (b * sh.Hq + hkv * group + r) * parts + part;
            part_m[slot] = rs.m[r];
            part_l[slot] = rs.l[r];
          }
        }
      }
    }
    detail::keep(touched);
  });
  detail::merge_key_parts(part_out.data(), part_m.data(), part_l.data(), parts, sh, out);
}

// ring_sdpa of several queries over float caches.
template <class ParallelFor>
void ring_sdpa_prefill(const float* q, Strides3 qs, const float* k, Strides3 ks, const float* v, Strides3 vs,
                       float* out, const RingSdpaShape& sh, const RingSdpaParams& p, int64_t threads,
                       ParallelFor&& parallel_for) {
  const int64_t group = sh.Hq / sh.Hkv;
  const int64_t end = p.start_pos + sh.S;
  const int64_t tile = std::max<int64_t>(1, detail::kRowTarget / group);
  const int64_t tiles = (sh.S + tile - 1) / tile;
  // Split a kv head's query heads when there are fewer than two items per thread: with one
  // item each, an odd count leaves a thread idle half the call.
  int64_t splits = 1;
  while (splits < group && sh.B * sh.Hkv * tiles * splits < 2 * threads) {
    ++splits;
  }
  const int64_t sub = (group + splits - 1) / splits;
  const int64_t units = sh.B * sh.Hkv * tiles * splits;
  parallel_for(units, [&](int64_t begin, int64_t stop) {
    detail::RowSet rs;
    for (int64_t u = begin; u < stop; ++u) {
      const int64_t split = u % splits;
      const int64_t t = (u / splits) % tiles;
      const int64_t hkv = (u / (splits * tiles)) % sh.Hkv;
      const int64_t b = u / (splits * tiles * sh.Hkv);
      const int64_t h0 = hkv * group + split * sub;
      const int64_t h1 = std::min(hkv * group + group, h0 + sub);
      const int64_t i0 = t * tile;
      const int64_t i1 = std::min(sh.S, i0 + tile);
      rs.q.clear();
      rs.out.clear();
      rs.lo.clear();
      rs.hi.clear();
      rs.transpose_keys = (group * (i1 - i0) + 3) / 4 * 4 >= detail::kTransposeRows;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t pos = p.start_pos + i;
        const int64_t lo = ring_window_lo(pos, end, sh.C, p.window);
        for (int64_t h = h0; h < h1; ++h) {
          rs.q.push_back(q + b * qs.b + i * qs.s + h * qs.h);
          rs.out.push_back(out + ((b * sh.S + i) * sh.Hq + h) * sh.D);
          rs.lo.push_back(lo);
          rs.hi.push_back(pos);
        }
      }
      const int64_t rows = static_cast<int64_t>(rs.q.size());
      if (rows == 0) {
        continue;
      }
      while (rs.q.size() % 4 != 0) {
        rs.q.push_back(rs.q.back());  // padding rows: computed, never written out
      }
      detail::attend_rows_any(rs, rows, k + b * ks.b + hkv * ks.h, v + b * vs.b + hkv * vs.h, ks.s, vs.s, sh.D,
                              sh.C, p);
    }
  });
}

// ring_sdpa of several queries over half caches, through a float copy of what the ring holds:
// prefill reuses every key for many queries, so widening each once beats widening per use.
template <class ParallelFor>
void ring_sdpa_prefill(const float* q, Strides3 qs, const half* k, Strides3 ks, const half* v, Strides3 vs,
                       float* out, const RingSdpaShape& sh, const RingSdpaParams& p, int64_t threads,
                       ParallelFor&& parallel_for) {
  // The held positions [end - n, end), n = min(end, C), in a float ring of n slots (position
  // t in slot t % n): ring_window_lo gives every query the same keys there as here.
  const int64_t end = p.start_pos + sh.S;
  const int64_t n = std::min(end, sh.C);
  const int64_t row = sh.Hkv * sh.D;
  // Uninitialised (every slot is written below) and widened on every thread: a 128-query
  // Qwen3-shaped call at 1024 / 2048 positions ran 7-10 % faster (2 threads) than when the
  // calling thread zero-filled and widened it alone.
  const auto wide_size = static_cast<std::size_t>(sh.B * n * row);
  std::unique_ptr<float[]> wide_k(new float[wide_size]);
  std::unique_ptr<float[]> wide_v(new float[wide_size]);
  parallel_for(sh.B * n, [&](int64_t begin, int64_t stop) {
    for (int64_t u = begin; u < stop; ++u) {
      const int64_t b = u / n;
      const int64_t t = end - n + u % n;
      const int64_t src = t % sh.C;
      const int64_t dst = (b * n + t % n) * row;
      for (int64_t h = 0; h < sh.Hkv; ++h) {
        widen_row(wide_k.get() + dst + h * sh.D, k + b * ks.b + src * ks.s + h * ks.h, sh.D);
        widen_row(wide_v.get() + dst + h * sh.D, v + b * vs.b + src * vs.s + h * vs.h, sh.D);
      }
    }
  });
  const Strides3 wide{n * row, row, sh.D};
  RingSdpaShape wide_sh = sh;
  wide_sh.C = n;
  ring_sdpa_prefill(q, qs, wide_k.get(), wide, wide_v.get(), wide, out, wide_sh, p, threads, parallel_for);
}

// Sliding-window attention of S queries over a ring that already holds this call's keys (call
// ring_update_cache first). Query i has absolute position pos = start_pos + i and attends to
// exactly the positions q with pos - window < q <= pos that the ring holds, i.e.
// max(0, end - C, pos - window + 1) <= q <= pos with end = start_pos + S. A query with no such
// key (possible only when S > C) gets zeros. Output is [B, S, Hq, D] contiguous.
//
// Work items are (batch, kv head, tile of queries, subgroup of the query heads sharing that kv
// head): each reads its keys once for all its rows. `parallel_for(n, fn)` must call fn(begin,
// end) over disjoint ranges covering [0, n), in any order and on any threads; `threads` only
// shapes the head split (more items when there are few heads and queries). A single query
// (decode) takes ring_sdpa_decode. Results do not depend on the thread count.
//
// Caches may be float or half (T); half rows are widened to float as they are read.
template <class T, class ParallelFor>
void ring_sdpa(const float* q, Strides3 qs, const T* k, Strides3 ks, const T* v, Strides3 vs, float* out,
               const RingSdpaShape& sh, const RingSdpaParams& p, int64_t threads, ParallelFor&& parallel_for) {
  static_assert(kCacheType<T>, "caches are float or half");
  if (sh.S == 1) {
    ring_sdpa_decode(q, qs, k, ks, v, vs, out, sh, p, parallel_for);
    return;
  }
  ring_sdpa_prefill(q, qs, k, ks, v, vs, out, sh, p, threads, parallel_for);
}

}  // namespace eo::core
