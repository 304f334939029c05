// PyTorch registration of our ops (functional + out variants, CPU and Meta) for eager use and
// torch.export. The kernels themselves live in core/ and know nothing of torch.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <string_view>
#include <type_traits>

#include "executorch_optimum/kernels/core/ring_attention.h"
#include "executorch_optimum/kernels/core/rotary.h"
#include "executorch_optimum/kernels/core/scaled_add.h"
#include "executorch_optimum/kernels/core/schemas.h"

namespace {

// ---- scaled_add ------------------------------------------------------------------------------

at::Tensor& scaled_add_out(const at::Tensor& a, const at::Tensor& b, double alpha, at::Tensor& out) {
  TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat,
              "eo::scaled_add takes float32 tensors");
  TORCH_CHECK(a.sizes() == b.sizes(), "eo::scaled_add: a and b must have the same shape");
  out.resize_(a.sizes());
  const at::Tensor a_c = a.contiguous();
  const at::Tensor b_c = b.contiguous();
  eo::core::scaled_add(a_c.const_data_ptr<float>(), b_c.const_data_ptr<float>(),
                       static_cast<float>(alpha), out.mutable_data_ptr<float>(),
                       static_cast<std::size_t>(a.numel()));
  return out;
}

at::Tensor scaled_add(const at::Tensor& a, const at::Tensor& b, double alpha) {
  at::Tensor out = at::empty_like(a, at::MemoryFormat::Contiguous);
  scaled_add_out(a, b, alpha, out);
  return out;
}

at::Tensor scaled_add_meta(const at::Tensor& a, const at::Tensor& b, double alpha) {
  return at::empty_like(a, at::MemoryFormat::Contiguous);
}

at::Tensor& scaled_add_out_meta(const at::Tensor& a, const at::Tensor& b, double alpha, at::Tensor& out) {
  out.resize_(a.sizes());
  return out;
}

// ---- shared helpers --------------------------------------------------------------------------

eo::core::Strides3 strides3(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}

// The last dim must be contiguous; any other layout (e.g. a [B, H, S, D] tensor transposed to
// [B, S, H, D]) is read in place.
at::Tensor last_dim_contiguous(const at::Tensor& t) {
  return t.size(3) <= 1 || t.stride(3) == 1 ? t : t.contiguous();
}

void check_float(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ", t.scalar_type());
}

// Caches are float32 or float16 (the opt-in 16-bit KV cache).
void check_cache(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf, op, ": ", name,
              " must be float32 or float16, got ", t.scalar_type());
}

// Calls fn(T{}) with T the element type of `cache` (float or eo::core::half) as the kernels see it.
template <class Fn>
void with_cache_type(const at::Tensor& cache, Fn&& fn) {
  eo::core::with_cache_type(cache.scalar_type() == at::kHalf, fn);
}

// A cache's data as the kernels' element type T (checked by check_cache).
template <class T>
T* cache_data(const at::Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}

// ---- ring_update_cache -----------------------------------------------------------------------

void check_ring_update(const at::Tensor& value, const at::Tensor& cache, int64_t start_pos) {
  const char* err = eo::core::check_ring_update(value.dim(), cache.dim(), value.sizes().data(),
                                                cache.sizes().data(), start_pos);
  TORCH_CHECK(err == nullptr, "eo::ring_update_cache: ", err ? err : "", " (value ", value.sizes(),
              ", cache ", cache.sizes(), ", start_pos ", start_pos, ")");
  check_float(value, "eo::ring_update_cache", "value");
  check_cache(cache, "eo::ring_update_cache", "cache");
  TORCH_CHECK(cache.size(3) <= 1 || cache.stride(3) == 1,
              "eo::ring_update_cache: the cache's last dim must be contiguous");
}

at::Tensor& ring_update_cache_out(const at::Tensor& value, at::Tensor& cache, int64_t start_pos,
                                  at::Tensor& out) {
  check_ring_update(value, cache, start_pos);
  TORCH_CHECK(out.scalar_type() == at::kLong, "eo::ring_update_cache: out must be int64");
  out.resize_({1});
  const at::Tensor v = last_dim_contiguous(value);
  with_cache_type(cache, [&](auto type) {
    eo::core::ring_update_cache(v.const_data_ptr<float>(), strides3(v), cache_data<decltype(type)>(cache),
                                strides3(cache), v.size(0), v.size(1), v.size(2), v.size(3), cache.size(1),
                                start_pos);
  });
  out.mutable_data_ptr<int64_t>()[0] = start_pos + value.size(1);
  return out;
}

at::Tensor ring_update_cache(const at::Tensor& value, at::Tensor& cache, int64_t start_pos) {
  at::Tensor out = at::empty({1}, value.options().dtype(at::kLong));
  ring_update_cache_out(value, cache, start_pos, out);
  return out;
}

at::Tensor ring_update_cache_meta(const at::Tensor& value, at::Tensor& cache, c10::SymInt start_pos) {
  TORCH_CHECK(value.dim() == 4 && cache.dim() == 4,
              "eo::ring_update_cache: value and cache must be 4-D: [B, S, H, D] and [B, C, H, D]");
  return at::empty({1}, value.options().dtype(at::kLong));
}

at::Tensor& ring_update_cache_out_meta(const at::Tensor& value, at::Tensor& cache, c10::SymInt start_pos,
                                       at::Tensor& out) {
  out.resize_({1});
  return out;
}

// ---- ring_sdpa -------------------------------------------------------------------------------

void check_ring_sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const eo::core::RingSdpaParams& p) {
  const std::array<int64_t, 4> none{};
  const char* err = eo::core::check_ring_sdpa(
      q.dim(), k.dim(), v.dim(), q.dim() == 4 ? q.sizes().data() : none.data(),
      k.dim() == 4 ? k.sizes().data() : none.data(), v.dim() == 4 ? v.sizes().data() : none.data(), p);
  TORCH_CHECK(err == nullptr, "eo::ring_sdpa: ", err ? err : "", " (query ", q.sizes(), ", k_cache ",
              k.sizes(), ", v_cache ", v.sizes(), ")");
  check_float(q, "eo::ring_sdpa", "query");
  check_cache(k, "eo::ring_sdpa", "k_cache");
  TORCH_CHECK(v.scalar_type() == k.scalar_type(), "eo::ring_sdpa: k_cache and v_cache must have the same dtype, got ",
              k.scalar_type(), " and ", v.scalar_type());
}

at::Tensor& ring_sdpa_out(const at::Tensor& query, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          int64_t start_pos, int64_t window, double scale, double softcap, at::Tensor& out) {
  const eo::core::RingSdpaParams p{start_pos, window, static_cast<float>(scale),
                                   static_cast<float>(softcap)};
  check_ring_sdpa(query, k_cache, v_cache, p);
  TORCH_CHECK(out.scalar_type() == at::kFloat, "eo::ring_sdpa: out must be float32");
  out.resize_(query.sizes());
  TORCH_CHECK(out.is_contiguous(), "eo::ring_sdpa: out must be contiguous");
  const at::Tensor q = last_dim_contiguous(query);
  const at::Tensor k = last_dim_contiguous(k_cache);
  const at::Tensor v = last_dim_contiguous(v_cache);
  const eo::core::RingSdpaShape sh{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), k.size(1)};
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  with_cache_type(k, [&](auto type) {
    using T = decltype(type);
    eo::core::ring_sdpa(q.const_data_ptr<float>(), strides3(q), static_cast<const T*>(cache_data<T>(k)), strides3(k),
                        static_cast<const T*>(cache_data<T>(v)), strides3(v), out.mutable_data_ptr<float>(), sh, p,
                        threads, [threads](int64_t n, const auto& fn) {
                          const int64_t grain = std::max<int64_t>(1, n / (4 * threads));
                          at::parallel_for(0, n, grain, fn);
                        });
  });
  return out;
}

at::Tensor ring_sdpa(const at::Tensor& query, const at::Tensor& k_cache, const at::Tensor& v_cache,
                     int64_t start_pos, int64_t window, double scale, double softcap) {
  at::Tensor out = at::empty(query.sizes(), query.options().memory_format(at::MemoryFormat::Contiguous));
  ring_sdpa_out(query, k_cache, v_cache, start_pos, window, scale, softcap, out);
  return out;
}

at::Tensor ring_sdpa_meta(const at::Tensor& query, const at::Tensor& k_cache, const at::Tensor& v_cache,
                          c10::SymInt start_pos, int64_t window, double scale, double softcap) {
  TORCH_CHECK(query.dim() == 4 && k_cache.dim() == 4 && v_cache.dim() == 4,
              "eo::ring_sdpa: query, k_cache and v_cache must be 4-D");
  TORCH_CHECK(query.scalar_type() == at::kFloat, "eo::ring_sdpa: query must be float32");
  return at::empty_like(query, at::MemoryFormat::Contiguous);
}

at::Tensor& ring_sdpa_out_meta(const at::Tensor& query, const at::Tensor& k_cache, const at::Tensor& v_cache,
                               c10::SymInt start_pos, int64_t window, double scale, double softcap,
                               at::Tensor& out) {
  out.resize__symint(query.sym_sizes());
  return out;
}

// ---- rope_ring_sdpa --------------------------------------------------------------------------

// Rotary tables `cos`/`sin` [1 or B, S, D] for `rows` [B, S, H, D] (named `what` in errors).
void check_rotary(const char* op, const char* what, const at::Tensor& rows, const at::Tensor& cos,
                  const at::Tensor& sin) {
  const std::array<int64_t, 4> none{};
  const char* err = eo::core::check_rotary(rows.dim(), rows.dim() == 4 ? rows.sizes().data() : none.data(),
                                           cos.dim() == sin.dim() ? cos.dim() : -1,
                                           cos.dim() == 3 ? cos.sizes().data() : none.data(),
                                           sin.dim() == 3 ? sin.sizes().data() : none.data());
  TORCH_CHECK(err == nullptr, op, ": ", err ? err : "", " (", what, " ", rows.sizes(), ", cos ", cos.sizes(),
              ", sin ", sin.sizes(), ")");
  check_float(cos, op, "cos");
  check_float(sin, op, "sin");
}

// The fused RMS norm of `rows` [B, S, H, D] (none without a weight); `keep` holds the weight's
// contiguous copy while the norm is in use.
eo::core::RowNorm row_norm(const char* op, const at::Tensor& rows, const std::optional<at::Tensor>& weight,
                           double eps, at::Tensor& keep) {
  if (!weight.has_value()) {
    return {};
  }
  const char* err = eo::core::check_row_norm(weight->dim(), weight->numel(), rows.size(3));
  TORCH_CHECK(err == nullptr, op, ": ", err ? err : "", " (norm_weight ", weight->sizes(), ", rows ", rows.sizes(),
              ")");
  check_float(*weight, op, "norm_weight");
  keep = weight->contiguous();
  return {keep.const_data_ptr<float>(), static_cast<float>(eps)};
}

// `op` names the calling op in error messages (eo::rope_ring_sdpa or eo::norm_rope_ring_sdpa).
at::Tensor& any_rope_ring_sdpa_out(const char* op, const at::Tensor& query, const at::Tensor& cos,
                                   const at::Tensor& sin, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                   int64_t start_pos, int64_t window, double scale, double softcap,
                                   const std::optional<at::Tensor>& norm_weight, double norm_eps, at::Tensor& out) {
  check_rotary(op, "query", query, cos, sin);
  check_float(query, op, "query");
  at::Tensor weight;
  const eo::core::RowNorm norm = row_norm(op, query, norm_weight, norm_eps, weight);
  const at::Tensor q = last_dim_contiguous(query);
  const at::Tensor c = cos.contiguous();
  const at::Tensor n = sin.contiguous();
  at::Tensor rotated = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  eo::core::rotate_queries(q.const_data_ptr<float>(), strides3(q), c.const_data_ptr<float>(),
                           n.const_data_ptr<float>(), c.size(0) == 1 ? 0 : c.stride(0), q.size(0), q.size(1),
                           q.size(2), q.size(3), norm, rotated.mutable_data_ptr<float>());
  return ring_sdpa_out(rotated, k_cache, v_cache, start_pos, window, scale, softcap, out);
}

at::Tensor any_rope_ring_sdpa(const char* op, const at::Tensor& query, const at::Tensor& cos, const at::Tensor& sin,
                              const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start_pos,
                              int64_t window, double scale, double softcap,
                              const std::optional<at::Tensor>& norm_weight, double norm_eps) {
  at::Tensor out = at::empty(query.sizes(), query.options().memory_format(at::MemoryFormat::Contiguous));
  any_rope_ring_sdpa_out(op, query, cos, sin, k_cache, v_cache, start_pos, window, scale, softcap, norm_weight,
                         norm_eps, out);
  return out;
}

// ---- rope_kv_update --------------------------------------------------------------------------

// `op` names the calling op in error messages (eo::rope_kv_update or eo::norm_rope_kv_update).
at::Tensor& any_rope_kv_update_out(const char* op, const at::Tensor& key, const at::Tensor& value,
                                   const at::Tensor& cos, const at::Tensor& sin, at::Tensor& k_cache,
                                   at::Tensor& v_cache, int64_t start_pos,
                                   const std::optional<at::Tensor>& norm_weight, double norm_eps, at::Tensor& out) {
  check_ring_update(key, k_cache, start_pos);
  check_ring_update(value, v_cache, start_pos);
  TORCH_CHECK(key.sizes() == value.sizes() && k_cache.sizes() == v_cache.sizes(), op,
              ": key and value, and k_cache and v_cache, must have the same shapes (key ", key.sizes(), ", value ",
              value.sizes(), ", k_cache ", k_cache.sizes(), ", v_cache ", v_cache.sizes(), ")");
  check_rotary(op, "key", key, cos, sin);
  TORCH_CHECK(k_cache.scalar_type() == v_cache.scalar_type(), op,
              ": k_cache and v_cache must have the same dtype, got ", k_cache.scalar_type(), " and ",
              v_cache.scalar_type());
  at::Tensor weight;
  const eo::core::RowNorm norm = row_norm(op, key, norm_weight, norm_eps, weight);
  TORCH_CHECK(out.scalar_type() == at::kLong, op, ": out must be int64");
  out.resize_({1});
  const at::Tensor k = last_dim_contiguous(key);
  const at::Tensor v = last_dim_contiguous(value);
  const at::Tensor c = cos.contiguous();
  const at::Tensor n = sin.contiguous();
  with_cache_type(k_cache, [&](auto type) {
    using T = decltype(type);
    eo::core::ring_update_rotated(k.const_data_ptr<float>(), strides3(k), v.const_data_ptr<float>(), strides3(v),
                                  c.const_data_ptr<float>(), n.const_data_ptr<float>(),
                                  c.size(0) == 1 ? 0 : c.stride(0), cache_data<T>(k_cache), strides3(k_cache),
                                  cache_data<T>(v_cache), strides3(v_cache), k.size(0), k.size(1), k.size(2),
                                  k.size(3), k_cache.size(1), start_pos, norm);
  });
  out.mutable_data_ptr<int64_t>()[0] = start_pos + key.size(1);
  return out;
}

at::Tensor any_rope_kv_update(const char* op, const at::Tensor& key, const at::Tensor& value, const at::Tensor& cos,
                              const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache, int64_t start_pos,
                              const std::optional<at::Tensor>& norm_weight, double norm_eps) {
  at::Tensor out = at::empty({1}, key.options().dtype(at::kLong));
  any_rope_kv_update_out(op, key, value, cos, sin, k_cache, v_cache, start_pos, norm_weight, norm_eps, out);
  return out;
}

// ---- the registered signatures over the implementations above ------------------------------
// eo::rope_* without a norm, eo::norm_rope_* with one (see schemas.h for why two ops).

at::Tensor& rope_ring_sdpa_out(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                               const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start_pos, int64_t window,
                               double scale, double softcap, at::Tensor& out) {
  return any_rope_ring_sdpa_out("eo::rope_ring_sdpa", q, cos, sin, k_cache, v_cache, start_pos, window, scale,
                                softcap, std::nullopt, 0.0, out);
}

at::Tensor rope_ring_sdpa(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& k_cache,
                          const at::Tensor& v_cache, int64_t start_pos, int64_t window, double scale, double softcap) {
  return any_rope_ring_sdpa("eo::rope_ring_sdpa", q, cos, sin, k_cache, v_cache, start_pos, window, scale, softcap,
                            std::nullopt, 0.0);
}

at::Tensor& norm_rope_ring_sdpa_out(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                                    const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start_pos,
                                    int64_t window, double scale, double softcap, const at::Tensor& norm_weight,
                                    double norm_eps, at::Tensor& out) {
  return any_rope_ring_sdpa_out("eo::norm_rope_ring_sdpa", q, cos, sin, k_cache, v_cache, start_pos, window, scale,
                                softcap, norm_weight, norm_eps, out);
}

at::Tensor norm_rope_ring_sdpa(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                               const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start_pos, int64_t window,
                               double scale, double softcap, const at::Tensor& norm_weight, double norm_eps) {
  return any_rope_ring_sdpa("eo::norm_rope_ring_sdpa", q, cos, sin, k_cache, v_cache, start_pos, window, scale,
                            softcap, norm_weight, norm_eps);
}

at::Tensor rope_ring_sdpa_meta(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                               const at::Tensor& k_cache, const at::Tensor& v_cache, c10::SymInt start_pos,
                               int64_t window, double scale, double softcap) {
  return ring_sdpa_meta(q, k_cache, v_cache, start_pos, window, scale, softcap);
}

at::Tensor& rope_ring_sdpa_out_meta(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                                    const at::Tensor& k_cache, const at::Tensor& v_cache, c10::SymInt start_pos,
                                    int64_t window, double scale, double softcap, at::Tensor& out) {
  return ring_sdpa_out_meta(q, k_cache, v_cache, start_pos, window, scale, softcap, out);
}

at::Tensor norm_rope_ring_sdpa_meta(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                                    const at::Tensor& k_cache, const at::Tensor& v_cache, c10::SymInt start_pos,
                                    int64_t window, double scale, double softcap, const at::Tensor& norm_weight,
                                    double norm_eps) {
  return ring_sdpa_meta(q, k_cache, v_cache, start_pos, window, scale, softcap);
}

at::Tensor& norm_rope_ring_sdpa_out_meta(const at::Tensor& q, const at::Tensor& cos, const at::Tensor& sin,
                                         const at::Tensor& k_cache, const at::Tensor& v_cache, c10::SymInt start_pos,
                                         int64_t window, double scale, double softcap, const at::Tensor& norm_weight,
                                         double norm_eps, at::Tensor& out) {
  return ring_sdpa_out_meta(q, k_cache, v_cache, start_pos, window, scale, softcap, out);
}

at::Tensor& rope_kv_update_out(const at::Tensor& key, const at::Tensor& value, const at::Tensor& cos,
                               const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache, int64_t start_pos,
                               at::Tensor& out) {
  return any_rope_kv_update_out("eo::rope_kv_update", key, value, cos, sin, k_cache, v_cache, start_pos,
                                std::nullopt, 0.0, out);
}

at::Tensor rope_kv_update(const at::Tensor& key, const at::Tensor& value, const at::Tensor& cos, const at::Tensor& sin,
                          at::Tensor& k_cache, at::Tensor& v_cache, int64_t start_pos) {
  return any_rope_kv_update("eo::rope_kv_update", key, value, cos, sin, k_cache, v_cache, start_pos, std::nullopt,
                            0.0);
}

at::Tensor& norm_rope_kv_update_out(const at::Tensor& key, const at::Tensor& value, const at::Tensor& cos,
                                    const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache,
                                    int64_t start_pos, const at::Tensor& norm_weight, double norm_eps,
                                    at::Tensor& out) {
  return any_rope_kv_update_out("eo::norm_rope_kv_update", key, value, cos, sin, k_cache, v_cache, start_pos,
                                norm_weight, norm_eps, out);
}

at::Tensor norm_rope_kv_update(const at::Tensor& key, const at::Tensor& value, const at::Tensor& cos,
                               const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache, int64_t start_pos,
                               const at::Tensor& norm_weight, double norm_eps) {
  return any_rope_kv_update("eo::norm_rope_kv_update", key, value, cos, sin, k_cache, v_cache, start_pos,
                            norm_weight, norm_eps);
}

at::Tensor rope_kv_update_meta(const at::Tensor& key, const at::Tensor& value, const at::Tensor& cos,
                               const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache,
                               c10::SymInt start_pos) {
  return ring_update_cache_meta(key, k_cache, start_pos);
}

at::Tensor& rope_kv_update_out_meta(const at::Tensor& key, const at::Tensor& value, const at::Tensor& cos,
                                    const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache,
                                    c10::SymInt start_pos, at::Tensor& out) {
  out.resize_({1});
  return out;
}

at::Tensor norm_rope_kv_update_meta(const at::Tensor& key, const at::Tensor& value, const at::Tensor& cos,
                                    const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache,
                                    c10::SymInt start_pos, const at::Tensor& norm_weight, double norm_eps) {
  return ring_update_cache_meta(key, k_cache, start_pos);
}

at::Tensor& norm_rope_kv_update_out_meta(const at::Tensor& key, const at::Tensor& value, const at::Tensor& cos,
                                         const at::Tensor& sin, at::Tensor& k_cache, at::Tensor& v_cache,
                                         c10::SymInt start_pos, const at::Tensor& norm_weight, double norm_eps,
                                         at::Tensor& out) {
  out.resize_({1});
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(eo, m) {
  for (const auto& op : eo::core::kOpSchemas) {
    m.def(op.schema);
  }
}

TORCH_LIBRARY_IMPL(eo, CPU, m) {
  m.impl("scaled_add", scaled_add);
  m.impl("scaled_add.out", scaled_add_out);
  m.impl("ring_update_cache", ring_update_cache);
  m.impl("ring_update_cache.out", ring_update_cache_out);
  m.impl("ring_sdpa", ring_sdpa);
  m.impl("ring_sdpa.out", ring_sdpa_out);
  m.impl("rope_ring_sdpa", rope_ring_sdpa);
  m.impl("rope_ring_sdpa.out", rope_ring_sdpa_out);
  m.impl("rope_kv_update", rope_kv_update);
  m.impl("rope_kv_update.out", rope_kv_update_out);
  m.impl("norm_rope_ring_sdpa", norm_rope_ring_sdpa);
  m.impl("norm_rope_ring_sdpa.out", norm_rope_ring_sdpa_out);
  m.impl("norm_rope_kv_update", norm_rope_kv_update);
  m.impl("norm_rope_kv_update.out", norm_rope_kv_update_out);
}

TORCH_LIBRARY_IMPL(eo, Meta, m) {
  m.impl("scaled_add", scaled_add_meta);
  m.impl("scaled_add.out", scaled_add_out_meta);
  m.impl("ring_update_cache", TORCH_FN(ring_update_cache_meta));
  m.impl("ring_update_cache.out", TORCH_FN(ring_update_cache_out_meta));
  m.impl("ring_sdpa", TORCH_FN(ring_sdpa_meta));
  m.impl("ring_sdpa.out", TORCH_FN(ring_sdpa_out_meta));
  m.impl("rope_ring_sdpa", TORCH_FN(rope_ring_sdpa_meta));
  m.impl("rope_ring_sdpa.out", TORCH_FN(rope_ring_sdpa_out_meta));
  m.impl("rope_kv_update", TORCH_FN(rope_kv_update_meta));
  m.impl("rope_kv_update.out", TORCH_FN(rope_kv_update_out_meta));
  m.impl("norm_rope_ring_sdpa", TORCH_FN(norm_rope_ring_sdpa_meta));
  m.impl("norm_rope_ring_sdpa.out", TORCH_FN(norm_rope_ring_sdpa_out_meta));
  m.impl("norm_rope_kv_update", TORCH_FN(norm_rope_kv_update_meta));
  m.impl("norm_rope_kv_update.out", TORCH_FN(norm_rope_kv_update_out_meta));
}
