"""Thread settings for running a .pte from Python.

ExecuTorch's threadpool runs XNNPACK and the custom ops; it is the only pool a program needs.
In the Python runtime, ExecuTorch's `llama::custom_sdpa` kernel (the attention of every
decoder layer) multiplies through MKL, whose OpenMP workers keep spinning after each call and
take the cores XNNPACK's threads are waiting for: on 2 cores, decode ran 1.4x slower with
torch's default intra-op pool than with one thread. The C++ runners do not link MKL.
"""

from __future__ import annotations


def configure_threads(threads: int | None = None) -> int:
    """Sizes ExecuTorch's threadpool (`None` keeps its default) and gives torch one thread.

    Returns ExecuTorch's thread count. Process-wide: code that wants torch's pool back (eager
    reference runs) sets `torch.set_num_threads` itself.
    """
    import torch
    from executorch.extension.pybindings import portable_lib

    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        portable_lib._unsafe_reset_threadpool(threads)
    torch.set_num_threads(1)
    return int(portable_lib._threadpool_get_thread_count())
