"""KV caches backed by ExecuTorch's in-place cache ops: ETCustomStaticCache, ETCustomHybridCache."""
