// Rotary position embedding of query rows, the way transformers applies it (`rotate_half`),
// so eo::rope_ring_sdpa can rotate the queries itself instead of ~6 XNNPACK operators per layer.
#pragma once

#include <cstdint>

#include "executorch_optimum/kernels/core/ring_attention.h"

namespace eo::core {

// nullptr when the tables fit query [B, S, H, D]: cos and sin [B' , S, D] with B' 1 or B.
inline const char* check_rotary(int64_t q_dims, const int64_t* q_sizes, int64_t t_dims, const int64_t* cos_sizes,
                                const int64_t* sin_sizes) {
  if (q_dims != 4 || t_dims != 3) {
    return "query must be 4-D [B, S, H, D] and cos/sin 3-D [B, S, D]";
  }
  for (int d = 0; d < 3; ++d) {
    if (cos_sizes[d] != sin_sizes[d]) {
      return "cos and sin must have the same shape";
    }
  }
  if ((cos_sizes[0] != 1 && cos_sizes[0] != q_sizes[0]) || cos_sizes[1] != q_sizes[1] ||
      cos_sizes[2] != q_sizes[3]) {
    return "cos/sin must be [1 or B, S, D] for a query [B, S, H, D]";
  }
  if (q_sizes[3] % 2 != 0) {
    return "the head dim must be even";
  }
  return nullptr;
}

// out[b, s, h] = x * cos[b, s] + rotate_half(x) * sin[b, s] with rotate_half(x) =
// [-x[D/2:], x[:D/2]], for x = q[b, s, h]; cos/sin rows are contiguous, `table_b` is their
// batch stride (0 when shared); out is contiguous [B, S, H, D].
inline void rotate_queries(const float* q, Strides3 qs, const float* cos, const float* sin, int64_t table_b, int64_t B,
                           int64_t S, int64_t H, int64_t D, float* out) {
  const int64_t half = D / 2;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t s = 0; s < S; ++s) {
      const float* c = cos + b * table_b + s * D;
      const float* n = sin + b * table_b + s * D;
      for (int64_t h = 0; h < H; ++h) {
        const float* x = q + b * qs.b + s * qs.s + h * qs.h;
        float* o = out + ((b * S + s) * H + h) * D;
        for (int64_t i = 0; i < half; ++i) {
          o[i] = x[i] * c[i] - x[i + half] * n[i];
          o[i + half] = x[i + half] * c[i + half] + x[i] * n[i + half];
        }
      }
    }
  }
}

}  // namespace eo::core
