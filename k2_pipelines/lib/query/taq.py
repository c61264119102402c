"""Trades against the quote prevailing at each (as-of joins), and markouts: trades_with_quotes.

The trades of symbols in [start, end) (at most `limit`, in (time, trade id) order), each with the newest quote of the
same symbol and exchange at or before its time, if that quote is at most `tolerance` older (else the quote columns
are null); a quote at the trade's very microsecond prevails, and of several quotes at one time the one with the
greatest quote_id (ids compare as strings, as every K2 query orders them). `mid_after_<h>` is the mid prevailing at
the trade's time plus h by the same rule (the tolerance counted from that time): the only columns that look past the
trade, by definition. Time travel: as_of a time reads each table's snapshot of that time; as_of a snapshot id names a
trades snapshot, read with the quotes snapshot current when it was committed.

Three DuckDB queries: the trades, read from their planned files; the quotes that can prevail at one of them or at a
markout after it (from `tolerance` before the first trade to the longest markout after the last), from theirs; and
DuckDB's ASOF join of every trade, at its time and at each horizon, with those quotes. The join finds quote rows,
taken afterwards from the quotes read (an Arrow take): carrying every column through four ASOF joins took 360 ms of
one symbol's day, this 100 (see docs/performance.md#trades-against-quotes-k2-bench-taq)."""

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2_pipelines.lib.iceberg.tables import QUOTES
from k2_pipelines.lib.query import validate
from k2_pipelines.lib.query.api import _catalog, _in_event_order, _inputs, _snapshot, _stamped, _where
from k2_pipelines.lib.query.engine import TIME_LIMIT_SECONDS, engine
from k2_pipelines.lib.query.plan import plan, range_filter, snapshot_id, source
from k2_pipelines.lib.query.tables import current_table
from k2_pipelines.lib.query.validate import (
    EARLIEST,
    MAX_LIMIT,
    AsOf,
    AsOfValue,
    QueryError,
    QueryTimeout,
    Symbols,
    Time,
)

Duration = timedelta | str  # a timedelta, or 500ms, 5s, 1m, ... (validate.duration)
DEFAULT_TOLERANCE = "5s"
DEFAULT_MARKOUTS = ("1s", "5s", "60s")
MAX_MARKOUTS = 10  # each one is a probe of every trade in the join
MICROSECOND = timedelta(microseconds=1)
EPOCH = datetime.fromtimestamp(0, UTC)

_TRADES_SQL = "SELECT exchange, symbol, timestamp, trade_id, price, quantity, side FROM {source} WHERE {where}"
# (decimal(18, 8) + decimal(18, 8)) * 0.5 is a decimal(21, 9): the mid exact
_QUOTES_SQL = """
SELECT symbol, exchange, timestamp, quote_id, bid_price, bid_quantity, ask_price, ask_quantity,
       (bid_price + ask_price) * 0.5 AS mid, ask_price - bid_price AS spread
FROM {source}
WHERE {where}"""
# The quotes, one per key and time first (the greatest quote_id), against the probes: each trade at its time (horizon
# 0) and at each markout horizon after it. A match of another key is no match (see _key_times).
_MATCH_SQL = """
WITH quotes AS (
    SELECT key_time, arg_max(row_index, quote_id) AS row_index
    FROM {source}
    WHERE horizon IS NULL AND key_time IS NOT NULL
    GROUP BY key_time)
SELECT probes.row_index AS trade, probes.horizon, quotes.row_index AS quote
FROM (SELECT key_time, row_index, horizon FROM {source} WHERE horizon IS NOT NULL) AS probes
ASOF JOIN quotes ON probes.key_time >= quotes.key_time
WHERE quotes.key_time // $span = probes.key_time // $span AND probes.key_time - quotes.key_time <= $tolerance"""


def trades_with_quotes(symbols: Symbols, start: Time, end: Time, tolerance: Duration = DEFAULT_TOLERANCE,
                       markouts: Sequence[Duration] = DEFAULT_MARKOUTS, limit: int = MAX_LIMIT,
                       as_of: AsOfValue = None, *, catalog: Catalog | None = None,
                       time_limit: float = TIME_LIMIT_SECONDS) -> pa.Table:
    """Each trade of `symbols` in [start, end) with the quote prevailing at its time (within `tolerance`), its mid,
    spread and the trade's side of the mid (aggressor_by_mid: BUY above it, SELL below, null at the mid or without a
    quote), and `mid_after_<h>` for each markout horizon h (columns named in whole s, else ms, else us)."""
    within = validate.duration(tolerance, "tolerance")
    horizons = _horizons(markouts)
    names, start, end, limit, checked_as_of = _inputs(symbols, start, end, limit, as_of)
    loaded = _catalog(catalog)
    trades_table, snapshot = _snapshot(loaded, "trades", checked_as_of, names)
    deadline = time.monotonic() + time_limit
    try:
        trades = _trades(trades_table, snapshot, names, start, end, limit, deadline)
        origin, until = _quoted_range(trades, within, max(horizons, default=timedelta(0)))
        quotes = _quotes(loaded, trades_table, checked_as_of, names, origin, until, deadline)
        found = _found(trades, quotes, names, origin, until, within, horizons, deadline)
    except QueryTimeout:  # the time limit is the three queries': its message names it, not what was left of it
        raise QueryTimeout(f"the query took longer than its time limit of {time_limit:g} s; narrow the time range or "
                           "the symbols") from None
    return _stamped(_joined(trades, quotes, found, horizons), snapshot)


def _horizons(markouts: Sequence[Duration]) -> list[timedelta]:
    if isinstance(markouts, (str, timedelta)):  # one markout
        markouts = [markouts]
    if not isinstance(markouts, (list, tuple)) or len(markouts) > MAX_MARKOUTS:
        raise QueryError(f"markouts must be a list of at most {MAX_MARKOUTS} durations such as 1s, 5s, 60s")
    return sorted({validate.duration(markout, "a markout") for markout in markouts})


def _label(horizon: timedelta) -> str:
    """A horizon in whole seconds, else milliseconds, else microseconds: 1m is 60s, whatever spelling asked for it."""
    micros = horizon // MICROSECOND
    for unit, size in (("s", 1_000_000), ("ms", 1_000)):
        if micros % size == 0:
            return f"{micros // size}{unit}"
    return f"{micros}us"


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _trades(table: Table, snapshot: int | None, names: list[str], start: datetime, end: datetime, limit: int,
            deadline: float) -> pa.Table:
    where, params = _where("timestamp", names, start, end)
    sql = _TRADES_SQL.replace("{where}", where)
    read_from = source(plan(table, snapshot, range_filter("timestamp", names, start, end)))
    # the scan's rows come in the files' order, which after compaction is event-time order: checked, not sorted
    rows = engine().run(sql, params, read_from, _left(deadline), max_rows=limit + 1)
    if rows.num_rows <= limit:
        return _in_event_order(rows, "trade_id")
    return engine().run(sql + " ORDER BY timestamp, trade_id LIMIT $limit", {**params, "limit": limit}, read_from,
                        _left(deadline))


def _quoted_range(trades: pa.Table, within: timedelta, longest: timedelta) -> tuple[datetime, datetime]:
    """The quotes that can prevail at a trade or at a markout after it: from `within` before the first trade to the
    longest markout after the last (no quotes without trades)."""
    if trades.num_rows == 0:
        return EARLIEST, EARLIEST
    first, last = trades["timestamp"][0].as_py(), trades["timestamp"][-1].as_py()
    return first - within, last + longest + MICROSECOND


def _quotes(catalog: Catalog, trades: Table, as_of: AsOf | None, names: list[str], start: datetime, end: datetime,
            deadline: float) -> pa.Table:
    """The quotes of [start, end) of the snapshot that goes with the trades' (none without a quotes table)."""
    table = current_table(catalog, QUOTES.identifier)
    if table is None:
        read_from: tuple[str, ...] | pa.Table = QUOTES.schema().as_arrow().empty_table()
    else:
        read_from = source(plan(table, _quotes_snapshot(table, trades, as_of),
                                range_filter("timestamp", names, start, end)))
    where, params = _where("timestamp", names, start, end)
    return engine().run(_QUOTES_SQL.replace("{where}", where), params, read_from, _left(deadline))


def _quotes_snapshot(quotes: Table, trades: Table, as_of: AsOf | None) -> int | None:
    """The current snapshot; as of a time, the one current then; as of a trades snapshot, the one current when it was
    committed. None: the table had no snapshot yet (no quotes)."""
    if as_of is None:
        return snapshot_id(quotes, None)
    at = as_of.at
    if at is None:
        committed_ms = next(s.timestamp_ms for s in trades.snapshots() if s.snapshot_id == as_of.snapshot_id)
        # the middle of its millisecond: snapshot_id takes the whole milliseconds of a float time
        at = EPOCH + timedelta(milliseconds=committed_ms, microseconds=500)
    if quotes.snapshot_as_of_timestamp(int(at.timestamp() * 1000)) is None:
        return None
    return snapshot_id(quotes, AsOf(at=at))


def _found(trades: pa.Table, quotes: pa.Table, names: list[str], origin: datetime, until: datetime,
           within: timedelta, horizons: list[timedelta], deadline: float) -> np.ndarray:
    """The row of `quotes` prevailing for each trade (row 0) and at each horizon after it (row 1, ...); -1: none."""
    span = (until - origin) // MICROSECOND + 1
    exchanges = pc.unique(trades["exchange"])
    at = _key_times(trades, names, exchanges, origin, span).to_numpy()  # every trade has a key
    offsets = np.array([0, *(h // MICROSECOND for h in horizons)])
    probes = pa.table({"key_time": (offsets[:, None] + at).ravel(),
                       "row_index": np.tile(np.arange(trades.num_rows, dtype=np.int32), len(offsets)),
                       "horizon": np.repeat(np.arange(len(offsets), dtype=np.int8), trades.num_rows),
                       "quote_id": pa.nulls(trades.num_rows * len(offsets), quotes.schema.field("quote_id").type)})
    quoted = pa.table({"key_time": _key_times(quotes, names, exchanges, origin, span),
                       "row_index": np.arange(quotes.num_rows, dtype=np.int32),
                       "horizon": pa.nulls(quotes.num_rows, pa.int8()),
                       "quote_id": quotes["quote_id"]})
    matched = engine().run(_MATCH_SQL, {"span": span, "tolerance": within // MICROSECOND},
                           pa.concat_tables([probes, quoted]), _left(deadline))
    found = np.full((len(offsets), trades.num_rows), -1)
    found[matched["horizon"].to_numpy(), matched["trade"].to_numpy()] = matched["quote"].to_numpy()
    return found


def _key_times(rows: pa.Table, names: list[str], exchanges: pa.Array, origin: datetime, span: int) -> pa.Array:
    """Symbol, exchange and time in one BIGINT, (symbol, exchange) * span + microseconds since origin (null: an
    exchange without trades). DuckDB's ASOF join on one ordered integer costs a half to a quarter of what it does with
    equality conditions on symbol and exchange (it partitions by those), and a key's times, all in [origin, origin +
    span), never reach another's: 100 symbols over 368 days leave room for 2,900 exchanges in 63 bits."""
    key = pc.add(pc.multiply(pc.index_in(rows["symbol"], pa.array(names)).cast(pa.int64()), len(exchanges)),
                 pc.index_in(rows["exchange"], exchanges))
    micros = pc.subtract(rows["timestamp"].cast(pa.int64()), (origin - EPOCH) // MICROSECOND)
    return pc.add_checked(pc.multiply_checked(key, span), micros)


def _joined(trades: pa.Table, quotes: pa.Table, found: np.ndarray, horizons: list[timedelta]) -> pa.Table:
    quotes = quotes.combine_chunks()  # take from one chunk: a third faster than from DuckDB's several

    def rows(at: np.ndarray) -> pa.Array:
        return pa.array(at, mask=at < 0)  # -1: a row of nulls

    prevailing = quotes.take(rows(found[0]))
    mid, price = prevailing["mid"], trades["price"]
    # the quote rule: a trade above the mid took the ask (a buyer's), below it hit the bid (a seller's)
    nothing = pa.scalar(None, pa.string())
    side = pc.if_else(pc.greater(price, mid), "BUY", pc.if_else(pc.less(price, mid), "SELL", nothing))
    return pa.table({
        **{name: trades[name] for name in trades.column_names},
        "quote_timestamp": prevailing["timestamp"],
        **{name: prevailing[name] for name in ("quote_id", "bid_price", "bid_quantity", "ask_price", "ask_quantity",
                                               "mid", "spread")},
        "aggressor_by_mid": side,
        **{f"mid_after_{_label(h)}": quotes["mid"].take(rows(at)) for h, at in zip(horizons, found[1:])},
    })
