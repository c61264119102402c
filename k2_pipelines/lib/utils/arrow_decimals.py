"""decimal128 Arrow columns <-> their unscaled integers (as int64: decimals of up to 18 digits)."""

from decimal import Decimal

import numpy as np
import pyarrow as pa


def low_words(decimals: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(low 64 bits of each unscaled value, whether that is the whole value)."""
    words = np.frombuffer(decimals.buffers()[1], dtype=np.int64).reshape(-1, 2)
    words = words[decimals.offset : decimals.offset + len(decimals)]
    return words[:, 0], words[:, 1] == words[:, 0] >> 63


def unscaled(decimals: pa.Array) -> np.ndarray:
    """The unscaled integers of a decimal128 column whose values fit in 64 bits."""
    low, whole = low_words(decimals)
    if not whole.all():
        raise ValueError("decimal value does not fit in 64 bits")
    return low


def from_words(big_endian: np.ndarray, precision: int, scale: int) -> pa.Array:
    """A decimal128 column from rows of 16 big-endian two's complement bytes."""
    high = big_endian[:, :8].copy().view(">i8").ravel().astype(np.int64)
    low = big_endian[:, 8:].copy().view(">u8").ravel().astype(np.uint64).view(np.int64)
    words = np.stack([low, high], axis=1)
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(words), [None, pa.py_buffer(words)])


def from_unscaled(values: np.ndarray, precision: int, scale: int) -> pa.Array:
    values = values.astype(np.int64)
    words = np.stack([values, values >> 63], axis=1)  # 128-bit little-endian two's complement
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(values), [None, pa.py_buffer(words)])


def rescaled(decimals: pa.Array, precision: int, scale: int) -> tuple[pa.Array, np.ndarray]:
    """`decimals` as decimal(precision, scale), and which values fit exactly (others hold 0)."""
    values, fits = low_words(decimals.fill_null(pa.scalar(Decimal(0), decimals.type)))
    values = np.where(fits, values, 0)
    shift = scale - decimals.type.scale
    if shift >= 0:
        fits &= np.abs(values) < 10 ** max(precision - shift, 0)
        values = np.where(fits, values, 0) * 10**shift
    else:
        factor = 10**-shift
        fits &= values % factor == 0
        values = values // factor
    fits &= np.abs(values) < 10**precision
    return from_unscaled(np.where(fits, values, 0), precision, scale), fits
