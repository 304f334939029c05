"""Attention functions that call ExecuTorch's custom SDPA, for full and ring-buffer caches."""
