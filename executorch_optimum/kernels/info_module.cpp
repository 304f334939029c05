// `executorch_optimum.kernels._eo_kernels_info`: a pybind11 extension module reporting how our
// kernel libraries were built, and the ring-slot arithmetic they rely on (for tests and callers).
// It registers no operator: load the kernels with executorch_optimum.kernels.load_*().
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "executorch_optimum/kernels/build_flags.h"
#include "executorch_optimum/kernels/core/ring_attention.h"
#include "executorch_optimum/kernels/core/schemas.h"

namespace py = pybind11;

namespace {

py::dict build_info() {
  py::dict info;
#if defined(__clang__)
  info["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = std::string("gcc ") + __VERSION__;
#else
  info["compiler"] = "unknown";
#endif
  info["cplusplus"] = static_cast<long>(__cplusplus);
  info["copts"] = std::string(EO_BUILD_COPTS);
#if defined(__OPTIMIZE__)
  info["optimized"] = true;
#else
  info["optimized"] = false;
#endif
#if defined(NDEBUG)
  info["ndebug"] = true;
#else
  info["ndebug"] = false;
#endif
  info["et_kernels_use_threadpool"] = static_cast<bool>(EO_ET_USE_THREADPOOL);
  info["torch_ops_use_at_parallel"] = true;
  info["max_head_dim"] = eo::core::kMaxHeadDim;
  info["simd"] = eo::core::detail::simd_name();
  std::vector<std::string> ops;
  std::vector<std::string> schemas;
  for (const auto& op : eo::core::kOpSchemas) {
    ops.emplace_back(op.name);
    schemas.emplace_back(std::string("eo::") + op.schema);
  }
  info["ops"] = ops;
  info["schemas"] = schemas;
  return info;
}

std::vector<int64_t> slot_positions(int64_t end, int64_t capacity) {
  if (capacity < 1) {
    throw py::value_error("capacity must be >= 1");
  }
  std::vector<int64_t> out(static_cast<std::size_t>(capacity));
  for (int64_t s = 0; s < capacity; ++s) {
    out[static_cast<std::size_t>(s)] = eo::core::ring_slot_position(end, capacity, s);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_eo_kernels_info, m) {
  m.doc() = "Build info of executorch_optimum's C++ kernels, and their ring-slot arithmetic.";
  m.def("build_info", &build_info, "Compiler, flags, ops and threading of the kernel libraries.");
  m.def("slot_positions", &slot_positions, py::arg("end"), py::arg("capacity"),
        "Absolute position held by each ring slot once positions [0, end) were written in order "
        "(-1 = empty).");
  m.def(
      "attended_range",
      [](int64_t pos, int64_t end, int64_t capacity, int64_t window) {
        return py::make_tuple(eo::core::ring_window_lo(pos, end, capacity, window), pos);
      },
      py::arg("pos"), py::arg("end"), py::arg("capacity"), py::arg("window"),
      "Inclusive [lo, hi] of absolute key positions query `pos` attends to (empty if lo > hi).");
}
