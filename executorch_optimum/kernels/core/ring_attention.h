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
#include <cstring>
#include <limits>

namespace eo::core {

// Element strides of the first three dims of a [B, S or C, H, D] tensor (dim 3 has stride 1).
struct Strides3 {
  int64_t b;
  int64_t s;
  int64_t h;
};

// Largest head dim the attention kernel accepts (its per-query accumulator lives on the stack).
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

namespace detail {

inline float dot(const float* a, const float* b, int64_t n) {
  // Eight independent partial sums let the compiler vectorise without reassociation flags.
  float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8) {
    for (int u = 0; u < 8; ++u) {
      s[u] += a[d + u] * b[d + u];
    }
  }
  float r = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; d < n; ++d) {
    r += a[d] * b[d];
  }
  return r;
}

// Attention of one query row over the positions [lo, hi] of the ring (online softmax).
inline void attend_one(const float* qrow, const float* k, const float* v, Strides3 ks, Strides3 vs,
                       int64_t b, int64_t hkv, int64_t D, int64_t C, int64_t lo, int64_t hi,
                       const RingSdpaParams& p, float* orow) {
  constexpr int64_t kBlock = 64;
  float acc[kMaxHeadDim];
  float scores[kBlock];
  std::fill(acc, acc + D, 0.0f);
  float m = -std::numeric_limits<float>::infinity();
  float l = 0.0f;
  const float* kbase = k + b * ks.b + hkv * ks.h;
  const float* vbase = v + b * vs.b + hkv * vs.h;
  for (int64_t t0 = lo; t0 <= hi; t0 += kBlock) {
    const int64_t n = std::min(kBlock, hi - t0 + 1);
    const int64_t slot0 = t0 % C;
    float block_max = -std::numeric_limits<float>::infinity();
    int64_t slot = slot0;
    for (int64_t j = 0; j < n; ++j) {
      float s = p.scale * dot(qrow, kbase + slot * ks.s, D);
      if (p.softcap > 0.0f) {
        s = p.softcap * std::tanh(s / p.softcap);
      }
      scores[j] = s;
      block_max = std::max(block_max, s);
      slot = slot + 1 == C ? 0 : slot + 1;
    }
    const float new_m = std::max(m, block_max);
    if (l > 0.0f) {
      const float corr = std::exp(m - new_m);
      l *= corr;
      for (int64_t d = 0; d < D; ++d) {
        acc[d] *= corr;
      }
    }
    slot = slot0;
    for (int64_t j = 0; j < n; ++j) {
      const float w = std::exp(scores[j] - new_m);
      l += w;
      const float* vrow = vbase + slot * vs.s;
      for (int64_t d = 0; d < D; ++d) {
        acc[d] += w * vrow[d];
      }
      slot = slot + 1 == C ? 0 : slot + 1;
    }
    m = new_m;
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int64_t d = 0; d < D; ++d) {
    orow[d] = acc[d] * inv;
  }
}

}  // namespace detail

// First absolute key position query `pos` attends to; it attends to [ring_window_lo(...), pos].
// Empty (lo > pos) only when pos itself was overwritten within the call (S > C).
inline int64_t ring_window_lo(int64_t pos, int64_t end, int64_t capacity, int64_t window) {
  int64_t lo = std::max<int64_t>(0, end - capacity);
  if (window > 0) {
    lo = std::max(lo, pos - window + 1);
  }
  return lo;
}

// Sliding-window attention of S queries over a ring that already holds this call's keys (call
// ring_update_cache first). Query i has absolute position pos = start_pos + i and attends to
// exactly the positions q with pos - window < q <= pos that the ring holds, i.e.
// max(0, end - C, pos - window + 1) <= q <= pos with end = start_pos + S. A query with no such
// key (possible only when S > C) gets zeros. Output is [B, S, Hq, D] contiguous.
//
// `parallel_for(n, fn)` must call fn(begin, end) over disjoint ranges covering [0, n), in any
// order and on any threads. Work items are (batch, query head, query row).
template <class ParallelFor>
void ring_sdpa(const float* q, Strides3 qs, const float* k, Strides3 ks, const float* v, Strides3 vs,
               float* out, const RingSdpaShape& sh, const RingSdpaParams& p, ParallelFor&& parallel_for) {
  const int64_t group = sh.Hq / sh.Hkv;
  const int64_t end = p.start_pos + sh.S;
  const int64_t units = sh.B * sh.Hq * sh.S;
  parallel_for(units, [&](int64_t begin, int64_t stop) {
    for (int64_t u = begin; u < stop; ++u) {
      const int64_t i = u % sh.S;
      const int64_t h = (u / sh.S) % sh.Hq;
      const int64_t b = u / (sh.S * sh.Hq);
      const int64_t pos = p.start_pos + i;
      const int64_t lo = ring_window_lo(pos, end, sh.C, p.window);
      float* orow = out + ((b * sh.S + i) * sh.Hq + h) * sh.D;
      const float* qrow = q + b * qs.b + i * qs.s + h * qs.h;
      detail::attend_one(qrow, k, v, ks, vs, b, h / group, sh.D, sh.C, lo, pos, p, orow);
    }
  });
}

}  // namespace eo::core
