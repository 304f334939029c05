"""Weights that both the program and a delegate carry are stored once in the .pte.

A tied embedding (input embedding = lm_head weight) reaches a fp32 .pte twice: the embedding
lookup runs in ExecuTorch's kernels and reads the program's constant segment, the lm_head
linear runs in XNNPACK, whose weights are named data in their own segment. Both copies are
read-only and byte-identical (SmolLM2-135M: 113 MB of 651 MB, Qwen3-0.6B: 622 MB of 3 GB).

The runtime finds a named blob by its segment's (offset, size) and has no rule against
segments overlapping. `store_shared_weights_once()` leaves such blobs out of the named-data
segments and points their names at the bytes already in the constant segment. Only the
segment table changes; what every method reads is the same (tests/xnnpack/test_tied_weights.py).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)

DEFAULT_MIN_BYTES = 1024  # below this, a segment entry and a 64-character name cost about as much


@dataclass(frozen=True)
class SharedBlob:
    """A named blob whose bytes equal constant buffer `constant_index` of the program."""

    key: str
    constant_index: int
    size: int


def _digest(data: object) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return hashlib.sha256(data).digest()
    return data.sha256()  # ExecuTorch's FileBackedData (see spill.py) hashes its file in chunks


def find_shared_blobs(
    constant_buffers: Sequence[object],
    named_buffers: Sequence[object],
    named_entries: Mapping[str, object],
    alignment: int,
    min_bytes: int = DEFAULT_MIN_BYTES,
) -> list[SharedBlob]:
    """Named entries whose blob equals one of the program's constant buffers.

    `constant_buffers` are the emitter's `Buffer`s (bytes in `.storage`), `named_buffers` and
    `named_entries` a `NamedDataStoreOutput`'s `buffers` and `pte_data`. A blob can only point
    into the constant segment where that segment meets its alignment (constants are placed on
    multiples of `alignment`). Only sizes that occur on both sides are hashed.
    """
    by_size: dict[int, list[int]] = {}
    for index, buffer in enumerate(constant_buffers):
        if len(buffer.storage) >= min_bytes:
            by_size.setdefault(len(buffer.storage), []).append(index)
    constant_digests: dict[int, bytes] = {}
    shared = []
    for key, entry in named_entries.items():
        blob = named_buffers[entry.buffer_index]
        candidates = by_size.get(len(blob), [])
        if not candidates or alignment % entry.alignment:
            continue
        digest = _digest(blob)
        for index in candidates:
            if index not in constant_digests:
                constant_digests[index] = _digest(constant_buffers[index].storage)
            if constant_digests[index] == digest:
                shared.append(SharedBlob(key=key, constant_index=index, size=len(blob)))
                break
    return shared


def point_names_into_constants(program: object, shared: Sequence[SharedBlob]) -> None:
    """Adds a segment per shared blob that covers its bytes inside the constant segment.

    `program` is the schema `Program` after ExecuTorch placed its segments (offsets final),
    before it becomes a flatbuffer; it is modified in place.
    """
    from executorch.exir.schema import DataSegment, NamedData

    constant_segment = program.constant_segment
    base = program.segments[constant_segment.segment_index].offset
    named = list(program.named_data or [])
    for blob in shared:
        offset = base + constant_segment.offsets[blob.constant_index]
        named.append(NamedData(key=blob.key, segment_index=len(program.segments)))
        program.segments.append(DataSegment(offset=offset, size=blob.size))
    program.named_data = named


def keys_stored_in_constants(pte: bytes) -> list[str]:
    """Names in a serialized program whose bytes lie inside its constant segment."""
    from executorch.exir._serialize._flatbuffer_program import _flatbuffer_to_program
    from executorch.exir._serialize._program import _get_extended_header

    header = _get_extended_header(pte)
    if header is None or not header.is_valid():
        return []
    program = _flatbuffer_to_program(pte[: header.program_size])
    if program.constant_segment is None or not program.segments or not program.named_data:
        return []
    constants = program.segments[program.constant_segment.segment_index]
    inside = []
    for entry in program.named_data:
        segment = program.segments[entry.segment_index]
        if (
            constants.offset <= segment.offset
            and segment.offset + segment.size <= constants.offset + constants.size
        ):
            inside.append(entry.key)
    return inside


@contextmanager
def store_shared_weights_once(min_bytes: int = DEFAULT_MIN_BYTES) -> Iterator[None]:
    """While active, programs serialized by `to_executorch` carry shared weights once.

    Patches ExecuTorch 1.5.1's `serialize_for_executorch` (as `to_executorch` sees it) and the
    serializer's `_program_to_flatbuffer`, module globals: not thread-safe, like the other
    lowering patches; both are restored on exit.
    """
    from executorch.exir._serialize import _program as serializer
    from executorch.exir._serialize._named_data_store import NamedDataStoreOutput
    from executorch.exir.program import _program as program_manager
    from executorch.exir.tensor import ALIGNMENT

    stock_serialize = program_manager.serialize_for_executorch
    stock_to_flatbuffer = serializer._program_to_flatbuffer
    pending: list[SharedBlob] = []

    def serialize(emitter_output, config, data_serializer, named_data_store=None):  # noqa: ANN001, ANN202
        shared = []
        if named_data_store is not None and named_data_store.pte_data:
            shared = find_shared_blobs(
                emitter_output.program.constant_buffer,
                named_data_store.buffers,
                named_data_store.pte_data,
                alignment=config.constant_tensor_alignment or ALIGNMENT,
                min_bytes=min_bytes,
            )
        if not shared:
            return stock_serialize(emitter_output, config, data_serializer, named_data_store)
        keys = {blob.key for blob in shared}
        reduced = NamedDataStoreOutput(
            buffers=named_data_store.buffers,
            pte_data={key: entry for key, entry in named_data_store.pte_data.items() if key not in keys},
            external_data=named_data_store.external_data,
        )
        still_written = {entry.buffer_index for entry in reduced.pte_data.values()}
        dropped = {named_data_store.pte_data[key].buffer_index for key in keys} - still_written
        saved = sum(len(named_data_store.buffers[index]) for index in dropped)
        logger.info("storing %d shared weight(s) once: %.1f MB saved", len(shared), saved / 1e6)
        pending[:] = shared
        try:
            return stock_serialize(emitter_output, config, data_serializer, reduced)
        finally:
            pending.clear()

    def to_flatbuffer(program, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if pending:
            point_names_into_constants(program, pending)
        return stock_to_flatbuffer(program, *args, **kwargs)

    program_manager.serialize_for_executorch = serialize
    serializer._program_to_flatbuffer = to_flatbuffer
    try:
        yield
    finally:
        program_manager.serialize_for_executorch = stock_serialize
        serializer._program_to_flatbuffer = stock_to_flatbuffer
