"""Hand the memory-mapped checkpoint's pages back to the kernel while quantizing and lowering.

transformers maps safetensors files into memory and the loaded weights are views of that
mapping: every page that quantization or XNNPACK's weight packing reads stays in the process's
resident set until the whole mapping closes. So the entire float checkpoint ended up resident
next to the quantized copy (Qwen3-0.6B 8da4w: the export's peak) or next to the weights being
lowered (fp32). `page_out` asks the kernel to reclaim the checkpoint's pages once a layer is
quantized or a weight blob is written out (`MADV_PAGEOUT`, Linux 5.4+), whole mappings at a
time: the page cache keeps large folios (2 MB) that straddle tensors, which advice on one
tensor's range cannot split. The advice never changes what memory holds: a page
touched again is re-read from the file, and only file mappings are advised (anonymous memory
could be swapped). Anywhere the advice is unavailable this is a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
from collections.abc import Callable
from pathlib import Path

MADV_PAGEOUT = 21
_MAPS = Path("/proc/self/maps")


def file_backed_ranges(suffix: str = ".safetensors") -> list[tuple[int, int]]:
    """Address ranges [start, end) of this process's mappings of files ending in `suffix`."""
    try:
        lines = _MAPS.read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].endswith(suffix):
            start, end = (int(part, 16) for part in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


@functools.cache
def _madvise() -> Callable[[int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def page_out(ranges: list[tuple[int, int]]) -> int:
    """Advises the kernel to reclaim the resident pages of `ranges` (whole pages).

    Returns the bytes advised (0 when the call is unavailable). Safe at any time: a page read
    again comes back from the file with the same bytes, so callers only trade a re-read of
    what they still use for the pages they are done with.
    """
    madvise = _madvise()
    if madvise is None:
        return 0
    page = mmap.PAGESIZE
    advised = 0
    for begin, end in ranges:
        start, stop = -(-begin // page) * page, end // page * page
        if stop > start and madvise(start, stop - start, MADV_PAGEOUT) == 0:
            advised += stop - start
    return advised


def page_out_checkpoints(suffix: str = ".safetensors") -> int:
    """`page_out` of every mapping of a file ending in `suffix`; returns the bytes advised."""
    return page_out(file_backed_ranges(suffix))
