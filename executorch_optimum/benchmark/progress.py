"""Progress lines on stderr with the elapsed time, so stdout keeps only the result table."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """`progress("message")` prints `[  12.3 s] message`; `progress.phase(...)` times a block."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self._stream = stream
        self._start = time.perf_counter()
        self.quiet = quiet

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._start

    def __call__(self, message: str) -> None:
        if self.quiet:
            return
        stream = self._stream or sys.stderr
        print(f"[{self.elapsed_s:7.1f} s] {message}", file=stream, flush=True)

    @contextmanager
    def phase(self, what: str) -> Iterator[None]:
        self(f"{what} ...")
        start = time.perf_counter()
        yield
        self(f"{what}: done in {time.perf_counter() - start:.1f} s")
