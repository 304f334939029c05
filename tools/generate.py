"""`bazel run //tools:generate -- --pte model.pte --prompt "..."`: generate from a .pte.

A thin wrapper over `executorch_optimum.runtime.cli`; it also loads our own kernels so
programs exported with `native_kernels` run.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    # `bazel run` starts us in the runfiles tree; the user's relative paths mean their cwd.
    workdir = os.environ.get("BUILD_WORKING_DIRECTORY")
    if workdir:
        os.chdir(workdir)
    from executorch_optimum.runtime.threads import single_thread_openmp

    single_thread_openmp()  # before torch loads
    from executorch_optimum import kernels
    from executorch_optimum.runtime import cli

    kernels.load_et_kernels()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
