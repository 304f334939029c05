"""Start-up of a process that runs programs from the command line (`//tools:generate`,
`:profile_decode`, `:compare_pte`): in this order, before anything imports torch."""

from __future__ import annotations

import os


def enter_user_cwd() -> None:
    """`bazel run` starts a binary in its runfiles tree; the user's relative paths mean their cwd."""
    workdir = os.environ.get("BUILD_WORKING_DIRECTORY")
    if workdir:
        os.chdir(workdir)


def prepare_runtime(threads: int | None = None) -> None:
    """One OpenMP thread (set before torch loads, see threads.py), our ExecuTorch kernels (so
    programs exported with `--native_kernels` run), and `threads` for ExecuTorch's threadpool
    (None: leave it to the caller)."""
    from executorch_optimum.runtime.threads import configure_threads, single_thread_openmp

    single_thread_openmp()
    from executorch_optimum import kernels

    kernels.load_et_kernels()
    if threads is not None:
        configure_threads(threads)
