"""Row rules: the blocking checks that judge each row on its own, applied as rows are written.

A row rule is a K2 check (lib/quality/checks.py) of severity ERROR on the `rows` frame whose expectations each judge
one row at a time. This module evaluates those very expectation objects on Arrow, so the write path (the drain, a
dead-letter replay, the ASX load) and the Great Expectations check share one definition, thresholds included; the
check stays the independent proof of what landed. `unique_ids` is not a row rule: the drain's dedupe applies it as
rows are written (ids already committed, repeats within a batch), and an ASX id names its file line.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema

from k2_pipelines.lib.iceberg.catalog import load_table
from k2_pipelines.lib.iceberg.tables import REFERENCE_DATA
from k2_pipelines.lib.quality.checks import (
    A_GREATER_THAN_B,
    BETWEEN,
    ERROR,
    IN_SET,
    NOT_NULL,
    PAIR_EQUAL,
    Check,
    Expectation,
    market_checks,
)
from k2_pipelines.lib.quality.frames import checked_columns
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.utils.bounded_cache import BoundedCache

_ONE_ROW_AT_A_TIME = (NOT_NULL, BETWEEN, IN_SET, A_GREATER_THAN_B, PAIR_EQUAL)


def row_rules(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.severity == ERROR and c.frame == "rows"
            and all(e.type in _ONE_ROW_AT_A_TIME for e in c.expectations)]


def _present(values: pa.Array) -> pa.Array:
    """Where a value is there (Great Expectations on pandas counts NaN as missing)."""
    valid = pc.is_valid(values)
    return pc.and_(valid, pc.invert(pc.is_nan(values))) if pa.types.is_floating(values.type) else valid


def _bound(value: object, data_type: pa.DataType) -> pa.Scalar:
    return pa.scalar(value).cast(data_type) if pa.types.is_timestamp(data_type) else pa.scalar(value)


def _broken(expectation: Expectation, columns: dict[str, pa.Array]) -> pa.Array:
    """Where the rows break one expectation, as Great Expectations judges them (with its defaults)."""
    kind, kwargs = expectation.type, expectation.kwargs
    if kind == NOT_NULL:
        return pc.invert(_present(columns[kwargs["column"]]))
    if kind == BETWEEN:
        values = columns[kwargs["column"]]
        inside = pc.is_valid(values)
        for limit, strict, compare in ((kwargs.get("min_value"), kwargs.get("strict_min", False),
                                        (pc.greater, pc.greater_equal)),
                                       (kwargs.get("max_value"), kwargs.get("strict_max", False),
                                        (pc.less, pc.less_equal))):
            if limit is not None:
                inside = pc.and_(inside, compare[0 if strict else 1](values, _bound(limit, values.type)))
        return pc.and_(_present(values), pc.invert(inside.fill_null(False)))
    if kind == IN_SET:
        values = columns[kwargs["column"]]
        return pc.and_(_present(values), pc.invert(pc.is_in(values, pa.array(list(kwargs["value_set"])))))
    if kind not in (A_GREATER_THAN_B, PAIR_EQUAL):
        raise TypeError(f"{kind} does not judge one row at a time")
    a, b = columns[kwargs["column_A"]], columns[kwargs["column_B"]]
    if kind == A_GREATER_THAN_B:
        holds = (pc.greater_equal if kwargs.get("or_equal") else pc.greater)(a, b)
    else:
        holds = pc.equal(a, b)
    ignore_row_if = kwargs.get("ignore_row_if", "both_values_are_missing")
    if isinstance(ignore_row_if, dict):
        raise TypeError(f"ignore_row_if is a suite parameter ({ignore_row_if}): a row rule names its value")
    ignored = {"both_values_are_missing": pc.and_, "either_value_is_missing": pc.or_, "neither": None}[ignore_row_if]
    judged = pc.invert(ignored(pc.invert(_present(a)), pc.invert(_present(b)))) if ignored else pa.scalar(True)
    return pc.and_(judged, pc.invert(holds.fill_null(False)))


@dataclass(frozen=True)
class Broken:
    """The rows that break a rule: their positions among the rows judged, the first rule each breaks, and the
    values that break it."""
    positions: np.ndarray
    rules: list[str]
    details: list[str]


def _details(check: Check, columns: dict[str, pa.Array], positions: np.ndarray) -> list[str]:
    """Why each of the rows at `positions` breaks `check`: its description and the values it read."""
    read = dict.fromkeys(name for e in check.expectations for name in e.columns())
    values = {name: columns[name].take(pa.array(positions, pa.int64())).to_pylist() for name in read}
    return [f"{check.description}: " + ", ".join(f"{name}={_text(values[name][i])}" for name in read)
            for i in range(len(positions))]


def _text(value: object) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def broken_rows(rules: list[Check], rows: pa.Table, listings: pa.Table, local_timezone: str | None = None
                ) -> Broken:
    """The rows of `rows` (trades or quotes in their table's schema) that break one of `rules`."""
    if not rules or not rows.num_rows:
        return Broken(np.zeros(0, np.int64), [], [])
    names = dict.fromkeys(name for check in rules for e in check.expectations for name in e.columns())
    valued = {name for check in rules for e in check.expectations for name in e.columns() if e.type != NOT_NULL}
    # a column only checked for nulls is judged as stored: its nulls are those of the value the check sees
    as_stored = [name for name in names if name not in valued and name in rows.column_names]
    columns = checked_columns(rows, listings, tuple(n for n in names if n not in as_stored), local_timezone)
    columns |= {name: rows.column(name).combine_chunks() for name in as_stored}
    first_rule = np.full(rows.num_rows, -1)
    for index, check in reversed(list(enumerate(rules))):  # the first rule in catalogue order names a row
        broken = np.zeros(rows.num_rows, dtype=bool)
        for expectation in check.expectations:
            broken |= _broken(expectation, columns).to_numpy(zero_copy_only=False)
        first_rule[broken] = index
    positions = np.flatnonzero(first_rule >= 0)
    rules_of, details = [""] * len(positions), [""] * len(positions)
    for index, check in enumerate(rules):
        mine = np.flatnonzero(first_rule[positions] == index)
        for at, detail in zip(mine.tolist(), _details(check, columns, positions[mine])):
            rules_of[at], details[at] = check.name, detail
    return Broken(positions, rules_of, details)


_LISTINGS: BoundedCache[pa.Table] = BoundedCache(4)


def listings(catalog: Catalog) -> pa.Table:
    """(exchange, symbol, listing_date) of reference_data, read once per snapshot of it."""
    table = load_table(catalog, REFERENCE_DATA.identifier)
    snapshot = table.current_snapshot()
    return _LISTINGS.get_or_make((table.metadata.table_uuid, snapshot.snapshot_id if snapshot else None),
                                 lambda: table.scan(selected_fields=("exchange", "symbol", "listing_date")).to_arrow())


def write_rules(kind: str, schema: Schema, id_column: str, thresholds: Thresholds) -> list[Check]:
    """The row rules of trades or quotes as they are written now."""
    return row_rules(market_checks(kind, schema, id_column, thresholds, datetime.now(UTC)))
