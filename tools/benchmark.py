"""`bazel run //tools:benchmark`: export, runtime, eager and roofline numbers for zoo models.

A thin command line over `executorch_optimum.benchmark` (see `--help`).
"""

import sys

from executorch_optimum.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
