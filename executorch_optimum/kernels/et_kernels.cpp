// ExecuTorch runtime kernels for the out variants of our ops. Built with ET_USE_THREADPOOL
// (BUILD.bazel), so ring_sdpa runs on ExecuTorch's threadpool through its parallel_for.
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <algorithm>
#include <array>
#include <type_traits>
#include <vector>

#include "executorch_optimum/kernels/core/ring_attention.h"
#include "executorch_optimum/kernels/core/rotary.h"
#include "executorch_optimum/kernels/core/scaled_add.h"

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

// ---- scaled_add ------------------------------------------------------------------------------

Tensor& scaled_add_out(KernelRuntimeContext& ctx, const Tensor& a, const Tensor& b, double alpha,
                       Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, a.scalar_type() == ScalarType::Float && b.scalar_type() == ScalarType::Float,
                      InvalidArgument, out, "eo::scaled_add takes float32 tensors");
  ET_KERNEL_CHECK_MSG(ctx, a.numel() == b.numel(), InvalidArgument, out,
                      "eo::scaled_add: a and b must have the same shape");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, a.sizes()) == Error::Ok,
                  InvalidArgument, out);
  eo::core::scaled_add(a.const_data_ptr<float>(), b.const_data_ptr<float>(),
                       static_cast<float>(alpha), out.mutable_data_ptr<float>(),
                       static_cast<std::size_t>(a.numel()));
  return out;
}

// ---- shared helpers --------------------------------------------------------------------------

// ExecuTorch tensors carry int32 sizes/strides; the core wants int64.
std::array<int64_t, 4> sizes4(const Tensor& t) {
  std::array<int64_t, 4> s{};
  for (int d = 0; d < 4 && d < t.dim(); ++d) {
    s[d] = t.size(d);
  }
  return s;
}

eo::core::Strides3 strides3(const Tensor& t) {
  return {static_cast<int64_t>(t.strides()[0]), static_cast<int64_t>(t.strides()[1]),
          static_cast<int64_t>(t.strides()[2])};
}

bool last_dim_contiguous(const Tensor& t) {
  return t.size(3) <= 1 || t.strides()[3] == 1;
}

// Caches are float32 or float16 (the opt-in 16-bit KV cache).
bool cache_type(const Tensor& t) {
  return t.scalar_type() == ScalarType::Float || t.scalar_type() == ScalarType::Half;
}

// Calls fn(T{}) with T the element type of `cache` (float or eo::core::half) as the kernels see it.
template <class Fn>
void with_cache_type(const Tensor& cache, Fn&& fn) {
  eo::core::with_cache_type(cache.scalar_type() == ScalarType::Half, fn);
}

// A cache's data as the kernels' element type T (checked by cache_type).
template <class T>
T* cache_data(const Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}

// ---- ring_update_cache -----------------------------------------------------------------------

Tensor& ring_update_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache,
                              int64_t start_pos, Tensor& out) {
  const auto vs = sizes4(value);
  const auto cs = sizes4(cache);
  const char* err = eo::core::check_ring_update(value.dim(), cache.dim(), vs.data(), cs.data(), start_pos);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "eo::ring_update_cache: %s",
                      err ? err : "");
  ET_KERNEL_CHECK_MSG(ctx, value.scalar_type() == ScalarType::Float && cache_type(cache), InvalidArgument, out,
                      "eo::ring_update_cache takes a float32 value and a float32 or float16 cache");
  ET_KERNEL_CHECK_MSG(ctx, last_dim_contiguous(value) && last_dim_contiguous(cache), InvalidArgument, out,
                      "eo::ring_update_cache: the last dim must be contiguous");
  ET_KERNEL_CHECK_MSG(ctx, out.scalar_type() == ScalarType::Long, InvalidArgument, out,
                      "eo::ring_update_cache: out must be int64");
  const executorch::aten::SizesType one[1] = {1};
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, {one, 1}) == Error::Ok, InvalidArgument,
                  out);
  with_cache_type(cache, [&](auto type) {
    eo::core::ring_update_cache(value.const_data_ptr<float>(), strides3(value), cache_data<decltype(type)>(cache),
                                strides3(cache), vs[0], vs[1], vs[2], vs[3], cs[1], start_pos);
  });
  out.mutable_data_ptr<int64_t>()[0] = start_pos + vs[1];
  return out;
}

// ---- ring_sdpa -------------------------------------------------------------------------------

// Checks shapes and dtypes, resizes `out` to the query's shape; false when the kernel failed.
bool prepare_ring_sdpa(KernelRuntimeContext& ctx, const char* op, const Tensor& query, const Tensor& k_cache,
                       const Tensor& v_cache, const eo::core::RingSdpaParams& p, Tensor& out) {
  const auto qs = sizes4(query);
  const auto ks = sizes4(k_cache);
  const auto vs = sizes4(v_cache);
  const char* err =
      eo::core::check_ring_sdpa(query.dim(), k_cache.dim(), v_cache.dim(), qs.data(), ks.data(), vs.data(), p);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, false, "%s: %s", op, err ? err : "");
  ET_KERNEL_CHECK_MSG(ctx,
                      query.scalar_type() == ScalarType::Float && out.scalar_type() == ScalarType::Float &&
                          cache_type(k_cache) && v_cache.scalar_type() == k_cache.scalar_type(),
                      InvalidArgument, false, "%s takes a float32 query and float32 or float16 caches of one dtype",
                      op);
  ET_KERNEL_CHECK_MSG(ctx, last_dim_contiguous(query) && last_dim_contiguous(k_cache) &&
                               last_dim_contiguous(v_cache),
                      InvalidArgument, false, "%s: the last dim must be contiguous", op);
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, query.sizes()) == Error::Ok, InvalidArgument,
                  false);
  ET_KERNEL_CHECK_MSG(ctx, executorch::runtime::tensor_is_contiguous(out), InvalidArgument, false,
                      "%s: out must be contiguous", op);
  return true;
}

// The attention itself on ExecuTorch's threadpool, queries read from `q` with strides `q_strides`.
void run_ring_sdpa(KernelRuntimeContext& ctx, const char* op, const float* q, eo::core::Strides3 q_strides,
                   const Tensor& query, const Tensor& k_cache, const Tensor& v_cache,
                   const eo::core::RingSdpaParams& p, Tensor& out) {
  const auto qs = sizes4(query);
  const auto ks = sizes4(k_cache);
  const eo::core::RingSdpaShape sh{qs[0], qs[1], qs[2], ks[2], qs[3], ks[1]};
  bool ok = true;
  const int64_t threads = std::max<int64_t>(1, executorch::extension::get_thread_count());
  with_cache_type(k_cache, [&](auto type) {
    using T = decltype(type);
    eo::core::ring_sdpa(q, q_strides, static_cast<const T*>(cache_data<T>(k_cache)), strides3(k_cache),
                        static_cast<const T*>(cache_data<T>(v_cache)), strides3(v_cache),
                        out.mutable_data_ptr<float>(), sh, p, threads, [&ok, threads](int64_t n, const auto& fn) {
                          const int64_t grain = std::max<int64_t>(1, n / (4 * threads));
                          ok = executorch::extension::parallel_for(0, n, grain, fn) && ok;
                        });
  });
  ET_KERNEL_CHECK_MSG(ctx, ok, Internal, , "%s: parallel_for failed", op);
}

Tensor& ring_sdpa_out(KernelRuntimeContext& ctx, const Tensor& query, const Tensor& k_cache,
                      const Tensor& v_cache, int64_t start_pos, int64_t window, double scale, double softcap,
                      Tensor& out) {
  const eo::core::RingSdpaParams p{start_pos, window, static_cast<float>(scale),
                                   static_cast<float>(softcap)};
  if (prepare_ring_sdpa(ctx, "eo::ring_sdpa", query, k_cache, v_cache, p, out)) {
    run_ring_sdpa(ctx, "eo::ring_sdpa", query.const_data_ptr<float>(), strides3(query), query, k_cache, v_cache,
                  p, out);
  }
  return out;
}

// The rotary tables' sizes (0 past their dims) and the rotary check for rows [B, S, H, D].
const char* check_tables(const Tensor& rows, const Tensor& cos, const Tensor& sin, std::array<int64_t, 3>& cs) {
  const auto rs = sizes4(rows);
  std::array<int64_t, 3> ns{};
  for (int d = 0; d < 3; ++d) {
    cs[d] = cos.dim() > d ? cos.size(d) : 0;
    ns[d] = sin.dim() > d ? sin.size(d) : 0;
  }
  const char* err =
      eo::core::check_rotary(rows.dim(), rs.data(), cos.dim() == sin.dim() ? cos.dim() : -1, cs.data(), ns.data());
  if (err != nullptr) {
    return err;
  }
  if (cos.scalar_type() != ScalarType::Float || sin.scalar_type() != ScalarType::Float) {
    return "cos and sin must be float32";
  }
  if (!executorch::runtime::tensor_is_contiguous(cos) || !executorch::runtime::tensor_is_contiguous(sin)) {
    return "cos and sin must be contiguous";
  }
  return nullptr;
}

// The fused RMS norm of `rows` [B, S, H, D] (none without a weight); nullptr error when valid.
const char* row_norm(const Tensor& rows, const executorch::aten::optional<Tensor>& weight, double eps,
                     eo::core::RowNorm& norm) {
  norm = {};
  if (!weight.has_value()) {
    return nullptr;
  }
  const char* err = eo::core::check_row_norm(weight->dim(), weight->numel(), rows.size(3));
  if (err != nullptr) {
    return err;
  }
  if (weight->scalar_type() != ScalarType::Float || !executorch::runtime::tensor_is_contiguous(*weight)) {
    return "the norm weight must be a contiguous float32 tensor";
  }
  norm = {weight->const_data_ptr<float>(), static_cast<float>(eps)};
  return nullptr;
}

// ---- rope_ring_sdpa --------------------------------------------------------------------------

// `op` names the calling op in error messages (eo::rope_ring_sdpa or eo::norm_rope_ring_sdpa).
Tensor& any_rope_ring_sdpa_out(KernelRuntimeContext& ctx, const char* op, const Tensor& query, const Tensor& cos,
                               const Tensor& sin, const Tensor& k_cache, const Tensor& v_cache, int64_t start_pos,
                               int64_t window, double scale, double softcap,
                               const executorch::aten::optional<Tensor>& norm_weight, double norm_eps, Tensor& out) {
  const eo::core::RingSdpaParams p{start_pos, window, static_cast<float>(scale),
                                   static_cast<float>(softcap)};
  if (!prepare_ring_sdpa(ctx, op, query, k_cache, v_cache, p, out)) {
    return out;
  }
  const auto qs = sizes4(query);
  std::array<int64_t, 3> cs{};
  const char* err = check_tables(query, cos, sin, cs);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s: %s", op, err ? err : "");
  eo::core::RowNorm norm;
  err = row_norm(query, norm_weight, norm_eps, norm);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s: %s", op, err ? err : "");
  std::vector<float> rotated(static_cast<std::size_t>(query.numel()));
  eo::core::rotate_queries(query.const_data_ptr<float>(), strides3(query), cos.const_data_ptr<float>(),
                           sin.const_data_ptr<float>(), cs[0] == 1 ? 0 : cs[1] * cs[2], qs[0], qs[1], qs[2], qs[3],
                           norm, rotated.data());
  const eo::core::Strides3 contiguous{qs[1] * qs[2] * qs[3], qs[2] * qs[3], qs[3]};
  run_ring_sdpa(ctx, op, rotated.data(), contiguous, query, k_cache, v_cache, p, out);
  return out;
}

// ---- rope_kv_update --------------------------------------------------------------------------

// `op` names the calling op in error messages (eo::rope_kv_update or eo::norm_rope_kv_update).
Tensor& any_rope_kv_update_out(KernelRuntimeContext& ctx, const char* op, const Tensor& key, const Tensor& value,
                               const Tensor& cos, const Tensor& sin, Tensor& k_cache, Tensor& v_cache,
                               int64_t start_pos, const executorch::aten::optional<Tensor>& norm_weight,
                               double norm_eps, Tensor& out) {
  const auto ks = sizes4(key);
  const auto cs = sizes4(k_cache);
  const char* err = eo::core::check_ring_update(key.dim(), k_cache.dim(), ks.data(), cs.data(), start_pos);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s: %s", op, err ? err : "");
  ET_KERNEL_CHECK_MSG(ctx, sizes4(value) == ks && value.dim() == key.dim() && sizes4(v_cache) == cs &&
                               v_cache.dim() == k_cache.dim(),
                      InvalidArgument, out, "%s: key and value, and k_cache and v_cache, must have the same shapes",
                      op);
  ET_KERNEL_CHECK_MSG(ctx,
                      key.scalar_type() == ScalarType::Float && value.scalar_type() == ScalarType::Float &&
                          cache_type(k_cache) && v_cache.scalar_type() == k_cache.scalar_type(),
                      InvalidArgument, out, "%s takes float32 keys and values, and float32 or float16 caches of one dtype",
                      op);
  ET_KERNEL_CHECK_MSG(ctx,
                      last_dim_contiguous(key) && last_dim_contiguous(value) && last_dim_contiguous(k_cache) &&
                          last_dim_contiguous(v_cache),
                      InvalidArgument, out, "%s: the last dim must be contiguous", op);
  std::array<int64_t, 3> tables{};
  err = check_tables(key, cos, sin, tables);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s: %s", op, err ? err : "");
  eo::core::RowNorm norm;
  err = row_norm(key, norm_weight, norm_eps, norm);
  ET_KERNEL_CHECK_MSG(ctx, err == nullptr, InvalidArgument, out, "%s: %s", op, err ? err : "");
  ET_KERNEL_CHECK_MSG(ctx, out.scalar_type() == ScalarType::Long, InvalidArgument, out, "%s: out must be int64",
                      op);
  const executorch::aten::SizesType one[1] = {1};
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, {one, 1}) == Error::Ok, InvalidArgument, out);
  with_cache_type(k_cache, [&](auto type) {
    using T = decltype(type);
    eo::core::ring_update_rotated(key.const_data_ptr<float>(), strides3(key), value.const_data_ptr<float>(),
                                  strides3(value), cos.const_data_ptr<float>(), sin.const_data_ptr<float>(),
                                  tables[0] == 1 ? 0 : tables[1] * tables[2], cache_data<T>(k_cache),
                                  strides3(k_cache), cache_data<T>(v_cache), strides3(v_cache), ks[0], ks[1], ks[2],
                                  ks[3], cs[1], start_pos, norm);
  });
  out.mutable_data_ptr<int64_t>()[0] = start_pos + ks[1];
  return out;
}

// eo::rope_* without a norm, eo::norm_rope_* with one (see schemas.h for why two ops).
Tensor& rope_ring_sdpa_out(KernelRuntimeContext& ctx, const Tensor& query, const Tensor& cos, const Tensor& sin,
                           const Tensor& k_cache, const Tensor& v_cache, int64_t start_pos, int64_t window,
                           double scale, double softcap, Tensor& out) {
  return any_rope_ring_sdpa_out(ctx, "eo::rope_ring_sdpa", query, cos, sin, k_cache, v_cache, start_pos, window,
                                scale, softcap, executorch::aten::nullopt, 0.0, out);
}

Tensor& norm_rope_ring_sdpa_out(KernelRuntimeContext& ctx, const Tensor& query, const Tensor& cos, const Tensor& sin,
                                const Tensor& k_cache, const Tensor& v_cache, int64_t start_pos, int64_t window,
                                double scale, double softcap, const Tensor& norm_weight, double norm_eps,
                                Tensor& out) {
  return any_rope_ring_sdpa_out(ctx, "eo::norm_rope_ring_sdpa", query, cos, sin, k_cache, v_cache, start_pos,
                                window, scale, softcap, executorch::aten::optional<Tensor>(norm_weight), norm_eps,
                                out);
}

Tensor& rope_kv_update_out(KernelRuntimeContext& ctx, const Tensor& key, const Tensor& value, const Tensor& cos,
                           const Tensor& sin, Tensor& k_cache, Tensor& v_cache, int64_t start_pos, Tensor& out) {
  return any_rope_kv_update_out(ctx, "eo::rope_kv_update", key, value, cos, sin, k_cache, v_cache, start_pos,
                                executorch::aten::nullopt, 0.0, out);
}

Tensor& norm_rope_kv_update_out(KernelRuntimeContext& ctx, const Tensor& key, const Tensor& value, const Tensor& cos,
                                const Tensor& sin, Tensor& k_cache, Tensor& v_cache, int64_t start_pos,
                                const Tensor& norm_weight, double norm_eps, Tensor& out) {
  return any_rope_kv_update_out(ctx, "eo::norm_rope_kv_update", key, value, cos, sin, k_cache, v_cache,
                                start_pos, executorch::aten::optional<Tensor>(norm_weight), norm_eps, out);
}

}  // namespace

EXECUTORCH_LIBRARY(eo, "scaled_add.out", scaled_add_out);
EXECUTORCH_LIBRARY(eo, "ring_update_cache.out", ring_update_cache_out);
EXECUTORCH_LIBRARY(eo, "ring_sdpa.out", ring_sdpa_out);
EXECUTORCH_LIBRARY(eo, "rope_ring_sdpa.out", rope_ring_sdpa_out);
EXECUTORCH_LIBRARY(eo, "rope_kv_update.out", rope_kv_update_out);
EXECUTORCH_LIBRARY(eo, "norm_rope_ring_sdpa.out", norm_rope_ring_sdpa_out);
EXECUTORCH_LIBRARY(eo, "norm_rope_kv_update.out", norm_rope_kv_update_out);
