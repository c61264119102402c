"""decimal128 Arrow columns <-> their unscaled integers, for decimals of up to 18 digits (int64)."""

from decimal import Decimal

import numpy as np
import pyarrow as pa


def unscaled(decimals: pa.Array) -> np.ndarray:
    """The unscaled integers of a decimal128 column (low 64 bits, checked to be the whole value)."""
    words = np.frombuffer(decimals.buffers()[1], dtype=np.int64).reshape(-1, 2)
    words = words[decimals.offset : decimals.offset + len(decimals)]
    low, high = words[:, 0], words[:, 1]
    if not np.array_equal(high, low >> 63):
        raise ValueError("decimal value does not fit in 64 bits")
    return low


def from_unscaled(values: np.ndarray, precision: int, scale: int) -> pa.Array:
    values = values.astype(np.int64)
    words = np.stack([values, values >> 63], axis=1)  # 128-bit little-endian two's complement
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(values), [None, pa.py_buffer(words)])


def rescaled(decimals: pa.Array, precision: int, scale: int) -> tuple[pa.Array, np.ndarray]:
    """`decimals` as decimal(precision, scale), and which values fit exactly (others hold 0)."""
    values = unscaled(decimals.fill_null(pa.scalar(Decimal(0), decimals.type)))
    shift = scale - decimals.type.scale
    if shift >= 0:
        fits = np.abs(values) < 10 ** max(precision - shift, 0)
        values = np.where(fits, values, 0) * 10**shift
    else:
        factor = 10**-shift
        fits = values % factor == 0
        values = values // factor
    fits &= np.abs(values) < 10**precision
    return from_unscaled(np.where(fits, values, 0), precision, scale), fits
