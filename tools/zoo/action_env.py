"""Keeps a zoo build action inside its own outputs: no home, cache or temp dir outside them.

Bazel may run the action sandboxed, with no sandbox, or on a remote worker; whichever it
is, everything the libraries want to write (Hugging Face and torch caches, temp files)
goes to a scratch directory beside the declared outputs, removed when the action ends.
Call `action_scratch` before importing torch or transformers: they read these at import.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_DIRS = {
    "HOME": "home",
    "XDG_CACHE_HOME": "cache",
    "HF_HOME": "cache/huggingface",
    "TORCHINDUCTOR_CACHE_DIR": "cache/torchinductor",
    "TRITON_CACHE_DIR": "cache/triton",
    "TMPDIR": "tmp",
}
_FIXED = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


@contextmanager
def action_scratch(next_to: Path) -> Iterator[Path]:
    """A scratch directory beside `next_to` that the environment points into, then deleted."""
    scratch = next_to.parent / f"_{next_to.name}.scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    scratch = scratch.resolve()
    for var, sub in _DIRS.items():
        (scratch / sub).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(scratch / sub)
    os.environ.update(_FIXED)
    tempfile.tempdir = None  # re-read TMPDIR
    # Bazel shows a successful action's output: library deprecation chatter is noise there.
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.ERROR)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
