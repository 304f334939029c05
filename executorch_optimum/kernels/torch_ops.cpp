// PyTorch registration of our ops (functional + out variants) for eager use and export.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "executorch_optimum/kernels/core/scaled_add.h"

namespace {

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

at::Tensor& scaled_add_out_meta(const at::Tensor& a, const at::Tensor& b, double alpha,
                                at::Tensor& out) {
  out.resize_(a.sizes());
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(eo, m) {
  m.def("scaled_add(Tensor a, Tensor b, float alpha) -> Tensor");
  m.def("scaled_add.out(Tensor a, Tensor b, float alpha, *, Tensor(a!) out) -> Tensor(a!)");
}

TORCH_LIBRARY_IMPL(eo, CPU, m) {
  m.impl("scaled_add", scaled_add);
  m.impl("scaled_add.out", scaled_add_out);
}

TORCH_LIBRARY_IMPL(eo, Meta, m) {
  m.impl("scaled_add", scaled_add_meta);
  m.impl("scaled_add.out", scaled_add_out_meta);
}
