"""executorch_optimum: export Hugging Face language models to ExecuTorch programs."""
