"""The gold bars tables: OHLCV bars of a day's trades (as lib/query/bars.py defines a bar), and the idempotent rebuild
of one UTC day of a gold bars table."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan

from k2_pipelines.lib.iceberg.summary import RUN_ID
from k2_pipelines.lib.iceberg.tables import OHLCV_TABLES, TRADES
from k2_pipelines.lib.iceberg.writes import replace_atomically, replacement
from k2_pipelines.lib.query.bars import bars_sql
from k2_pipelines.lib.query.engine import engine
from k2_pipelines.lib.query.validate import interval as interval_width

TRADE_COLUMNS = ("exchange", "symbol", "timestamp", "price", "quantity", "trade_id")
REBUILD_TIME_LIMIT_SECONDS = 600.0  # a day of every symbol's trades: seconds even at tens of millions


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


def bars(trades: pa.Table, interval: str) -> pa.Table:
    """One bar per (exchange, symbol, interval start in UTC) of `trades`, in order of bar start then symbol."""
    width = interval_width(interval)
    missing = set(TRADE_COLUMNS) - set(trades.column_names)
    if missing:
        raise ValueError(f"trades lack the columns {sorted(missing)}")
    return engine().run(bars_sql(), {"width": width}, trades.select(TRADE_COLUMNS), REBUILD_TIME_LIMIT_SECONDS)


def _counts(symbols: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(symbols).to_pylist()
    return dict(sorted((c["values"], c["counts"]) for c in counts))


def utc_day_range(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


def _between(column: str, day: date) -> BooleanExpression:
    start, end = utc_day_range(day)
    return And(GreaterThanOrEqual(column, start.isoformat()), LessThan(column, end.isoformat()))


def day_trades(catalog: Catalog, day: date) -> pa.Table:
    """Every exchange's trades with event time in the UTC day (an ASX day's come from two trading dates)."""
    table = catalog.load_table(TRADES.identifier)
    return table.scan(row_filter=_between("timestamp", day), selected_fields=TRADE_COLUMNS).to_arrow()


def rebuild_day(catalog: Catalog, interval: str, day: date, run_id: str) -> BarsResult:
    """Replace the bars of the UTC `day` in market_data.ohlcv_<interval> with bars of the day's trades as they now
    are, in one commit whose snapshot says `k2.run-id` = run_id. A rerun replaces, so it never double-counts."""
    if interval not in OHLCV_TABLES:
        raise ValueError(f"no gold table for bar interval {interval!r}; the gold intervals are {sorted(OHLCV_TABLES)}")
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
