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
#include <vector>

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
// are written, each slot exactly once, so the result does not depend on write order.
inline void ring_update_cache(const float* value, Strides3 vs, float* cache, Strides3 cs, int64_t B,
                              int64_t S, int64_t H, int64_t D, int64_t C, int64_t start_pos) {
  const int64_t first = S > C ? S - C : 0;
  const std::size_t row_bytes = static_cast<std::size_t>(D) * sizeof(float);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = first; i < S; ++i) {
      const int64_t slot = (start_pos + i) % C;
      for (int64_t h = 0; h < H; ++h) {
        std::memcpy(cache + b * cs.b + slot * cs.s + h * cs.h, value + b * vs.b + i * vs.s + h * vs.h,
                    row_bytes);
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
// x86-64 also vf8 = one AVX register, picked at run time) and always inlined into the function
// that picks V, so each instantiation is compiled for that function's instruction set. Loops
// step two vectors at a time (independent accumulators), with a scalar tail for head dims that
// are not a multiple of the step.
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

template <class V>
EO_ALWAYS_INLINE inline float hsum(V a, V b) {
  const V v = a + b;
  float s = 0.0f;
  for (int64_t i = 0; i < kLanes<V>; ++i) {
    s += v[i];
  }
  return s;
}

inline constexpr int64_t kKeyBlock = 64;  // keys per online-softmax step
inline constexpr int64_t kRowTarget = 32; // query rows sharing one pass over the keys

// out[r] = <q[r], k> for four query rows (rows may repeat to pad a short group).
template <class V>
EO_ALWAYS_INLINE inline void dot4(const float* const* q, const float* k, int64_t D, float* out) {
  constexpr int64_t L = kLanes<V>;
  V a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
  int64_t d = 0;
  for (; d + 2 * L <= D; d += 2 * L) {
    const V k0 = load<V>(k + d);
    const V k1 = load<V>(k + d + L);
    a0 += load<V>(q[0] + d) * k0;
    b0 += load<V>(q[0] + d + L) * k1;
    a1 += load<V>(q[1] + d) * k0;
    b1 += load<V>(q[1] + d + L) * k1;
    a2 += load<V>(q[2] + d) * k0;
    b2 += load<V>(q[2] + d + L) * k1;
    a3 += load<V>(q[3] + d) * k0;
    b3 += load<V>(q[3] + d + L) * k1;
  }
  float s0 = hsum<V>(a0, b0), s1 = hsum<V>(a1, b1), s2 = hsum<V>(a2, b2), s3 = hsum<V>(a3, b3);
  for (; d < D; ++d) {
    s0 += q[0][d] * k[d];
    s1 += q[1][d] * k[d];
    s2 += q[2][d] * k[d];
    s3 += q[3][d] * k[d];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// acc[r] += sum_j w[r][j] * v[j] for four rows, keys j in [ja, jb].
template <class V>
EO_ALWAYS_INLINE inline void axpy4(float* const* acc, const float* const* w, const float* const* vrows,
                                   int64_t ja, int64_t jb, int64_t D) {
  constexpr int64_t L = kLanes<V>;
  int64_t d = 0;
  for (; d + 2 * L <= D; d += 2 * L) {
    V a0 = load<V>(acc[0] + d), a1 = load<V>(acc[1] + d), a2 = load<V>(acc[2] + d), a3 = load<V>(acc[3] + d);
    V b0 = load<V>(acc[0] + d + L), b1 = load<V>(acc[1] + d + L), b2 = load<V>(acc[2] + d + L),
      b3 = load<V>(acc[3] + d + L);
    for (int64_t j = ja; j <= jb; ++j) {
      const V v0 = load<V>(vrows[j] + d);
      const V v1 = load<V>(vrows[j] + d + L);
      const float w0 = w[0][j], w1 = w[1][j], w2 = w[2][j], w3 = w[3][j];
      a0 += w0 * v0;
      b0 += w0 * v1;
      a1 += w1 * v0;
      b1 += w1 * v1;
      a2 += w2 * v0;
      b2 += w2 * v1;
      a3 += w3 * v0;
      b3 += w3 * v1;
    }
    store<V>(acc[0] + d, a0);
    store<V>(acc[1] + d, a1);
    store<V>(acc[2] + d, a2);
    store<V>(acc[3] + d, a3);
    store<V>(acc[0] + d + L, b0);
    store<V>(acc[1] + d + L, b1);
    store<V>(acc[2] + d + L, b2);
    store<V>(acc[3] + d + L, b3);
  }
  for (; d < D; ++d) {
    for (int64_t j = ja; j <= jb; ++j) {
      for (int r = 0; r < 4; ++r) {
        acc[r][d] += w[r][j] * vrows[j][d];
      }
    }
  }
}

// One work item: `rows` query rows (a tile of queries x a subgroup of the query heads that share
// kv head `hkv`) against their key intervals, with an online softmax per row.
struct RowSet {
  std::vector<const float*> q;  // query row pointers (padded to a multiple of 4)
  std::vector<float*> out;      // output row pointers (null for padding)
  std::vector<int64_t> lo, hi;  // inclusive absolute key positions each row attends to
  std::vector<float> acc, scores, m, l;
  std::vector<const float*> krows, vrows;
};

template <class V>
EO_ALWAYS_INLINE inline void attend_rows(RowSet& rs, int64_t rows, const float* kbase, const float* vbase, int64_t k_step,
                        int64_t v_step, int64_t D, int64_t C, const RingSdpaParams& p) {
  const int64_t padded = (rows + 3) / 4 * 4;
  rs.acc.assign(static_cast<std::size_t>(padded * D), 0.0f);
  rs.scores.assign(static_cast<std::size_t>(padded * kKeyBlock), 0.0f);
  rs.m.assign(static_cast<std::size_t>(padded), -std::numeric_limits<float>::infinity());
  rs.l.assign(static_cast<std::size_t>(padded), 0.0f);
  rs.krows.resize(kKeyBlock);
  rs.vrows.resize(kKeyBlock);
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
      const float* qrows[4];
      float* srows[4];
      float* arows[4];
      for (int u = 0; u < 4; ++u) {
        qrows[u] = rs.q[r0 + u];
        srows[u] = rs.scores.data() + (r0 + u) * kKeyBlock;
        arows[u] = rs.acc.data() + (r0 + u) * D;
      }
      for (int64_t j = ga; j <= gb; ++j) {
        float s4[4];
        dot4<V>(qrows, rs.krows[j], D, s4);
        for (int u = 0; u < 4; ++u) {
          srows[u][j] = s4[u];
        }
      }
      for (int u = 0; u < 4; ++u) {
        float* s = srows[u];
        const int64_t r = r0 + u;
        if (ja[u] > jb[u]) {
          std::fill(s + ga, s + gb + 1, 0.0f);  // no key for this row here: zero weights
          continue;
        }
        float block_max = -std::numeric_limits<float>::infinity();
        for (int64_t j = ja[u]; j <= jb[u]; ++j) {
          float x = p.scale * s[j];
          if (p.softcap > 0.0f) {
            x = p.softcap * std::tanh(x / p.softcap);
          }
          s[j] = x;
          block_max = std::max(block_max, x);
        }
        const float new_m = std::max(rs.m[r], block_max);
        if (rs.l[r] > 0.0f && new_m > rs.m[r]) {
          const float corr = std::exp(rs.m[r] - new_m);
          rs.l[r] *= corr;
          float* a = arows[u];
          for (int64_t d = 0; d < D; ++d) {
            a[d] *= corr;
          }
        }
        rs.m[r] = new_m;
        float sum = 0.0f;
        for (int64_t j = ga; j <= gb; ++j) {
          const bool in = j >= ja[u] && j <= jb[u];
          const float w = in ? std::exp(s[j] - new_m) : 0.0f;
          s[j] = w;
          sum += w;
        }
        rs.l[r] += sum;
      }
      axpy4<V>(arows, srows, rs.vrows.data(), ga, gb, D);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = rs.l[r] > 0.0f ? 1.0f / rs.l[r] : 0.0f;
    const float* a = rs.acc.data() + r * D;
    for (int64_t d = 0; d < D; ++d) {
      rs.out[r][d] = a[d] * inv;
    }
  }
}


#if defined(__x86_64__) && !defined(EO_NO_RUNTIME_DISPATCH)
#define EO_X86_DISPATCH 1
typedef float vf8 __attribute__((vector_size(32)));

__attribute__((target("avx2,fma"))) inline void attend_rows_avx2(RowSet& rs, int64_t rows, const float* kbase,
                                                                  const float* vbase, int64_t k_step,
                                                                  int64_t v_step, int64_t D, int64_t C,
                                                                  const RingSdpaParams& p) {
  attend_rows<vf8>(rs, rows, kbase, vbase, k_step, v_step, D, C, p);
}
#else
#define EO_X86_DISPATCH 0
#endif

// Whether this CPU takes the AVX2/FMA path (x86-64 only; other targets use vf4). Setting
// EO_KERNELS_GENERIC_SIMD=1 in the environment forces the portable vf4 path (tests use it).
inline bool uses_avx2() {
#if EO_X86_DISPATCH
  static const bool avx2 = [] {
    const char* generic = std::getenv("EO_KERNELS_GENERIC_SIMD");
    if (generic != nullptr && generic[0] != '\0' && generic[0] != '0') {
      return false;
    }
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return avx2;
#else
  return false;
#endif
}

inline void attend_rows_any(RowSet& rs, int64_t rows, const float* kbase, const float* vbase, int64_t k_step,
                            int64_t v_step, int64_t D, int64_t C, const RingSdpaParams& p) {
#if EO_X86_DISPATCH
  if (uses_avx2()) {
    attend_rows_avx2(rs, rows, kbase, vbase, k_step, v_step, D, C, p);
    return;
  }
#endif
  attend_rows<vf4>(rs, rows, kbase, vbase, k_step, v_step, D, C, p);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace detail

// Sliding-window attention of S queries over a ring that already holds this call's keys (call
// ring_update_cache first). Query i has absolute position pos = start_pos + i and attends to
// exactly the positions q with pos - window < q <= pos that the ring holds, i.e.
// max(0, end - C, pos - window + 1) <= q <= pos with end = start_pos + S. A query with no such
// key (possible only when S > C) gets zeros. Output is [B, S, Hq, D] contiguous.
//
// Work items are (batch, kv head, tile of queries, subgroup of the query heads sharing that kv
// head): each reads its keys once for all its rows. `parallel_for(n, fn)` must call
// fn(begin, end) over disjoint ranges covering [0, n), in any order and on any threads;
// `threads` only shapes the split (more items when there are few heads, e.g. at decode).
template <class ParallelFor>
void ring_sdpa(const float* q, Strides3 qs, const float* k, Strides3 ks, const float* v, Strides3 vs,
               float* out, const RingSdpaShape& sh, const RingSdpaParams& p, int64_t threads,
               ParallelFor&& parallel_for) {
  const int64_t group = sh.Hq / sh.Hkv;
  const int64_t end = p.start_pos + sh.S;
  const int64_t tile = std::max<int64_t>(1, detail::kRowTarget / group);
  const int64_t tiles = (sh.S + tile - 1) / tile;
  int64_t splits = 1;  // split a kv head's query heads when there is too little work otherwise
  while (splits < group && sh.B * sh.Hkv * tiles * splits < threads) {
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

}  // namespace eo::core
