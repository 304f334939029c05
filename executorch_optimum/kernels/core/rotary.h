// Rotary position embedding the way transformers applies it (`rotate_half`), inside our ops:
// eo::rope_ring_sdpa rotates the queries and eo::rope_kv_update the keys as it writes them, in
// place of ~6 XNNPACK operators per layer for each.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "executorch_optimum/kernels/core/ring_attention.h"

namespace eo::core {

// nullptr when the tables fit the rows to rotate (queries or keys) [B, S, H, D]: cos and sin
// [B', S, D] with B' 1 or B.
inline const char* check_rotary(int64_t q_dims, const int64_t* q_sizes, int64_t t_dims, const int64_t* cos_sizes,
                                const int64_t* sin_sizes) {
  if (q_dims != 4 || t_dims != 3) {
    return "the rows to rotate must be 4-D [B, S, H, D] and cos/sin 3-D [B, S, D]";
  }
  for (int d = 0; d < 3; ++d) {
    if (cos_sizes[d] != sin_sizes[d]) {
      return "cos and sin must have the same shape";
    }
  }
  if ((cos_sizes[0] != 1 && cos_sizes[0] != q_sizes[0]) || cos_sizes[1] != q_sizes[1] ||
      cos_sizes[2] != q_sizes[3]) {
    return "cos/sin must be [1 or B, S, D] for rows [B, S, H, D]";
  }
  if (q_sizes[3] % 2 != 0) {
    return "the head dim must be even";
  }
  if (q_sizes[3] > kMaxHeadDim) {
    return "head dim too large (max 1024)";
  }
  return nullptr;
}

// o = x * c + rotate_half(x) * n for one row of D = 2 * half, rotate_half(x) = [-x[half:], x[:half]].
// `o` overlaps no input (restrict lets the compiler vectorise without a runtime overlap check).
inline void rotate_row(const float* __restrict x, const float* __restrict c, const float* __restrict n, int64_t half,
                       float* __restrict o) {
  for (int64_t i = 0; i < half; ++i) {
    o[i] = x[i] * c[i] - x[i + half] * n[i];
    o[i + half] = x[i + half] * c[i + half] + x[i] * n[i + half];
  }
}

// RMS norm over each row before it is rotated (Qwen3's q_norm / k_norm, applied by the model
// right before rotary): x * rsqrt(mean(x^2) + eps) * weight. `weight` null = no norm.
struct RowNorm {
  const float* weight = nullptr;
  float eps = 0.0f;
};

// nullptr when a norm weight of `weight_numel` elements fits rows of head dim `head_dim`.
inline const char* check_row_norm(int64_t weight_dims, int64_t weight_numel, int64_t head_dim) {
  if (weight_dims != 1 || weight_numel != head_dim) {
    return "the norm weight must be 1-D with head_dim elements";
  }
  if (head_dim > kMaxHeadDim) {
    return "the head dim is too large for a fused norm";
  }
  return nullptr;
}

// o = rotate_row(norm(x)) for one row of D elements.
inline void norm_rotate_row(const float* x, const float* c, const float* n, int64_t D, RowNorm norm, float* o) {
  if (norm.weight == nullptr) {
    rotate_row(x, c, n, D / 2, o);
    return;
  }
  // Eight running sums, so the compiler can keep them in one vector (one sum is a serial chain).
  float parts[8] = {};
  int64_t i = 0;
  for (; i + 8 <= D; i += 8) {
    for (int j = 0; j < 8; ++j) {
      parts[j] += x[i + j] * x[i + j];
    }
  }
  float squares = 0.0f;
  for (; i < D; ++i) {
    squares += x[i] * x[i];
  }
  for (float part : parts) {
    squares += part;
  }
  const float inv = 1.0f / std::sqrt(squares / static_cast<float>(D) + norm.eps);
  float normed[kMaxHeadDim];
  for (i = 0; i < D; ++i) {
    normed[i] = norm.weight[i] * (x[i] * inv);
  }
  rotate_row(normed, c, n, D / 2, o);
}

// out[b, s, h] = rotate_row(q[b, s, h]) with the tables' row (b, s); cos/sin rows are contiguous,
// `table_b` is their batch stride (0 when shared); out is contiguous [B, S, H, D].
// With `norm`, each row is normalised first (norm_rotate_row).
inline void rotate_queries(const float* q, Strides3 qs, const float* cos, const float* sin, int64_t table_b, int64_t B,
                           int64_t S, int64_t H, int64_t D, RowNorm norm, float* out) {
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t s = 0; s < S; ++s) {
      const float* c = cos + b * table_b + s * D;
      const float* n = sin + b * table_b + s * D;
      for (int64_t h = 0; h < H; ++h) {
        norm_rotate_row(q + b * qs.b + s * qs.s + h * qs.h, c, n, D, norm, out + ((b * S + s) * H + h) * D);
      }
    }
  }
}

// ring_update_cache of the keys (normalised and) rotated as rotate_queries does (tables as there) and of the
// values as they are, in one pass: key and value [B, S, H, D], caches [B, C, H, D] of float or half
// (T; a half cache stores the float results rounded to nearest).
template <class T>
inline void ring_update_rotated(const float* key, Strides3 ks, const float* value, Strides3 vs, const float* cos,
                                const float* sin, int64_t table_b, T* k_cache, Strides3 kcs, T* v_cache,
                                Strides3 vcs, int64_t B, int64_t S, int64_t H, int64_t D, int64_t C,
                                int64_t start_pos, RowNorm norm) {
  const int64_t first = S > C ? S - C : 0;  // rows a later row of this call overwrites are skipped
  float rotated[kMaxHeadDim];
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = first; i < S; ++i) {
      const int64_t slot = (start_pos + i) % C;
      const float* c = cos + b * table_b + i * D;
      const float* n = sin + b * table_b + i * D;
      for (int64_t h = 0; h < H; ++h) {
        T* k_row = k_cache + b * kcs.b + slot * kcs.s + h * kcs.h;
        if constexpr (std::is_same_v<T, float>) {
          norm_rotate_row(key + b * ks.b + i * ks.s + h * ks.h, c, n, D, norm, k_row);
        } else {
          norm_rotate_row(key + b * ks.b + i * ks.s + h * ks.h, c, n, D, norm, rotated);
          store_row(k_row, rotated, D);
        }
        store_row(v_cache + b * vcs.b + slot * vcs.s + h * vcs.h, value + b * vs.b + i * vs.s + h * vs.h, D);
      }
    }
  }
}

}  // namespace eo::core
