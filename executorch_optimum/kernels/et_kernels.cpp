// ExecuTorch runtime kernels for the out variants of our ops.
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include "executorch_optimum/kernels/core/scaled_add.h"

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

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

}  // namespace

EXECUTORCH_LIBRARY(eo, "scaled_add.out", scaled_add_out);
