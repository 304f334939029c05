// The ring attention kernel on raw buffers, built with AddressSanitizer, against a float64
// reference: every SIMD path (EO_KERNELS_SIMD, set per test target) over shapes that reach each
// code path of the kernel (few rows / transposed blocks, windows starting inside a key block,
// head-dim tails, softcap, queries with no key, several thread splits, merged key parts), with
// float and with half caches (against the float64 attention over the half-rounded rows). A read or
// write outside the caller's buffers or the kernel's own scratch fails the test even when the
// numbers agree.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "executorch_optimum/kernels/core/ring_attention.h"

namespace {

struct Case {
  const char* name;
  int64_t S, Hq, Hkv, D, C, start, window;
  float softcap;
};

// Exact attention of query (i, h) over the keys its window sees in the ring, in float64.
std::vector<double> reference(const Case& c, const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& v, float scale) {
  std::vector<double> out(static_cast<std::size_t>(c.S * c.Hq * c.D), 0.0);
  const int64_t end = c.start + c.S;
  const int64_t group = c.Hq / c.Hkv;
  for (int64_t i = 0; i < c.S; ++i) {
    const int64_t pos = c.start + i;
    const int64_t lo = eo::core::ring_window_lo(pos, end, c.C, c.window);
    for (int64_t h = 0; h < c.Hq; ++h) {
      const int64_t kv = h / group;
      std::vector<double> w;
      double top = -INFINITY;
      for (int64_t p = lo; p <= pos; ++p) {
        const float* key = &k[static_cast<std::size_t>(((p % c.C) * c.Hkv + kv) * c.D)];
        double s = 0.0;
        for (int64_t d = 0; d < c.D; ++d) {
          s += static_cast<double>(q[static_cast<std::size_t>((i * c.Hq + h) * c.D + d)]) * key[d];
        }
        s *= scale;
        if (c.softcap > 0.0f) {
          s = c.softcap * std::tanh(s / c.softcap);
        }
        w.push_back(s);
        top = std::max(top, s);
      }
      double total = 0.0;
      for (double& x : w) {
        x = std::exp(x - top);
        total += x;
      }
      for (int64_t p = lo, j = 0; p <= pos; ++p, ++j) {
        const float* value = &v[static_cast<std::size_t>(((p % c.C) * c.Hkv + kv) * c.D)];
        for (int64_t d = 0; d < c.D; ++d) {
          out[static_cast<std::size_t>((i * c.Hq + h) * c.D + d)] += w[static_cast<std::size_t>(j)] / total * value[d];
        }
      }
    }
  }
  return out;
}

// Max of |got - want| / (2e-5 + 1e-4 |want|): <= 1 passes (the Python tests' tolerance). T is the
// caches' element type; the reference reads the same (rounded) rows as floats.
template <class T>
double run_case(const Case& c, int64_t threads, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.5f);
  auto fill = [&](std::vector<float>& x, std::size_t n) {
    x.resize(n);
    for (float& e : x) {
      e = normal(rng);
    }
  };
  std::vector<float> q, k, v;
  fill(q, static_cast<std::size_t>(c.S * c.Hq * c.D));
  fill(k, static_cast<std::size_t>(c.C * c.Hkv * c.D));
  fill(v, static_cast<std::size_t>(c.C * c.Hkv * c.D));
  std::vector<T> k_cache(k.size()), v_cache(v.size());
  eo::core::store_row(k_cache.data(), k.data(), static_cast<int64_t>(k.size()));
  eo::core::store_row(v_cache.data(), v.data(), static_cast<int64_t>(v.size()));
  for (std::size_t i = 0; i < k.size(); ++i) {
    k[i] = static_cast<float>(k_cache[i]);
    v[i] = static_cast<float>(v_cache[i]);
  }
  std::vector<float> out(q.size(), NAN);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  const eo::core::Strides3 qs{c.S * c.Hq * c.D, c.Hq * c.D, c.D};
  const eo::core::Strides3 ks{c.C * c.Hkv * c.D, c.Hkv * c.D, c.D};
  eo::core::ring_sdpa(q.data(), qs, k_cache.data(), ks, v_cache.data(), ks, out.data(),
                      eo::core::RingSdpaShape{1, c.S, c.Hq, c.Hkv, c.D, c.C},
                      eo::core::RingSdpaParams{c.start, c.window, scale, c.softcap}, threads,
                      [](int64_t n, const auto& fn) {
                        for (int64_t b = 0; b < n; b += 3) {  // uneven ranges, like a threadpool
                          fn(b, std::min(n, b + 3));
                        }
                      });
  const std::vector<double> want = reference(c, q, k, v, scale);
  double worst = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double err = std::fabs(out[i] - want[i]) / (2e-5 + 1e-4 * std::fabs(want[i]));
    worst = std::isnan(err) ? INFINITY : std::max(worst, err);
  }
  return worst;
}

}  // namespace

int main() {
  const Case cases[] = {
      // name, S, Hq, Hkv, D, C, start, window, softcap
      {"smollm2_prefill", 128, 9, 3, 64, 300, 0, 0, 0.0f},
      {"smollm2_decode", 1, 9, 3, 64, 300, 250, 0, 0.0f},
      {"qwen3_prefill_mid", 100, 16, 8, 128, 400, 150, 0, 0.0f},
      {"qwen3_decode", 1, 16, 8, 128, 400, 399, 0, 0.0f},
      {"window_inside_block_many_rows", 128, 1, 1, 16, 200, 60, 20, 0.0f},
      {"window_inside_block_gqa", 96, 8, 2, 32, 160, 40, 37, 0.0f},
      {"wrapped_ring_softcap", 40, 4, 2, 48, 70, 500, 50, 30.0f},
      {"head_dim_tail", 70, 6, 2, 20, 100, 5, 0, 0.0f},
      {"odd_head_dim_decode", 1, 5, 1, 7, 90, 88, 33, 5.0f},
      {"more_queries_than_slots", 30, 2, 1, 16, 12, 0, 12, 0.0f},
      // Decode over 900 and 1700 keys: 15 and 27 key parts merged; the second in a wrapped ring.
      {"long_decode_key_parts", 1, 9, 3, 64, 1000, 899, 0, 0.0f},
      {"long_decode_wrapped_window_parts", 1, 6, 2, 40, 1800, 2500, 1700, 4.0f},
      // Cache rows of 4 KiB and more go position by position (qwen3_decode above too): 6 query
      // heads per kv head, a head dim tail, softcap, a window in a wrapped ring.
      {"page_rows_decode_group6_window", 1, 96, 16, 72, 300, 700, 250, 20.0f},
  };
  std::printf("simd: %s\n", eo::core::detail::simd_name());
  std::mt19937 rng(0);
  int failures = 0;
  for (const Case& c : cases) {
    for (const bool half : {false, true}) {
      for (int64_t threads : {1, 2, 5}) {
        const double worst = half ? run_case<eo::core::half>(c, threads, rng) : run_case<float>(c, threads, rng);
        const bool ok = worst <= 1.0;
        failures += ok ? 0 : 1;
        std::printf("%s %s %s threads=%lld worst=%.3g\n", ok ? "PASS" : "FAIL", c.name, half ? "half" : "float",
                    static_cast<long long>(threads), worst);
      }
    }
  }
  return failures == 0 ? 0 : 1;
}
