"""Lowering to ExecuTorch through XNNPACK: graph passes, quantization, delegation report."""
