"""`bazel run //tools:generate -- --pte model.pte --prompt "..."`: generate from a .pte.

A thin wrapper over `executorch_optimum.runtime.cli`; it also loads our own kernels so
programs exported with `native_kernels` run.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from executorch_optimum.runtime.process import enter_user_cwd, prepare_runtime

    enter_user_cwd()
    prepare_runtime()  # the CLI sizes the threadpool from its --threads
    from executorch_optimum.runtime import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
