"""Validate what one run wrote: a reference-data load, a drained micro-batch (ASX loads: lib/asx/validation.py)."""

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, EqualTo

from k2_pipelines.lib.iceberg.run_rows import rows_written_by_run
from k2_pipelines.lib.iceberg.stats import newest_event_time
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID, PARTITIONS
from k2_pipelines.lib.iceberg.summary import RUN_ID as LOAD_RUN_ID
from k2_pipelines.lib.iceberg.tables import DEAD_LETTERS, QUOTES, REFERENCE_DATA, SEQUENCE_GAPS, TRADES
from k2_pipelines.lib.quality.checks import (
    market_checks,
    reference_checks,
    required_fields,
    stream_checks,
)
from k2_pipelines.lib.quality.frames import market_rows, stream_frames
from k2_pipelines.lib.quality.report import SetAside, Validation
from k2_pipelines.lib.quality.rules import listings
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.quality.validate import SAMPLE_SIZE, failing_rows, run_checks

MARKET_TABLES = {"trades": (TRADES, "trade_id"), "quotes": (QUOTES, "quote_id")}


def market_loads(catalog: Catalog, kind: str) -> Iterator[tuple[str, date, date]]:
    """(run id, first, last trading date) of each market load whose snapshot the table still has, newest first."""
    for snapshot in reversed(catalog.load_table(MARKET_TABLES[kind][0].identifier).snapshots()):
        summary: Mapping[str, str] = snapshot.summary or {}
        # a Summary answers None for a key it lacks (`in` is always true): drains', quarantines' and compactions'
        run_id, partitions = summary.get(LOAD_RUN_ID), summary.get(PARTITIONS) or ""
        if run_id and ".." in partitions:
            first, last = partitions.split("..")
            yield run_id, date.fromisoformat(first), date.fromisoformat(last)


def market_load(catalog: Catalog, kind: str, run_id: str | None = None) -> tuple[str, date, date] | None:
    """(run id, first, last trading date) of that run's market load, or of the newest load when run_id is None."""
    return next((load for load in market_loads(catalog, kind) if run_id is None or load[0] == run_id), None)


def reference_load(catalog: Catalog, run_id: str | None = None) -> str | None:
    """That run's id if it loaded reference data, or the newest such run's when run_id is None."""
    for snapshot in reversed(catalog.load_table(REFERENCE_DATA.identifier).snapshots()):
        loaded = snapshot.summary.get(LOAD_RUN_ID) if snapshot.summary else None
        if loaded and (run_id is None or loaded == run_id):
            return loaded
    return None


def validate_reference_load(catalog: Catalog, asset: str, run_id: str, now: datetime) -> Validation:
    table = catalog.load_table(REFERENCE_DATA.identifier)
    rows = rows_written_by_run(table, LOAD_RUN_ID, run_id)
    frame = rows.select([*required_fields(table.schema()), "listing_date", "delisting_date"])
    outcomes = run_checks({"rows": frame.to_pandas()}, reference_checks(table.schema()),
                          {"rows": ["exchange", "symbol"]})
    return Validation(asset, run_id, now, rows.num_rows, outcomes)


def validate_drain(catalog: Catalog, asset: str, kind: str, topic: str, exchange: str, run_id: str,
                   messages: int | None, newest_message: datetime | None, thresholds: Thresholds,
                   now: datetime) -> Validation:
    """A drained micro-batch: its rows, its sequence gaps and dead letters, and how fresh the table is. `messages`
    is how many the batch read (rows and dead letters when unknown: the duplicates it dropped are not kept)."""
    definition, id_column = MARKET_TABLES[kind]
    main = catalog.load_table(definition.identifier)
    required = required_fields(main.schema())
    rows = rows_written_by_run(main, DRAIN_RUN_ID, run_id, required)
    gaps = catalog.load_table(SEQUENCE_GAPS.identifier).scan(
        row_filter=And(EqualTo("detected_in_run", run_id), EqualTo("table_name", definition.name)),
        selected_fields=("symbol", "kind", "missing")).to_arrow()
    gaps = gaps.filter(pc.starts_with(gaps.column("kind"), "gap"))
    letters = catalog.load_table(DEAD_LETTERS.identifier).scan(
        row_filter=And(EqualTo("run_id", run_id), EqualTo("topic", topic)),
        selected_fields=("partition", "offset", "error_class", "error_message")).to_arrow()
    dead_letters = letters.num_rows
    notes = [] if newest_message else [f"{topic}: no message timestamp could be read, so the feed counts as down"]
    if messages is None:
        messages = rows.num_rows + dead_letters
        notes.append("the batch's message count is not recorded: the dead-letter rate counts rows and dead letters")
    frames = {"rows": market_rows(rows, kind, listings(catalog), required)}
    frames |= stream_frames(rows, gaps, messages, dead_letters, newest_event_time(main, exchange), newest_message,
                            now, thresholds.freshness_minutes)
    checks = market_checks(kind, definition.schema(), id_column, thresholds, now) \
        + stream_checks(thresholds, gaps_tracked=kind == "trades")
    outcomes = run_checks(frames, checks, {"rows": [id_column], "symbols": ["symbol"]})
    return Validation(asset, run_id, now, rows.num_rows, outcomes, notes=notes,
                      set_aside=set_aside_by(letters.rename_columns(["partition", "offset", "error_class", "detail"]),
                                             "error_class"))


def set_aside_by(rows: pa.Table, reason_column: str) -> list[SetAside]:
    """Rows a run set aside (dead letters, rejects), counted by reason, most first, with the first few of each."""
    reasons = rows.column(reason_column).to_pylist()
    found = []
    for reason, count in Counter(reasons).most_common():
        mine = rows.filter(pc.equal(rows.column(reason_column), reason)).drop_columns([reason_column])
        found.append(SetAside(reason, count, mine.slice(0, SAMPLE_SIZE).to_pylist()))
    return found


def failing_drained_rows(catalog: Catalog, kind: str, check_names: list[str], thresholds: Thresholds,
                         now: datetime) -> Callable[[pa.Table], pa.Array]:
    """For a quarantine: given a batch's rows, the first of the named checks (row checks of trades or quotes) each
    row fails, null where it fails none; Great Expectations names the rows, as in the check itself."""
    definition, id_column = MARKET_TABLES[kind]
    checks = [c for c in market_checks(kind, definition.schema(), id_column, thresholds, now) if c.name in check_names]
    unknown = set(check_names) - {c.name for c in checks}
    if unknown:
        raise ValueError(f"no row check of {kind} is named {', '.join(sorted(unknown))}")

    def pick(rows: pa.Table) -> pa.Array:
        frame = market_rows(rows, kind, listings(catalog), required_fields(definition.schema()))
        reasons = np.full(rows.num_rows, None, dtype=object)
        failing = failing_rows({"rows": frame}, checks)
        for check in reversed(checks):  # the first check in catalogue order names a row
            reasons[failing[check.name]] = check.name
        return pa.array(reasons, pa.string())

    return pick
