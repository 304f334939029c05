// The schemas of our `eo::` operators: one source for the PyTorch registration and the build
// info module. Every op has a functional overload and an `.out` overload whose non-out
// arguments are identical, with a keyword-only `out` last (the ExecuTorch kernel signature).
#pragma once

namespace eo::core {

struct OpSchema {
  const char* name;    // "ns::op.overload" as the ExecuTorch registry spells it
  const char* schema;  // torch schema without the namespace
};

// Mutating ops return a small fresh tensor, never the aliased cache: an aliased output fails at
// to_edge, and a no-return mutating op has no out variant for to_executorch.
inline constexpr OpSchema kOpSchemas[] = {
    {"eo::scaled_add", "scaled_add(Tensor a, Tensor b, float alpha) -> Tensor"},
    {"eo::scaled_add.out", "scaled_add.out(Tensor a, Tensor b, float alpha, *, Tensor(a!) out) -> Tensor(a!)"},
    {"eo::ring_update_cache",
     "ring_update_cache(Tensor value, Tensor(a!) cache, SymInt start_pos) -> Tensor"},
    {"eo::ring_update_cache.out",
     "ring_update_cache.out(Tensor value, Tensor(a!) cache, SymInt start_pos, *, Tensor(b!) out) -> "
     "Tensor(b!)"},
    {"eo::ring_sdpa",
     "ring_sdpa(Tensor query, Tensor k_cache, Tensor v_cache, SymInt start_pos, int window, float scale, "
     "float softcap) -> Tensor"},
    {"eo::ring_sdpa.out",
     "ring_sdpa.out(Tensor query, Tensor k_cache, Tensor v_cache, SymInt start_pos, int window, "
     "float scale, float softcap, *, Tensor(a!) out) -> Tensor(a!)"},
    {"eo::rope_ring_sdpa",
     "rope_ring_sdpa(Tensor query, Tensor cos, Tensor sin, Tensor k_cache, Tensor v_cache, SymInt start_pos, "
     "int window, float scale, float softcap) -> Tensor"},
    {"eo::rope_ring_sdpa.out",
     "rope_ring_sdpa.out(Tensor query, Tensor cos, Tensor sin, Tensor k_cache, Tensor v_cache, SymInt "
     "start_pos, int window, float scale, float softcap, *, Tensor(a!) out) -> Tensor(a!)"},
    {"eo::rope_kv_update",
     "rope_kv_update(Tensor key, Tensor value, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) v_cache, "
     "SymInt start_pos) -> Tensor"},
    {"eo::rope_kv_update.out",
     "rope_kv_update.out(Tensor key, Tensor value, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) "
     "v_cache, SymInt start_pos, *, Tensor(c!) out) -> Tensor(c!)"},
    // The same two with a per-head RMS norm before rotary (Qwen3's q_norm / k_norm). Ops of their
    // own: the runtime does not check a kernel's arity, so programs exported before they existed
    // must keep finding the signatures above.
    {"eo::norm_rope_ring_sdpa",
     "norm_rope_ring_sdpa(Tensor query, Tensor cos, Tensor sin, Tensor k_cache, Tensor v_cache, SymInt "
     "start_pos, int window, float scale, float softcap, Tensor norm_weight, float norm_eps) -> Tensor"},
    {"eo::norm_rope_ring_sdpa.out",
     "norm_rope_ring_sdpa.out(Tensor query, Tensor cos, Tensor sin, Tensor k_cache, Tensor v_cache, SymInt "
     "start_pos, int window, float scale, float softcap, Tensor norm_weight, float norm_eps, *, Tensor(a!) out) "
     "-> Tensor(a!)"},
    {"eo::norm_rope_kv_update",
     "norm_rope_kv_update(Tensor key, Tensor value, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) "
     "v_cache, SymInt start_pos, Tensor norm_weight, float norm_eps) -> Tensor"},
    {"eo::norm_rope_kv_update.out",
     "norm_rope_kv_update.out(Tensor key, Tensor value, Tensor cos, Tensor sin, Tensor(a!) k_cache, Tensor(b!) "
     "v_cache, SymInt start_pos, Tensor norm_weight, float norm_eps, *, Tensor(c!) out) -> Tensor(c!)"},
};

}  // namespace eo::core
