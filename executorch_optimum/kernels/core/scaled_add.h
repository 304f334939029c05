// out[i] = a[i] + alpha * b[i]. The smoke op that proves our C++ path end to end: one
// portable implementation on raw buffers, registered for PyTorch and for ExecuTorch.
#pragma once

#include <cstddef>

namespace eo::core {

inline void scaled_add(const float* a, const float* b, float alpha, float* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = a[i] + alpha * b[i];
  }
}

}  // namespace eo::core
