"""min / median / max of repeated measurements."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stat:
    min: float
    median: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            raise ValueError("no values")
        return cls(min(values), statistics.median(values), max(values), len(values))

    def format(self, digits: int = 1) -> str:
        """`median [min–max]`, or one number when all repeats agree (or n == 1)."""
        if self.n == 1 or self.min == self.max:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} [{self.min:.{digits}f}–{self.max:.{digits}f}]"
