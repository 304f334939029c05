"""The child process of `OurExporter`: one `export_model` call, so its cost is measurable.

    python -m executorch_optimum.benchmark.export_child REQUEST.json

REQUEST.json holds ExportOptions fields (paths as strings). Progress goes to stdout; exit
status 2 with `error: ...` on bad input.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    request = json.loads(Path(argv[0]).read_text())
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    from executorch_optimum.export import ExportError, ExportOptions, export_model

    for key in ("model_dir", "output", "report"):
        if request.get(key) is not None:
            request[key] = Path(request[key])
    try:
        export_model(ExportOptions(**request), progress=lambda message: print(message, flush=True))
    except ExportError as err:
        print(f"error: {err}", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
