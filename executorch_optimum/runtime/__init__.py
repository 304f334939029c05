"""Load a .pte, prefill and decode in the ExecuTorch runtime, and measure tokens/s."""
