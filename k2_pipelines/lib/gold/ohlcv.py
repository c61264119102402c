"""OHLCV bars from trades, and the idempotent rebuild of one UTC day of a gold bars table.

DuckDB computes the bars: it reads the Arrow trades without a copy, aggregates in parallel, and keeps decimals
exact (sums of decimal(18,8) are decimal(38,8); price * quantity is decimal(38,16), summed as decimal(38,16): up to
1e22 of notional per bar, and an overflow is an error, never a silently rounded number). Ordered aggregates give
open and close by event time in one pass. pyarrow's hash aggregates have no ordered first/last, and polars'
decimals are still unstable.
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

from k2_pipelines.lib.asx.load import RUN_ID
from k2_pipelines.lib.replace import replace_atomically, replacement
from k2_pipelines.lib.tables import OHLCV_TABLES, TRADES

INTERVALS = {"1m": "minute", "1h": "hour", "1d": "day"}  # bar interval -> DuckDB date_trunc part
TRADE_COLUMNS = ("exchange", "symbol", "timestamp", "price", "quantity", "trade_id")

# ties in event time: open takes the lowest trade_id, close the highest (trade_ids compare as strings). DuckDB keeps
# the width of decimal(18,8) * decimal(18,8) at 18 digits: the price is widened first. The ratio is a double.
_BARS_SQL = """
SELECT exchange, symbol, date_trunc($part, timestamp) AS bar_start,
       first(price ORDER BY timestamp, trade_id) AS open, max(price) AS high, min(price) AS low,
       last(price ORDER BY timestamp, trade_id) AS close,
       sum(quantity) AS volume, sum(price::DECIMAL(38, 8) * quantity) / sum(quantity) AS vwap, count(*) AS trade_count,
       min(timestamp) AS first_trade_at, max(timestamp) AS last_trade_at
FROM trades
GROUP BY exchange, symbol, bar_start
ORDER BY symbol, bar_start, exchange
"""


@dataclass(frozen=True)
class BarsResult:
    table: str
    interval: str
    day: date
    trades_read: int
    bars_written: int
    bars_by_symbol: dict[str, int]
    trades_by_symbol: dict[str, int]
    snapshot_before: int | None
    snapshot_after: int | None
    commit_attempts: int


def _part(interval: str) -> str:
    if interval not in INTERVALS:
        raise ValueError(f"unknown bar interval {interval!r}; choose from {sorted(INTERVALS)}")
    return INTERVALS[interval]


def bars(trades: pa.Table, interval: str) -> pa.Table:
    """One bar per (exchange, symbol, interval start in UTC) of `trades`, sorted by symbol and bar start."""
    part = _part(interval)
    missing = set(TRADE_COLUMNS) - set(trades.column_names)
    if missing:
        raise ValueError(f"trades lack the columns {sorted(missing)}")
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")  # date_trunc of a timestamptz cuts in the session's zone
        connection.register("trades", trades.select(TRADE_COLUMNS))
        return connection.sql(_BARS_SQL, params={"part": part}).to_arrow_table()


def _counts(symbols: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(symbols).to_pylist()
    return dict(sorted((c["values"], c["counts"]) for c in counts))


def utc_day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), timezone.utc)
    return start, start + timedelta(days=1)


def _between(column: str, day: date):
    start, end = utc_day_range(day)
    return And(GreaterThanOrEqual(column, start.isoformat()), LessThan(column, end.isoformat()))


def day_trades(catalog: Catalog, day: date) -> pa.Table:
    """Every exchange's trades with event time in the UTC day (an ASX day's come from two trading dates)."""
    table = catalog.load_table(TRADES.identifier)
    return table.scan(row_filter=_between("timestamp", day), selected_fields=TRADE_COLUMNS).to_arrow()


def rebuild_day(catalog: Catalog, interval: str, day: date, run_id: str) -> BarsResult:
    """Replace the bars of the UTC `day` in market_data.ohlcv_<interval> with bars of the day's trades as they now
    are, in one commit whose snapshot says `k2.run-id` = run_id. A rerun replaces, so it never double-counts."""
    _part(interval)
    definition = OHLCV_TABLES[interval]
    trades = day_trades(catalog, day)
    rows = bars(trades, interval)
    rows = rows.append_column("run_id", pa.array([run_id] * rows.num_rows, pa.string()))
    commit = replace_atomically(
        catalog, [replacement(catalog, definition.identifier, rows, _between("bar_start", day))], {RUN_ID: run_id})
    return BarsResult(
        table=definition.identifier,
        interval=interval,
        day=day,
        trades_read=trades.num_rows,
        bars_written=rows.num_rows,
        bars_by_symbol=_counts(rows["symbol"]),
        trades_by_symbol=_counts(trades["symbol"]),
        snapshot_before=commit.snapshots_before[definition.identifier],
        snapshot_after=commit.snapshots_after[definition.identifier],
        commit_attempts=commit.attempts,
    )
