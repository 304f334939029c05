"""Delegate weight blobs kept on disk while lowering, so the weights are not in memory twice.

XNNPACK's preprocessing copies every constant it delegates into ExecuTorch's `NamedDataStore`
as `bytes`, while the exported programs still hold the original tensors until serialization:
a model's weights sit in memory twice at the lowering's peak. ExecuTorch 1.5.1's store also
takes `FileBackedData` (a blob in a file, streamed when the program is written), which it
uses for other backends; `spill_named_data()` hands it every large blob that way. The
program's bytes are unchanged (tests/xnnpack/test_spill.py); each file is deleted when its
blob is garbage-collected, at the latest when the process exits (ExecuTorch's lowered modules
can outlive the program object).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_MIN_BYTES = 1 << 20  # smaller blobs (norm scales, biases) stay in memory


def blob_file(data: bytes, directory: Path | None = None):  # noqa: ANN201 (ExecuTorch's FileBackedData)
    """Writes `data` to a new hidden file in `directory` (default: the temp dir) and wraps it."""
    from executorch.exir._serialize._cord import FileBackedData

    fd, path = tempfile.mkstemp(prefix=".eo_weights_", suffix=".bin", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        os.remove(path)
        raise
    return FileBackedData(path, cleanup=True)


@contextmanager
def spill_named_data(
    directory: Path | None = None,
    min_bytes: int = DEFAULT_MIN_BYTES,
    after_each: Callable[[], object] | None = None,
) -> Iterator[None]:
    """While active, named-data blobs of at least `min_bytes` go to files in `directory`;
    `after_each` runs once each such blob is on disk.

    Patches `NamedDataStore.add_named_data` (a class attribute: not thread-safe, like any
    lowering that shares ExecuTorch's globals) and restores it on exit.
    """
    from executorch.exir._serialize._named_data_store import NamedDataStore

    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)  # e.g. an output dir made on write
    original = NamedDataStore.add_named_data

    def add_named_data(self, key, data, alignment=1, external_tag=None, tensor_layout=None):  # noqa: ANN001, ANN202
        if not (isinstance(data, bytes) and len(data) >= min_bytes):
            return original(self, key, data, alignment, external_tag, tensor_layout)
        result = original(self, key, blob_file(data, directory), alignment, external_tag, tensor_layout)
        if after_each is not None:
            after_each()
        return result

    NamedDataStore.add_named_data = add_named_data
    try:
        yield
    finally:
        NamedDataStore.add_named_data = original
