"""Rows of a batch that repeat rows already committed: a replayed recording, a producer resending what it sent.

Looking every batch up in the table reads more of it as it grows (files hold every symbol, so no file's event times
fall outside a batch's). Most ids are numbered, `<exchange>-<n>` with n rising per symbol (Binance's trade and
update ids), and for those the drain's checkpoint keeps each symbol's highest committed n: its ceiling. A committed
row with the same id would carry the same n, so a row numbered above its symbol's ceiling repeats nothing. Only the
others are looked up: rows numbered at or below the ceiling (replays, late arrivals), ids that are not numbered, and
symbols without a ceiling yet. They are looked up by each symbol's range of their ids: not by event time, which a
replayed bookTicker does not keep (Binance sends none; its time is when K2 received it).

Rows a quarantine took out of the table (lib/recovery/quarantine.py) must not come back with a resend of their messages
either: the ceilings it carries forward keep their ids suspect, and `quarantined` looks the suspects up in
market_data.quarantine the same way. That table keeps no exchange column: there they match by symbol and id.
"""

from collections.abc import Callable
from functools import reduce

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThanOrEqual, Or
from pyiceberg.table import Table

from k2_pipelines.lib.avro.arrow import join
from k2_pipelines.lib.drain.sequences import record_keys

NOT_NUMBERED = np.iinfo(np.int64).min
_NUMBER = r"^(0|-?[1-9][0-9]{0,17})$"  # written canonically, so that ids and numbers map one to one

Ceilings = dict[str, int]  # symbol -> highest id number committed


def id_numbers(rows: pa.Table, id_column: str) -> np.ndarray:
    """Per row, n where its id is `<exchange>-<n>`, else NOT_NUMBERED."""
    ids, exchanges = rows.column(id_column).combine_chunks(), rows.column("exchange").combine_chunks()
    numbers = np.full(rows.num_rows, NOT_NUMBERED, dtype=np.int64)
    for exchange in pc.unique(exchanges).to_pylist():
        prefix = f"{exchange}-"
        rest = pc.utf8_slice_codeunits(ids, len(prefix))
        numbered = pc.and_(pc.and_(pc.equal(exchanges, exchange), pc.starts_with(ids, prefix)),
                           pc.match_substring_regex(rest, _NUMBER)).to_numpy(zero_copy_only=False)
        if numbered.any():
            numbers[numbered] = rest.filter(pa.array(numbered)).cast(pa.int64()).to_numpy()
    return numbers


def _ceilings_by_row(symbols: pa.ChunkedArray, ceilings: Ceilings) -> np.ndarray:
    """Each row's symbol's ceiling; the largest number where a symbol has none (nothing is above it)."""
    codes = pc.dictionary_encode(symbols.combine_chunks())
    by_code = np.array([ceilings.get(s, np.iinfo(np.int64).max) for s in codes.dictionary.to_pylist()], np.int64)
    return by_code[codes.indices.to_numpy(zero_copy_only=False)]


def could_repeat(rows: pa.Table, numbers: np.ndarray, ceilings: Ceilings) -> np.ndarray:
    return (numbers == NOT_NUMBERED) | (numbers <= _ceilings_by_row(rows.column("symbol"), ceilings))


def ceilings_after(rows: pa.Table, numbers: np.ndarray, ceilings: Ceilings) -> Ceilings:
    """The ceilings once `rows` (with their id numbers) are committed."""
    numbered = numbers != NOT_NUMBERED
    if not numbered.any():
        return dict(ceilings)
    highest = pa.table({"symbol": rows.column("symbol").filter(pa.array(numbered)), "n": numbers[numbered]}) \
        .group_by("symbol").aggregate([("n", "max")])
    after = dict(ceilings)
    for symbol, n in zip(highest.column("symbol").to_pylist(), highest.column("n_max").to_pylist()):
        after[symbol] = max(n, after.get(symbol, n))
    return after


def any_of(expressions: list[BooleanExpression]) -> BooleanExpression:
    """Or of all `expressions` as a balanced tree: PyIceberg's visitors recurse, and a chain of one per symbol (a
    batch over thousands of symbols) would pass Python's recursion limit."""
    while len(expressions) > 1:
        expressions = [Or(*expressions[i:i + 2]) if i + 1 < len(expressions) else expressions[i]
                       for i in range(0, len(expressions), 2)]
    return expressions[0]


def _id_ranges(rows: pa.Table, id_column: str, by: tuple[str, ...]) -> BooleanExpression:
    """A filter for the rows whose key could be among `rows`': per value of the `by` columns, ids between theirs."""
    spans = rows.group_by(list(by)).aggregate([(id_column, "min"), (id_column, "max")])
    return any_of([And(reduce(And, [EqualTo(column, span[column]) for column in by]),
                           And(GreaterThanOrEqual(id_column, span[f"{id_column}_min"]),
                               LessThanOrEqual(id_column, span[f"{id_column}_max"])))
                       for span in spans.to_pylist()])


def _suspects_found(rows: pa.Table, numbers: np.ndarray, ceilings: Ceilings,
                    found_among: Callable[[pa.Array], pa.Array]) -> np.ndarray:
    """Per row, whether it repeats: only the rows that could are looked up, by `found_among(their positions)`."""
    found = np.zeros(rows.num_rows, dtype=bool)
    suspects = np.flatnonzero(could_repeat(rows, numbers, ceilings))
    if suspects.size:
        found[suspects] = found_among(pa.array(suspects)).to_numpy(zero_copy_only=False)
    return found


def repeats(table: Table, rows: pa.Table, keys: pa.Array, numbers: np.ndarray, id_column: str,
            ceilings: Ceilings) -> np.ndarray:
    """Which rows repeat a row already in the table (keys: their record_keys, numbers: their id_numbers)."""
    def found_among(picked: pa.Array) -> pa.Array:
        by = ("exchange", "symbol")
        existing = table.scan(row_filter=_id_ranges(rows.select([*by, id_column]).take(picked), id_column, by),
                              selected_fields=(*by, id_column)).to_arrow()
        return pc.is_in(keys.take(picked), value_set=record_keys(existing, id_column))
    return _suspects_found(rows, numbers, ceilings, found_among)


def _symbol_ids(rows: pa.Table) -> pa.Array:
    return join(rows.column("symbol").combine_chunks(), b"\x1f", rows.column("record_id").combine_chunks())


def quarantined(quarantine: Table, table_name: str, rows: pa.Table, numbers: np.ndarray, id_column: str,
                ceilings: Ceilings) -> np.ndarray:
    """Which rows repeat a row that a quarantine took out of table `table_name` (its identifier) into `quarantine`.

    Load `quarantine` after the main table was loaded for `repeats`: a quarantine moves rows out of the one and into
    the other in one commit, so each row it moved is in one of the two snapshots read.
    """
    def found_among(picked: pa.Array) -> pa.Array:
        mine = rows.select(["symbol", id_column]).take(picked).rename_columns(["symbol", "record_id"])
        held = quarantine.scan(row_filter=And(EqualTo("table_name", table_name),
                                              _id_ranges(mine, "record_id", ("symbol",))),
                               selected_fields=("symbol", "record_id")).to_arrow()
        return pc.is_in(_symbol_ids(mine), value_set=_symbol_ids(held))
    return _suspects_found(rows, numbers, ceilings, found_among)
