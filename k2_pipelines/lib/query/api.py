"""K2's queries: trades, quotes and OHLCV bars of symbols over a time range, now or as of a past snapshot.

Every function returns a pyarrow.Table; times are UTC, start inclusive and end exclusive. A result of rows read from
a snapshot names it in its schema metadata (`result_snapshot`), so a caller can page on through the same snapshot.
The SQL below is fixed text: symbols, times, limits and file lists reach DuckDB as parameters only."""

import threading
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2_pipelines.lib.iceberg import stats as stats
from k2_pipelines.lib.iceberg.catalog import catalog_properties, load_k2_catalog
from k2_pipelines.lib.iceberg.tables import NAMESPACE, OHLCV_TABLES
from k2_pipelines.lib.query import validate
from k2_pipelines.lib.query.bars import bars_sql
from k2_pipelines.lib.query.engine import TIME_LIMIT_SECONDS, engine
from k2_pipelines.lib.query.fresh import Fresh, Tail, fresh_mode, read_tail, tail_rows_in, with_freshness
from k2_pipelines.lib.query.plan import plan, range_filter, snapshot_id, source
from k2_pipelines.lib.query.symbols import table_symbols
from k2_pipelines.lib.query.tables import current_table
from k2_pipelines.lib.query.validate import AsOf, AsOfValue, NotFound, Position, QueryError, Symbols, Time

SNAPSHOT_KEY = b"k2.snapshot_id"
RECENT_WINDOW = timedelta(minutes=15)  # what newest-first queries read first


def trades(symbols: Symbols, start: Time, end: Time, limit: int = 1000, as_of: AsOfValue = None,
           newest_first: bool = False, *, catalog: Catalog | None = None, time_limit: float = TIME_LIMIT_SECONDS,
           after: Position | None = None, fresh: Fresh = False) -> pa.Table:
    """The trades of `symbols` in [start, end) in event-time order (newest first: the latest `limit`). With `after`
    (a trade's time and id), only the trades that come after it in that order: the next page. Fresh: with the
    messages not yet drained (see fresh.py; `result_freshness` says what the result holds)."""
    return _events("trades", "trade_id", symbols, start, end, limit, as_of, newest_first, catalog, time_limit, after,
                   fresh)


def quotes(symbols: Symbols, start: Time, end: Time, limit: int = 1000, as_of: AsOfValue = None,
           newest_first: bool = False, *, catalog: Catalog | None = None, time_limit: float = TIME_LIMIT_SECONDS,
           after: Position | None = None, fresh: Fresh = False) -> pa.Table:
    """The best bid/ask quotes of `symbols` in [start, end), as trades()."""
    return _events("quotes", "quote_id", symbols, start, end, limit, as_of, newest_first, catalog, time_limit, after,
                   fresh)


def ohlcv(symbols: Symbols, start: Time, end: Time, interval: str = "1m", as_of: AsOfValue = None,
          limit: int = 100_000, *, catalog: Catalog | None = None, time_limit: float = TIME_LIMIT_SECONDS,
          fresh: Fresh = False) -> pa.Table:
    """Bars computed now from the trades in [start, end) (a start inside a bar makes that bar partial); fresh: with
    the trades not yet drained."""
    width = validate.interval(interval)
    names, start, end, limit, checked_as_of = _inputs(symbols, start, end, limit, as_of)
    table, snapshot, tail = _fresh_snapshot(_catalog(catalog), "trades", checked_as_of, names, fresh)
    where, params = _where("timestamp", names, start, end)
    planned = plan(table, snapshot, range_filter("timestamp", names, start, end))
    matched = _matching(tail.rows, "timestamp", names, start, end) if tail else None
    bars = _stamped(engine().run(bars_sql(where) + " LIMIT $limit", {**params, "width": width, "limit": limit},
                                 source(planned), time_limit, tail=matched), snapshot)
    if tail is None or matched is None:
        return bars
    from_tail = matched.num_rows
    if bars.num_rows == limit:  # the limit may have cut bars off: count the tail's trades in those returned only
        tail_bars = engine().run(bars_sql(where), {**params, "width": width}, matched, time_limit)
        keys = ["exchange", "symbol", "bar_start"]
        from_tail = pc.sum(tail_bars.select([*keys, "trade_count"]).join(bars.select(keys), keys)["trade_count"]) \
            .as_py() or 0
    trade_count = pc.sum(bars["trade_count"]).as_py() or 0
    return with_freshness(bars, tail.freshness(from_tail, trade_count - from_tail))


def day_summary(symbol: str, day: date | str, time_zone: str = "UTC", as_of: AsOfValue = None, *,
                catalog: Catalog | None = None, time_limit: float = TIME_LIMIT_SECONDS) -> pa.Table:
    """The day's open, high, low, close, volume, VWAP and trade count of `symbol`, one row per exchange: a bar over
    the calendar day in `time_zone` (an ASX day is a Sydney day: in UTC it starts the evening before)."""
    start, end = validate.day_bounds(day, time_zone)
    names, start, end, _, checked_as_of = _inputs(symbol, start, end, 1, as_of)
    table, snapshot = _snapshot(_catalog(catalog), "trades", checked_as_of, names)
    where, params = _where("timestamp", names, start, end)
    planned = plan(table, snapshot, range_filter("timestamp", names, start, end))
    return _stamped(engine().run(bars_sql(where, from_origin=True), {**params, "width": end - start, "origin": start},
                                 source(planned), time_limit), snapshot)


def gold_ohlcv(symbols: Symbols, start: Time, end: Time, interval: str = "1m", as_of: AsOfValue = None,
               limit: int = 100_000, *, catalog: Catalog | None = None,
               time_limit: float = TIME_LIMIT_SECONDS) -> pa.Table:
    """Bars starting in [start, end) read from the gold table market_data.ohlcv_<interval>."""
    if interval not in OHLCV_TABLES:
        raise QueryError(f"no gold table for interval {interval!r:.40} (gold: {', '.join(OHLCV_TABLES)}); "
                         "ohlcv() computes any interval from the trades")
    names, start, end, limit, checked_as_of = _inputs(symbols, start, end, limit, as_of)
    table, snapshot = _snapshot(_catalog(catalog), f"ohlcv_{interval}", checked_as_of, names)
    where, params = _where("bar_start", names, start, end)
    planned = plan(table, snapshot, range_filter("bar_start", names, start, end))
    sql = f"SELECT * EXCLUDE (run_id) FROM {{source}} WHERE {where} ORDER BY bar_start, symbol, exchange " \
          "LIMIT $limit"
    return _stamped(engine().run(sql, {**params, "limit": limit}, source(planned), time_limit), snapshot)


def result_snapshot(result: pa.Table) -> int | None:
    """The snapshot a query's rows were read from (None: the table had none yet)."""
    value = (result.schema.metadata or {}).get(SNAPSHOT_KEY)
    return int(value) if value else None


def symbols(table: str = "trades", as_of: AsOfValue = None, *, catalog: Catalog | None = None) -> pa.Table:
    """The symbols `table` holds (as of a snapshot), sorted."""
    loaded = _load(_catalog(catalog), validate.table(table))
    if "symbol" not in loaded.schema().column_names:
        raise QueryError(f"{NAMESPACE}.{table} has no symbol column")
    found = table_symbols(loaded, snapshot_id(loaded, validate.as_of(as_of)))
    return pa.table({"symbol": pa.array(sorted(found), pa.string())})


def table_stats(*, catalog: Catalog | None = None) -> pa.Table:
    """Rows, files, bytes and the current snapshot of every K2 table (from metadata: no data is read)."""
    return pa.Table.from_pylist(stats.table_stats(_catalog(catalog)))


def snapshots(table: str = "trades", *, catalog: Catalog | None = None) -> pa.Table:
    """Every snapshot of `table`, oldest first: what as_of can name."""
    loaded = _load(_catalog(catalog), validate.table(table))
    current = loaded.current_snapshot()
    rows = [{
        "snapshot_id": s.snapshot_id,
        "parent_id": s.parent_snapshot_id,
        "committed_at": datetime.fromtimestamp(s.timestamp_ms / 1000, UTC),
        "operation": s.summary.operation.value if s.summary else None,
        "added_records": int(s.summary.get("added-records", 0)) if s.summary else 0,
        "total_records": int(s.summary.get("total-records", 0)) if s.summary else 0,
        "current": current is not None and s.snapshot_id == current.snapshot_id,
    } for s in sorted(loaded.snapshots(), key=lambda s: s.timestamp_ms)]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("snapshot_id", pa.int64()), ("parent_id", pa.int64()), ("committed_at", pa.timestamp("ms", "UTC")),
        ("operation", pa.string()), ("added_records", pa.int64()), ("total_records", pa.int64()),
        ("current", pa.bool_())]))


def _events(name: str, id_column: str, symbols_: Symbols, start: Time, end: Time, limit: int, as_of: AsOfValue,
            newest_first: bool, catalog: Catalog | None, time_limit: float, after: Position | None,
            fresh: Fresh) -> pa.Table:
    names, start, end, limit, checked_as_of = _inputs(symbols_, start, end, limit, as_of)
    if fresh_mode(fresh) and after is not None:
        raise QueryError("a fresh read is not paged (the tail moves on): raise the limit or narrow the range")
    table, snapshot, tail = _fresh_snapshot(_catalog(catalog), name, checked_as_of, names, fresh)
    rows = _events_of(table, snapshot, id_column, names, start, end, limit, newest_first, time_limit, after)
    if tail is None:
        return rows
    # the first `limit` of both sides merged by pyarrow: DuckDB's scan of Arrow rows converts their maps and lists
    # (75 ms for 50,000 trades)
    matched = _matching(tail.rows, "timestamp", names, start, end)
    order = "descending" if newest_first else "ascending"
    both = pa.concat_tables([rows, matched.cast(rows.schema)])
    rows = _stamped(both.take(pc.select_k_unstable(both, limit, [("timestamp", order), (id_column, order)])), snapshot)
    from_tail = tail_rows_in(rows, matched, id_column)
    return with_freshness(rows, tail.freshness(from_tail, rows.num_rows - from_tail))


def _events_of(table: Table, snapshot: int | None, id_column: str, names: list[str], start: datetime, end: datetime,
               limit: int, newest_first: bool, time_limit: float, after: Position | None) -> pa.Table:
    beyond, beyond_params = "", {}
    if after is not None:
        at, after_id = validate.position(after)
        # the files planned are those of what is left of the range
        if newest_first:
            end = end if at >= end else at + timedelta(microseconds=1)
        else:
            start = max(start, at)
        compare = "<" if newest_first else ">"
        beyond = f" AND (timestamp {compare} $after_time OR (timestamp = $after_time AND {id_column} {compare} " \
                 "$after_id))"
        beyond_params = {"after_time": at, "after_id": after_id}
    if newest_first and end - start > RECENT_WINDOW:
        # the latest rows are most often within the range's last minutes: read those first, the rest only if needed
        recent = _events_in(table, snapshot, id_column, names, end - RECENT_WINDOW, end, limit, newest_first,
                            time_limit, beyond, beyond_params)
        if recent.num_rows == limit:
            return recent
    return _events_in(table, snapshot, id_column, names, start, end, limit, newest_first, time_limit, beyond,
                      beyond_params)


def _events_in(table: Table, snapshot: int | None, id_column: str, names: list[str], start: datetime, end: datetime,
               limit: int, newest_first: bool, time_limit: float, beyond: str,
               beyond_params: dict[str, object]) -> pa.Table:
    where, params = _where("timestamp", names, start, end)
    where, params = where + beyond, {**params, **beyond_params}
    read_from = source(plan(table, snapshot, range_filter("timestamp", names, start, end)))
    if not newest_first:
        # DuckDB returns a scan's rows in the files' order, which after compaction (files sorted by symbol and time)
        # is already event-time order: a check costs 1 ms where sorting 140,000 rows costs 15
        rows = engine().run(f"SELECT * FROM {{source}} WHERE {where}", params, read_from, time_limit,
                            max_rows=limit + 1)
        if rows.num_rows <= limit:  # every match: put them in order here
            return _stamped(_in_event_order(rows, id_column), snapshot)
    order = "DESC" if newest_first else "ASC"
    return _stamped(engine().run(f"SELECT * FROM {{source}} WHERE {where} ORDER BY timestamp {order}, "
                                 f"{id_column} {order} LIMIT $limit", {**params, "limit": limit}, read_from,
                                 time_limit), snapshot)


def _stamped(rows: pa.Table, snapshot: int | None) -> pa.Table:
    if snapshot is None:
        return rows
    return rows.replace_schema_metadata({**(rows.schema.metadata or {}), SNAPSHOT_KEY: str(snapshot).encode()})


def _in_event_order(rows: pa.Table, id_column: str) -> pa.Table:
    """`rows` sorted by event time, then id (as DuckDB's ORDER BY sorts them); unchanged if they already are."""
    if rows.num_rows < 2:
        return rows
    times, ids = rows["timestamp"], rows[id_column]
    earlier, later = times.slice(0, rows.num_rows - 1), times.slice(1)
    in_order = pc.or_(pc.less(earlier, later), pc.and_(pc.equal(earlier, later),
                                                       pc.less_equal(ids.slice(0, rows.num_rows - 1), ids.slice(1))))
    if pc.all(in_order).as_py():
        return rows
    return rows.sort_by([("timestamp", "ascending"), (id_column, "ascending")])


def _inputs(symbols_: Symbols, start: Time, end: Time, limit: int,
            as_of: AsOfValue) -> tuple[list[str], datetime, datetime, int, AsOf | None]:
    return (validate.symbols(symbols_), *validate.time_range(start, end), validate.limit(limit),
            validate.as_of(as_of))


def _snapshot(catalog: Catalog, name: str, as_of: AsOf | None, names: list[str]) -> tuple[Table, int | None]:
    """The table and the snapshot to read, once each symbol is known to the table at that snapshot."""
    table = _load(catalog, name)
    snapshot = snapshot_id(table, as_of)
    _known(table, name, snapshot, as_of, names, set())
    return table, snapshot


def _fresh_snapshot(catalog: Catalog, name: str, as_of: AsOf | None, names: list[str],
                    fresh: Fresh) -> tuple[Table, int | None, Tail | None]:
    """As _snapshot, and for a fresh read the tail beyond that snapshot (whose symbols are known too)."""
    if not fresh_mode(fresh):
        return *_snapshot(catalog, name, as_of, names), None
    if as_of is not None:
        raise QueryError("a fresh read is of the current snapshot and the messages after it: not with as_of")
    table = _load(catalog, name)
    tail = read_tail(catalog, table, name, fresh)
    _known(table, name, tail.snapshot_id, None, names, set(pc.unique(tail.rows["symbol"]).to_pylist()))
    return table, tail.snapshot_id, tail


def _known(table: Table, name: str, snapshot: int | None, as_of: AsOf | None, names: list[str],
           in_tail: set[str]) -> None:
    unknown = [s for s in names if s not in in_tail and s not in table_symbols(table, snapshot)]
    if unknown:
        at = f"as of snapshot {snapshot}" if as_of else "now"
        raise NotFound(f"{NAMESPACE}.{name} has no symbol {', '.join(unknown)} {at} (see `k2 query symbols`)")


def _matching(rows: pa.Table, column: str, names: list[str], start: datetime, end: datetime) -> pa.Table:
    """The rows of `names` with `column` in [start, end): what _where selects."""
    return rows.filter(pc.and_(pc.is_in(rows["symbol"], pa.array(names, pa.string())),
                               pc.and_(pc.greater_equal(rows[column], pa.scalar(start, rows.schema.field(column).type)),
                                       pc.less(rows[column], pa.scalar(end, rows.schema.field(column).type)))))


def _where(column: str, names: list[str], start: datetime, end: datetime) -> tuple[str, dict]:
    """The filter, with one generated parameter name per symbol (an IN list DuckDB pushes into the Parquet scan)."""
    params = {f"symbol_{i}": name for i, name in enumerate(names)}
    symbol_in = ", ".join(f"${key}" for key in params)
    return (f"symbol IN ({symbol_in}) AND {column} >= $start AND {column} < $end",
            {**params, "start": start, "end": end})


def _load(catalog: Catalog, name: str) -> Table:
    identifier = f"{NAMESPACE}.{name}"
    table = current_table(catalog, identifier)
    if table is None:
        raise NotFound(f"there is no table {identifier}")
    return table


_catalogs: dict[tuple, Catalog] = {}
_catalogs_lock = threading.Lock()


def default_catalog() -> Catalog:
    """K2's catalog, as the queries without a `catalog` argument use it."""
    return _catalog(None)


def _catalog(catalog: Catalog | None) -> Catalog:
    """The given catalog, else K2's (one per configuration, reused: loading one opens its database)."""
    if catalog is not None:
        return catalog
    key = tuple(sorted(catalog_properties().items()))
    with _catalogs_lock:
        if key not in _catalogs:
            _catalogs[key] = load_k2_catalog()
        return _catalogs[key]
