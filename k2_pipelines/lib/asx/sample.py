"""Deterministic generated ASX landing drops in exactly the format of ../shared/formats.md."""

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# the companies of the historical sample: (company_id, name, starting price)
KNOWN_COMPANIES = {
    "MWR": ("3153", "MGM Wireless Ltd", 1.14),
    "BHP": ("7078", "BHP Billiton Ltd", 36.667),
    "DVN": ("7181", "Devine Ltd", 0.87),
    "RIO": ("7458", "Rio Tinto Ltd", 61.25),
}
DEFAULT_SYMBOLS = ("BHP", "RIO", "MWR", "DVN")
DEFAULT_START = date(2014, 3, 10)
QUALIFIER_CODES = np.array([0, 1, 2, 3, 5, 8, 9, 25, 26, 27])
QUALIFIER_WEIGHTS = np.array([70, 6, 4, 8, 3, 2, 2, 2, 2, 1]) / 100
MS_PER_DAY = 86_400_000
OPEN_MS, CLOSE_MS = 10 * 3_600_000, 16 * 3_600_000
PRE_OPEN_MS, AFTER_MARKET_END_MS = 5 * 3_600_000 + 40 * 60_000, 18 * 3_600_000 + 50 * 60_000


@dataclass(frozen=True)
class SampleCompany:
    symbol: str
    company_id: str
    name: str
    start_price: float


class Counts(TypedDict):
    """What generate() wrote."""
    trades: int
    quotes: int
    symbols: int
    days: int
    bad_rows: NotRequired[dict[str, int]]  # {reason: lines}, when asked for bad rows


def companies_for(symbols: list[str]) -> list[SampleCompany]:
    result = []
    for symbol in symbols:
        symbol = symbol.upper()
        if symbol in KNOWN_COMPANIES:
            company_id, name, price = KNOWN_COMPANIES[symbol]
        else:
            digest = int(hashlib.sha256(symbol.encode()).hexdigest(), 16)
            company_id, name, price = (str(1000 + digest % 9000), f"{symbol.title()} Ltd",
                                       round(1 + digest % 9000 / 100, 3))
        result.append(SampleCompany(symbol, company_id, name, price))
    return result


def trading_days(start: date, count: int) -> list[date]:
    days: list[date] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _intraday_ms(rng: np.random.Generator, n: int) -> np.ndarray:
    """Sorted times of day: mostly continuous trading, ~2% pre-open and ~2% after-market prints."""
    session = rng.choice(3, size=n, p=[0.02, 0.96, 0.02])
    times = np.where(
        session == 0,
        rng.integers(PRE_OPEN_MS, OPEN_MS, n),
        np.where(session == 1, rng.integers(OPEN_MS, CLOSE_MS, n),
                 rng.integers(CLOSE_MS + 600_000, AFTER_MARKET_END_MS, n)),
    )
    return np.sort(times)


def _fixed(values_thousandths: np.ndarray) -> pa.Array:
    """Integers in thousandths as decimal strings with three decimals ("36.667")."""
    whole = pa.array(values_thousandths // 1000).cast(pa.string())
    frac = pc.utf8_lpad(pa.array(values_thousandths % 1000).cast(pa.string()), 3, "0")
    return pc.binary_join_element_wise(whole, frac, ".")


def _time_of_day(times_ms: np.ndarray) -> pa.Array:
    """HH:MM:SS.mmm"""
    h, rest = np.divmod(times_ms, 3_600_000)
    m, rest = np.divmod(rest, 60_000)
    s, ms = np.divmod(rest, 1000)
    parts = [pc.utf8_lpad(pa.array(v).cast(pa.string()), w, "0") for v, w in ((h, 2), (m, 2), (s, 2), (ms, 3))]
    return pc.binary_join_element_wise(pc.binary_join_element_wise(parts[0], parts[1], parts[2], ":"), parts[3], ".")


def _write_lines(path: Path, columns: list[pa.Array]) -> None:
    """Join columns with commas and lines with CRLF, no header, no quoting."""
    # 64-bit offsets, so that a file may pass 2 GB
    row = pc.binary_join_element_wise(*(c.cast(pa.large_string()) for c in columns), pa.scalar(",", pa.large_string()))
    with_eol = pc.binary_join_element_wise(row, pa.scalar("\r\n", pa.large_string()), pa.scalar("", pa.large_string()))
    offsets = np.frombuffer(with_eol.buffers()[1], dtype=np.int64)[: len(with_eol) + 1]
    path.write_bytes(memoryview(with_eol.buffers()[2])[offsets[0] : offsets[-1]])


# how a bad trade line can look, and the reason K2 gives it
CORRUPTIONS = (
    ("price_not_a_number", lambda f: [*f[:2], "abc", *f[3:]]),
    ("price_too_many_decimals", lambda f: [*f[:2], "12.123456789", *f[3:]]),
    ("price_not_positive", lambda f: [*f[:2], "0.000", *f[3:]]),
    ("missing_columns", lambda f: f[:4]),
    ("bad_date", lambda f: ["02/30/" + f[0][-4:], *f[1:]]),
    ("bad_time", lambda f: [*f[:1], "25:61:00.000", *f[2:]]),
)


def corrupt_lines(path: Path, count: int, rng: np.random.Generator) -> dict[str, int]:
    """Replace `count` random lines of a trades file by bad ones; returns {reason: lines}."""
    lines = path.read_bytes().split(b"\r\n")[:-1]
    reasons: dict[str, int] = {}
    for i, position in enumerate(sorted(rng.choice(len(lines), size=min(count, len(lines)), replace=False))):
        reason, corrupt = CORRUPTIONS[i % len(CORRUPTIONS)]
        lines[position] = ",".join(corrupt(lines[position].decode().split(","))).encode()
        reasons[reason] = reasons.get(reason, 0) + 1
    path.write_bytes(b"".join(line + b"\r\n" for line in lines))
    return reasons


def generate(out: Path, symbols: list[str], days: int, trades: int, quotes_per_trade: float, seed: int,
             start: date = DEFAULT_START, bad_rows: int = 0) -> Counts:
    """Write a landing drop under `out`; returns counts of what was written (bad rows are among the trades)."""
    rng = np.random.default_rng(seed)
    companies = companies_for(symbols)
    sessions = trading_days(start, days)
    # very uneven activity: Zipf-like weights in symbol order
    weights = 1 / np.arange(1, len(companies) + 1) ** 1.3
    weights /= weights.sum()
    (out / "trades").mkdir(parents=True, exist_ok=True)
    (out / "quotes").mkdir(parents=True, exist_ok=True)
    info = ["company_id,symbol,company_name,ISIN,start_date,end_date"]
    counts: Counts = {"trades": 0, "quotes": 0, "symbols": len(companies), "days": len(sessions)}
    for company, weight in zip(companies, weights):
        info.append(f"{company.company_id},{company.symbol},{company.name},AU000000{company.symbol:<3}0,01/01/2000,")
        price_milli = round(company.start_price * 1000)
        trade_columns, quote_columns = [], []
        for day in sessions:
            n = max(1, int(rng.poisson(trades * weight / len(sessions))))
            times = _intraday_ms(rng, n)
            steps = rng.choice([-1, 0, 0, 0, 1], size=n) * max(1, price_milli // 2000)
            prices = np.maximum(1, price_milli + np.cumsum(steps))
            price_milli = int(prices[-1])
            day_text = day.strftime("%m/%d/%Y")
            volume = np.maximum(1, rng.lognormal(7, 1.5, n).astype(np.int64))
            venue = np.where(rng.random(n) < 0.3, "X", "")
            buyer = np.where(rng.random(n) < 0.01, (prices * (1 + rng.random(n) / 100) / 1000).round(3).astype(str), "")
            trade_columns.append([pa.repeat(day_text, n), _time_of_day(times), _fixed(prices),
                                  pa.array(volume).cast(pa.string()),
                                  pa.array(rng.choice(QUALIFIER_CODES, n, p=QUALIFIER_WEIGHTS)).cast(pa.string()),
                                  pa.array(venue), pa.array(buyer)])
            q = max(1, int(rng.poisson(n * quotes_per_trade))) if quotes_per_trade > 0 else 0
            if q:
                quote_times = _intraday_ms(rng, q)
                mid = prices[np.minimum(np.searchsorted(times, quote_times), n - 1)]
                spread = rng.integers(1, 4, q) * max(1, price_milli // 1000)
                quote_columns.append([pa.repeat(day_text, q), _time_of_day(quote_times),
                                      _fixed(np.maximum(1, mid - spread)), _fixed(mid + spread),
                                      pa.array(rng.lognormal(8, 1.2, q).astype(np.int64)).cast(pa.string()),
                                      pa.array(rng.lognormal(8, 1.2, q).astype(np.int64)).cast(pa.string())])
            counts["trades"] += n
            counts["quotes"] += q
        _write_lines(out / "trades" / f"{company.company_id}.csv", [pa.concat_arrays(c) for c in zip(*trade_columns)])
        if quote_columns:
            _write_lines(out / "quotes" / f"{company.company_id}.csv",
                         [pa.concat_arrays(c) for c in zip(*quote_columns)])
    (out / "company_info.csv").write_text("\n".join(info) + "\n")
    if bad_rows:
        counts["bad_rows"] = corrupt_lines(out / "trades" / f"{companies[0].company_id}.csv", bad_rows, rng)
    return counts
