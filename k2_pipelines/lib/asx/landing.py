"""What a landing drop holds: its files' fingerprints and the trading dates each market file covers."""

import hashlib
from collections import Counter
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from k2_pipelines.lib.asx.fixed_width import EPOCH, parse_dates
from k2_pipelines.lib.asx.layouts import QUOTES, TRADES
from k2_pipelines.lib.asx.parse import attribute_days

_DATE_WIDTH = len("MM/DD/YYYY")


def landing_files(landing: Path) -> list[Path]:
    info = landing / "company_info.csv"
    market = sorted(p for layout in (TRADES, QUOTES) for p in (landing / layout.kind).glob("*.csv"))
    return ([info] if info.exists() else []) + market


def fingerprint(path: Path) -> str:
    """Size and modification time: what changes when a drop replaces a file."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def trading_dates(path: Path) -> list[str]:
    """The distinct valid dates that start the lines of a market file, as partition keys.

    Reads raw bytes, not CSV: the sensor must learn a file's dates whatever else is wrong with it.
    """
    return sorted(lines_by_trading_date(path))


def lines_by_trading_date(path: Path) -> Counter[str]:
    """Lines per trading date (partition key) of a market file, counted from its raw bytes: what a load must account
    for, as rows or rejects. A line whose date does not parse counts for the date the loader gives it (the nearest
    line before it with one, else after)."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    starts = np.concatenate(([0], np.flatnonzero(data == ord("\n")) + 1))
    starts = starts[starts < len(data)]  # a final line end ends a line, it starts none
    if not len(starts):
        return Counter()
    padded = np.concatenate((data, np.zeros(_DATE_WIDTH, dtype=np.uint8)))
    prefixes = np.column_stack([padded[starts + i] for i in range(_DATE_WIDTH)]).view(f"S{_DATE_WIDTH}").ravel()
    # files run in time order: parse each run of equal prefixes once
    run_starts = np.flatnonzero(np.concatenate(([True], prefixes[1:] != prefixes[:-1])))
    run_lengths = np.diff(np.append(run_starts, len(prefixes)))
    texts = np.frombuffer(prefixes[run_starts].tobytes(), dtype=np.uint8).copy()
    texts[texts >= 0x80] = ord("?")  # not ASCII: no date, and the text stays valid UTF-8
    valid, days = parse_dates(pa.Array.from_buffers(pa.binary(_DATE_WIDTH), len(run_starts),
                                                    [None, pa.py_buffer(texts)]).cast(pa.string()))
    counts: Counter[str] = Counter()
    for day, lines in zip(attribute_days(days, valid).tolist(), run_lengths.tolist()):
        counts[str(EPOCH + timedelta(days=day))] += lines
    return counts if valid.any() else Counter()


def digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]
