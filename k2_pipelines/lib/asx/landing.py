"""What a landing drop holds: its files' fingerprints and the trading dates each market file covers."""

import hashlib
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as csv

from k2_pipelines.lib.asx.fixed_width import EPOCH, parse_dates
from k2_pipelines.lib.asx.layouts import QUOTES, TRADES


def landing_files(landing: Path) -> list[Path]:
    info = landing / "company_info.csv"
    market = sorted(p for layout in (TRADES, QUOTES) for p in (landing / layout.kind).glob("*.csv"))
    return ([info] if info.exists() else []) + market


def fingerprint(path: Path) -> str:
    """Size and modification time: what changes when a drop replaces a file."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def trading_dates(path: Path) -> list[str]:
    """The distinct valid dates of a market file (trades/ or quotes/), as partition keys."""
    layout = TRADES if path.parent.name == TRADES.kind else QUOTES
    dates = csv.read_csv(
        path,
        read_options=csv.ReadOptions(column_names=list(layout.columns), use_threads=True),
        parse_options=csv.ParseOptions(invalid_row_handler=lambda row: "skip"),
        convert_options=csv.ConvertOptions(column_types={"Date": pa.string()}, include_columns=["Date"]),
    )["Date"].combine_chunks().unique()
    valid, days = parse_dates(dates)
    return sorted(str(EPOCH + timedelta(days=int(d))) for d in days[valid])


def digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]
