"""Thread settings for running a .pte from Python.

ExecuTorch's threadpool runs XNNPACK and the custom ops; it is the only pool a program needs.
In the Python runtime, ExecuTorch's `llama::custom_sdpa` kernel (the attention of every
decoder layer) multiplies through torch's MKL, whose OpenMP workers keep spinning after each
call and take the cores XNNPACK's threads are waiting for. Measured on 2 cores (SmolLM2-135M):
torch's default pool made fp32 prefill 1.5x and 8da4w decode 1.4x slower. Two settings
remove it: one torch thread for the calling thread (`configure_threads`), and
`OMP_NUM_THREADS=1` before torch loads for the threadpool's own threads, which call the
kernel in prefill (`single_thread_openmp`). The C++ runners do not link MKL.
"""

from __future__ import annotations

import os

OPENMP_THREADS = "OMP_NUM_THREADS"
_set_here = False


def single_thread_openmp() -> None:
    """Sets OMP_NUM_THREADS=1 unless the user chose a value; call before torch is imported."""
    global _set_here
    if OPENMP_THREADS not in os.environ:
        os.environ[OPENMP_THREADS] = "1"
        _set_here = True


def without_our_openmp_setting(env: dict[str, str]) -> dict[str, str]:
    """`env` minus the OMP_NUM_THREADS that `single_thread_openmp` added: child processes
    (exports) keep torch's default threads, as when they run on their own."""
    if _set_here:
        env.pop(OPENMP_THREADS, None)
    return env


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
