"""Avro binary decoding of many record bodies at once into Arrow columns.

All bodies are read in lockstep, one schema field at a time, each with its own read position (numpy arrays), so a
batch costs a few vectorized operations per field instead of a Python call per message. A body that is truncated,
has trailing bytes, a bad union branch, enum index, length or UTF-8 is flagged on its own; its neighbours decode.

Covers what the v2 schemas use: string, bytes, enum, int and long (with timestamp-micros), bytes decimals,
boolean, arrays, maps, and unions of null with any of those.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2_pipelines.lib.utils.arrow_decimals import from_words, low_words

_MAX_VARINT_BYTES = 10
T = TypeVar("T")


@dataclass
class Decoded:
    table: pa.Table  # one row per body; rows of bad bodies hold placeholders
    ok: np.ndarray  # which bodies decoded


class _Reader:
    def __init__(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self.data = np.concatenate([data, np.zeros(_MAX_VARINT_BYTES, np.uint8)])  # reads past the end stay in bounds
        self.pos = starts.astype(np.int64)
        self.ends = ends.astype(np.int64)
        self.ok = np.ones(len(starts), dtype=bool)

    def long(self, rows: np.ndarray) -> np.ndarray:
        """Zigzag varints at the positions of `rows`."""
        pos = self.pos[rows]
        first = self.data[np.minimum(pos, self.data.size - 1)].astype(np.uint64)
        values = first.copy()
        lengths = np.ones(len(rows), dtype=np.int64)
        wide = np.flatnonzero(first >= 0x80)
        if wide.size:
            window = self.data[np.minimum(pos[wide, None] + np.arange(_MAX_VARINT_BYTES), self.data.size - 1)]
            ends = window < 0x80
            terminated = ends.any(axis=1)
            length = np.where(terminated, ends.argmax(axis=1) + 1, _MAX_VARINT_BYTES)
            groups = (window & 0x7F).astype(np.uint64) << (np.arange(_MAX_VARINT_BYTES, dtype=np.uint64) * 7)
            values[wide] = np.where(np.arange(_MAX_VARINT_BYTES) < length[:, None], groups, 0).sum(axis=1,
                                                                                               dtype=np.uint64)
            lengths[wide] = length
            self.ok[rows[wide[~terminated]]] = False
        self._advance(rows, pos, lengths)
        return (values >> np.uint64(1)).astype(np.int64) ^ -(values & np.uint64(1)).astype(np.int64)

    def _advance(self, rows: np.ndarray, pos: np.ndarray, lengths: np.ndarray) -> None:
        self.pos[rows] = pos + lengths
        self.ok[rows[self.pos[rows] > self.ends[rows]]] = False

    def raw(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(data, offsets) of length-prefixed byte strings at the positions of `rows`."""
        lengths = self.long(rows)
        bad = (lengths < 0) | (self.pos[rows] + lengths > self.ends[rows])
        self.ok[rows[bad]] = False
        lengths = np.where(bad, 0, lengths)
        pos = self.pos[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
        data = self.data[np.repeat(pos, lengths) + within]
        self._advance(rows, pos, lengths)
        return data, offsets

    def boolean(self, rows: np.ndarray) -> np.ndarray:
        pos = self.pos[rows]
        values = self.data[np.minimum(pos, self.data.size - 1)]
        self.ok[rows[values > 1]] = False
        self._advance(rows, pos, np.ones(len(rows), dtype=np.int64))
        return values == 1


def _binary(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets),
                                                                       pa.py_buffer(data)])


def _strings(reader: _Reader, rows: np.ndarray) -> pa.Array:
    values = _binary(*reader.raw(rows))
    try:
        return values.cast(pa.large_string())
    except pa.ArrowInvalid:  # some value is not UTF-8: flag those rows only
        valid = np.array([_is_utf8(value) for value in values.to_pylist()])
        reader.ok[rows[~valid]] = False
        return pc.if_else(pa.array(valid), values, b"").cast(pa.large_string())


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decimals(reader: _Reader, rows: np.ndarray, precision: int, scale: int) -> pa.Array:
    """Big-endian two's complement unscaled values of up to 16 bytes."""
    data, offsets = reader.raw(rows)
    lengths = np.diff(offsets)
    reader.ok[rows[(lengths < 1) | (lengths > 16)]] = False
    lengths = np.clip(lengths, 1, 16)
    padded = np.zeros((len(rows), 16), dtype=np.uint8)
    column = np.arange(16) - (16 - lengths)[:, None]  # right-align each value's bytes
    inside = (column >= 0) & (column < np.diff(offsets)[:, None])
    if data.size:
        source = np.minimum(offsets[:-1, None] + np.maximum(column, 0), data.size - 1)
        padded[inside] = data[source[inside]]
    negative = (padded[np.arange(len(rows)), 16 - lengths] & 0x80) != 0
    padded[negative[:, None] & (column < 0)] = 0xFF  # sign extension
    decimals = from_words(padded, precision, scale)
    if precision <= 18:  # wider values are checked where they are narrowed (arrow_decimals.rescaled)
        low, whole = low_words(decimals)
        reader.ok[rows[~whole | (np.abs(low) >= 10**precision)]] = False
    return decimals


def _blocks(reader: _Reader, rows: np.ndarray,
            read_item: Callable[[np.ndarray], T]) -> tuple[np.ndarray, list[tuple[list[T], np.ndarray]]]:
    """Avro array/map blocks: (offsets per row, items in row order) where read_item(rows) reads one item each."""
    owners, order, items = [], [], []
    active, seen = rows, np.zeros(len(reader.pos), dtype=np.int64)
    while active.size:
        counts = reader.long(active)
        sized = counts < 0  # a negative count is followed by the block's size in bytes
        if sized.any():
            reader.long(active[sized])
            counts = np.abs(counts)
        runaway = counts > reader.ends[active] - reader.pos[active]  # more items than bytes: corrupt
        reader.ok[active[runaway]] = False
        counts = np.where(runaway | ~reader.ok[active], 0, counts)
        for index in range(int(counts.max(initial=0))):
            reading = active[counts > index]
            items.append(read_item(reading))
            owners.append(reading)
            order.append(seen[reading] + index)
        seen[active] += counts
        active = active[counts > 0]
    if not owners:
        return np.zeros(len(rows) + 1, dtype=np.int32), []
    owner, position = np.concatenate(owners), np.concatenate(order)
    arrangement = np.lexsort((position, owner))
    rank = np.searchsorted(rows, owner[arrangement])  # rows is sorted
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.add.at(offsets, rank + 1, 1)
    np.cumsum(offsets, out=offsets)
    return offsets, [(items, arrangement)]


def _flatten(parts: list[tuple[list[T], np.ndarray]], select: Callable[[T], pa.Array]) -> pa.Array:
    items, arrangement = parts[0]
    return pa.concat_arrays([select(item) for item in items]).take(pa.array(arrangement))


def _column(reader: _Reader, rows: np.ndarray, avro_type: Any) -> pa.Array:
    """The values of `avro_type` at the positions of `rows` (sorted), advancing them."""
    if isinstance(avro_type, list):
        return _union(reader, rows, avro_type)
    kind = avro_type if isinstance(avro_type, str) else avro_type["type"]
    logical = None if isinstance(avro_type, str) else avro_type.get("logicalType")
    if kind == "string":
        return _strings(reader, rows)
    if kind == "bytes" and logical == "decimal":
        return _decimals(reader, rows, avro_type["precision"], avro_type.get("scale", 0))
    if kind == "bytes":
        return _binary(*reader.raw(rows))
    if kind in ("long", "int"):
        values = reader.long(rows)
        if kind == "int":
            reader.ok[rows[(values < -(2**31)) | (values >= 2**31)]] = False
        return pa.array(values, pa.timestamp("us", tz="UTC") if logical == "timestamp-micros" else pa.int64())
    if kind == "boolean":
        return pa.array(reader.boolean(rows))
    if kind == "enum":
        symbols = avro_type["symbols"]
        index = reader.long(rows)
        reader.ok[rows[(index < 0) | (index >= len(symbols))]] = False
        return pa.array(symbols, pa.large_string()).take(pa.array(np.clip(index, 0, len(symbols) - 1)))
    if kind == "array":
        offsets, parts = _blocks(reader, rows, lambda r: _column(reader, r, avro_type["items"]))
        values = _flatten(parts, lambda item: item) if parts else _empty(avro_type["items"])
        return pa.ListArray.from_arrays(pa.array(offsets), values)
    if kind == "map":
        offsets, parts = _blocks(reader, rows, lambda r: (_strings(reader, r), _column(reader, r, avro_type["values"])))
        keys = _flatten(parts, lambda item: item[0]) if parts else pa.array([], pa.large_string())
        values = _flatten(parts, lambda item: item[1]) if parts else _empty(avro_type["values"])
        return pa.MapArray.from_arrays(pa.array(offsets), keys.cast(pa.string()), values)
    raise TypeError(f"Avro type {avro_type} is not supported by the column decoder")


def _empty(avro_type: Any) -> pa.Array:
    return _column(_Reader(np.zeros(0, np.uint8), np.zeros(0), np.zeros(0)), np.zeros(0, np.int64), avro_type)


def _union(reader: _Reader, rows: np.ndarray, branches: list[Any]) -> pa.Array:
    if "null" not in branches or len(branches) != 2:
        raise TypeError(f"only unions of null and one type are supported, not {branches}")
    index = reader.long(rows)
    reader.ok[rows[(index < 0) | (index > 1)]] = False
    value_branch = 1 - branches.index("null")
    has_value = index == value_branch
    values = _column(reader, rows[has_value], branches[value_branch])
    # scatter the values into place, nulls elsewhere
    where = np.full(len(rows), len(values), dtype=np.int64)
    where[has_value] = np.arange(len(values))
    return pa.concat_arrays([values, pa.nulls(1, values.type)]).take(pa.array(where))


def decode_records(schema: dict[str, Any], data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Decoded:
    """Decode the record bodies data[starts[i]:ends[i]] written with `schema`."""
    reader = _Reader(data, starts, ends)
    rows = np.arange(len(starts), dtype=np.int64)
    columns = {field["name"]: _column(reader, rows, field["type"]) for field in schema["fields"]}
    reader.ok &= reader.pos == reader.ends  # no bytes left over
    return Decoded(pa.table(columns), reader.ok)
