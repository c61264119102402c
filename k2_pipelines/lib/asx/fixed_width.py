"""Vectorized parsing of the ASX date and time fields."""

import re
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

EPOCH = date(1970, 1, 1)
_DATE_FORMAT = re.compile(r"\d\d/\d\d/\d{4}")
_TIME_DIGITS = [0, 1, 3, 4, 6, 7, 9, 10, 11]  # HH:MM:SS.mmm
_TIME_WIDTH = 12


def parse_dates(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """MM/DD/YYYY -> (valid mask, days since 1970-01-01). Calendar-checked: 02/30 is invalid.

    A file holds a handful of distinct dates, so each distinct value is parsed once, strictly, in Python.
    """
    encoded = pc.dictionary_encode(strings)
    days_by_value: list[int | None] = []
    for value in encoded.dictionary.to_pylist():
        try:
            if not _DATE_FORMAT.fullmatch(value):
                raise ValueError(value)
            days_by_value.append((datetime.strptime(value, "%m/%d/%Y").date() - EPOCH).days)
        except ValueError:
            days_by_value.append(None)
    lookup = np.array([-1 if d is None else d for d in days_by_value] + [-1], dtype=np.int64)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    days = lookup[indices]
    return days >= 0, np.maximum(days, 0)


def _char_matrix(strings: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows that have exactly `width` characters, those rows' bytes as an n x width uint8 matrix)."""
    _, offsets_buffer, data_buffer = strings.buffers()
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[strings.offset : strings.offset + len(strings) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    has_width = np.diff(offsets) == width
    if has_width.all():  # the usual case: one contiguous block, no copy
        return has_width, data[offsets[0] : offsets[-1]].reshape(-1, width)
    starts = offsets[:-1][has_width]
    return has_width, data[starts[:, None] + np.arange(width)]


def parse_times(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """HH:MM:SS.mmm -> (valid mask, microseconds since midnight)."""
    valid = np.zeros(len(strings), dtype=bool)
    micros = np.zeros(len(strings), dtype=np.int64)
    has_width, chars = _char_matrix(strings, _TIME_WIDTH)
    digits = chars[:, _TIME_DIGITS] - np.uint8(ord("0"))  # wraps below '0', so one bound checks both sides
    ok = (digits <= 9).all(axis=1)
    ok &= (chars[:, 2] == ord(":")) & (chars[:, 5] == ord(":")) & (chars[:, 8] == ord("."))
    d = digits.astype(np.int32)
    hour, minute, second = d[:, 0] * 10 + d[:, 1], d[:, 2] * 10 + d[:, 3], d[:, 4] * 10 + d[:, 5]
    milli = d[:, 6] * 100 + d[:, 7] * 10 + d[:, 8]
    ok &= (hour < 24) & (minute < 60) & (second < 60)
    valid[has_width] = ok
    micros[has_width] = (((hour * 60 + minute) * 60 + second) * 1000 + milli).astype(np.int64) * 1000
    return valid, micros
