"""The pandas frames K2's checks run on (see lib/quality/checks.py), built from Arrow with vectorized kernels."""

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from k2_pipelines.lib.avro.arrow import join

_READ_BY_CHECKS = {"trade_id", "quote_id", "symbol", "exchange", "side"}  # strings checked beyond nulls


def _as_frame(columns: dict[str, pa.Array]) -> pd.DataFrame:
    return pa.table(columns).to_pandas(date_as_object=False)


def _checked_value(name: str, column: pa.ChunkedArray) -> pa.Array:
    """What a check sees of a column: decimals as floats; strings that only the null check reads (ids such as
    message_id, constants such as currency) and nested values by their lengths, null where they are null. A string
    or list per row would cost far more memory and time to convert."""
    values = column.combine_chunks()
    if pa.types.is_decimal(values.type):
        return values.cast(pa.float64())
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type) or pa.types.is_map(values.type):
        return pc.list_value_length(values)
    if (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)) and name not in _READ_BY_CHECKS:
        return pc.utf8_length(values)
    return values


def _moves(symbols: pa.Array, times: pa.Array, prices: np.ndarray) -> np.ndarray:
    """|price / previous price - 1| between a symbol's consecutive rows in time order (NaN for its first)."""
    codes = pc.dictionary_encode(symbols).indices.to_numpy(zero_copy_only=False)
    order = np.lexsort((times.cast(pa.int64()).to_numpy(), codes))
    ordered = prices[order]
    moves = np.full(len(prices), np.nan)
    if len(prices) > 1:
        same_symbol = codes[order][1:] == codes[order][:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            moves[1:] = np.where(same_symbol, np.abs(ordered[1:] / ordered[:-1] - 1), np.nan)
    unordered = np.empty_like(moves)
    unordered[order] = moves
    return unordered


def _listed_at(rows: pa.Table, listings: pa.Table) -> pa.Array:
    """Each row's instrument listing time (null where unknown), from reference_data rows."""
    exchanges = pc.unique(rows.column("exchange").combine_chunks())
    known = listings.filter(pc.and_(pc.is_valid(listings.column("listing_date")),
                                    pc.is_in(listings.column("exchange"), exchanges)))
    if not known.num_rows:  # a drain's exchange mostly has no listings: no key per row to build
        return pa.nulls(rows.num_rows, listings.schema.field("listing_date").type)

    def keys(table: pa.Table) -> pa.Array:
        return join(table.column("exchange").combine_chunks(), b"\x1f", table.column("symbol").combine_chunks())
    index = pc.index_in(keys(rows), value_set=keys(known))
    return known.column("listing_date").combine_chunks().take(index)


def checked_columns(rows: pa.Table, listings: pa.Table, names: tuple[str, ...], local_timezone: str | None = None
                    ) -> dict[str, pa.Array]:
    """The columns `names` of trades or quotes as the row checks see them, derived ones included: `listed_at`, and
    for rows of an exchange checked in its own time zone (ASX) `local_date`, `local_minute` and `trading_date` (from
    the id, see trading_dates, unless the rows carry it)."""
    columns = {name: _checked_value(name, rows.column(name)) for name in names if name in rows.column_names}
    if "listed_at" in names:
        columns["listed_at"] = _listed_at(rows, listings)
    if local_timezone and {"local_date", "local_minute"} & set(names):
        local = pc.local_timestamp(
            rows.column("timestamp").combine_chunks().cast(pa.timestamp("us", tz=local_timezone)))
        columns["local_date"] = local.cast(pa.date32())
        columns["local_minute"] = pc.add(pc.multiply(pc.hour(local), 60), pc.minute(local))
    if local_timezone and "trading_date" in names and "trading_date" not in columns:
        id_column = "trade_id" if "trade_id" in rows.column_names else "quote_id"
        columns["trading_date"] = trading_dates(rows.column(id_column).combine_chunks())
    return columns


def market_rows(rows: pa.Table, kind: str, listings: pa.Table, required: tuple[str, ...],
                local_timezone: str | None = None) -> pd.DataFrame:
    """Trades or quotes as the row checks see them (checked_columns), with each row's `price_move`."""
    derived = ("listed_at", "local_date", "local_minute", "trading_date") if local_timezone else ("listed_at",)
    columns = checked_columns(rows, listings, tuple(dict.fromkeys(required)) + derived, local_timezone)
    prices = (columns["price"] if kind == "trades"
              else pc.divide(pc.add(columns["bid_price"], columns["ask_price"]), 2)).to_numpy(zero_copy_only=False)
    columns["price_move"] = pa.array(_moves(columns["symbol"], columns["timestamp"], prices), pa.float64())
    return _as_frame(columns)


def trading_dates(ids: pa.Array) -> pa.Array:
    """The trading date an ASX id names (`ASX-<company>-<YYYYMMDD>-<line>`), null for other ids."""
    digits = pc.struct_field(pc.extract_regex(ids, r"^ASX-[^-]*-(?P<day>\d{8})-"), [0])
    distinct = pc.dictionary_encode(digits)  # a load holds a few dates: each is parsed once
    days = pc.strptime(distinct.dictionary, format="%Y%m%d", unit="s", error_is_null=True).cast(pa.date32())
    return days.take(distinct.indices)


def stream_frames(written: pa.Table, gaps: pa.Table, messages: int, dead_letters: int, newest_event: datetime | None,
                  newest_message: datetime | None, now: datetime, freshness_minutes: float) -> dict[str, pd.DataFrame]:
    """`symbols` (rows written and trade ids missing, per symbol) and `batch` (one row) of a drained batch."""
    written_by_symbol = written.group_by("symbol").aggregate([("symbol", "count")])
    missing = gaps.group_by("symbol").aggregate([("missing", "sum")])
    symbols = sorted(set(written_by_symbol.column("symbol").to_pylist()) | set(missing.column("symbol").to_pylist()))
    row_counts = dict(zip(written_by_symbol.column("symbol").to_pylist(),
                          written_by_symbol.column("symbol_count").to_pylist()))
    missing_counts = dict(zip(missing.column("symbol").to_pylist(), missing.column("missing_sum").to_pylist()))
    rows = np.array([row_counts.get(s, 0) for s in symbols], dtype=np.int64)
    gone = np.array([missing_counts.get(s, 0) for s in symbols], dtype=np.int64)
    with np.errstate(invalid="ignore"):
        share = np.where(rows + gone > 0, gone / np.maximum(rows + gone, 1), 0.0)
    event_age = (now - newest_event).total_seconds() / 60 if newest_event else None
    message_age = (now - newest_message).total_seconds() / 60 if newest_message else None
    feed_up = message_age is not None and message_age <= freshness_minutes
    return {
        "symbols": pd.DataFrame({"symbol": symbols, "rows_written": rows, "missing_ids": gone,
                                 "missing_share": share}),
        "batch": pd.DataFrame({
            "messages": [messages], "dead_letters": [dead_letters],
            "dead_letter_share": [dead_letters / messages if messages else 0.0],
            "newest_event_age_minutes": [event_age], "newest_message_age_minutes": [message_age],
            "stale": [bool(feed_up and (event_age is None or event_age > freshness_minutes))],
        }),
    }


def days_frame(source_lines: dict[str, int], loaded: dict[str, int], rejected: dict[str, int]) -> pd.DataFrame:
    """One row per trading date of an ASX load: lines in its source files, rows loaded, rows rejected."""
    days = sorted(set(source_lines) | set(loaded) | set(rejected))
    frame = pd.DataFrame({"trading_date": days,
                          "source_lines": [source_lines.get(d, 0) for d in days],
                          "loaded": [loaded.get(d, 0) for d in days],
                          "rejected": [rejected.get(d, 0) for d in days]})
    frame["accounted"] = frame["loaded"] + frame["rejected"]
    return frame
