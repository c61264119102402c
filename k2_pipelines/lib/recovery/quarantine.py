"""Take the rows of a drained micro-batch that failed a blocking check out of their table into
market_data.quarantine: only the failing rows (the check run again over the batch names them, by id), or on an
operator's word the whole batch.

A rollback to the snapshot before the batch would also roll back the drain's stored offsets (the batch would be
drained again, and fail again) and drop every later batch. Instead one atomic commit deletes exactly the batch's
data files from the table, appends their rows to the quarantine table, and carries the current drain checkpoint
forward unchanged: the next drain starts where it would have, and the ceilings still flag a replay of the batch's
ids for a look-up. The snapshots before stay readable (time travel shows the batch).

A whole batch is normally exactly its files. If compaction has since merged them with other batches' rows, those
rows are deleted by id instead (a row filter, which rewrites the merged files), as failing rows always are.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import reduce
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, In, IsNull
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table, Transaction

from k2_pipelines.lib.drain.checkpoint import (
    Checkpoint,
    keep_position,
    next_checkpoint,
    state_files,
    state_transaction,
    stored_checkpoint,
    symbol_state,
)
from k2_pipelines.lib.drain.drain import DrainTarget
from k2_pipelines.lib.drain.replays import any_of, id_numbers, repeats
from k2_pipelines.lib.drain.sequences import record_keys
from k2_pipelines.lib.iceberg.commit import commit, new_transaction
from k2_pipelines.lib.iceberg.run_rows import run_data_files
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID, RELEASE_RUN_ID, SOURCE_RUN_ID
from k2_pipelines.lib.iceberg.tables import QUARANTINE
from k2_pipelines.lib.iceberg.writes import append_files, write_rows

_SOURCE_SNAPSHOT = "_source_snapshot_id"  # columns planned rows carry beside the table's own
_REASON = "_reason"


class UnknownRun(LookupError):
    """No snapshot of the table carries the run id: nothing of that run to quarantine."""


@dataclass
class QuarantineResult:
    table: str
    source_run_id: str
    dry_run: bool
    snapshots: list[int]  # the run's snapshots found
    files_removed: int
    rows_quarantined: int
    snapshot_after: int | None  # the main table's new snapshot (its current one if nothing changed)
    offsets_kept: dict[int, int]  # the stored offsets after (== before)
    commit_attempts: int
    seconds: float
    rows_by_filter: int = 0  # of rows_quarantined: deleted by id because compaction had merged their files
    already_quarantined: int = 0  # rows of the run the quarantine table held before
    note: str = ""


@dataclass(frozen=True)
class _Plan:
    checkpoint: Checkpoint
    live_files: list[DataFile]  # the run's files still in the table: deleted whole
    merged: pa.Table  # rows of the run whose files compaction merged into others: deleted by id
    rows: pa.Table  # every row taken out, with its source snapshot


def _run_snapshots(table: Table, run_id: str) -> list[int]:
    return [s.snapshot_id for s in table.snapshots() if s.summary is not None and s.summary.get(DRAIN_RUN_ID) == run_id]


def _added_by(table: Table, snapshot_ids: list[int]) -> dict[str, int]:
    """file path -> the snapshot (of `snapshot_ids`) that added it."""
    added: dict[str, int] = {}
    for snapshot_id in snapshot_ids:
        entries = table.inspect.entries(snapshot_id)
        mine = pc.and_(pc.equal(entries["status"], 1), pc.equal(entries["snapshot_id"], snapshot_id))
        added |= {entry["file_path"]: snapshot_id for entry in entries.filter(mine)["data_file"].to_pylist()}
    return added


def _read(table: Table, files: list[DataFile], added_by: dict[str, int]) -> pa.Table:
    """The files' rows (whether live or not), each with the snapshot that added its file."""
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    parts: list[tuple[DataFile | None, pa.Table]] = ([(f, scan.to_table([FileScanTask(f)])) for f in files]
                                                     or [(None, scan.to_table([]))])
    return pa.concat_tables([
        rows.append_column(_SOURCE_SNAPSHOT, pa.array([added_by[f.file_path] if f else 0] * rows.num_rows, pa.int64()))
        for f, rows in parts])


Picker = Callable[[pa.Table], pa.Array]  # the run's rows -> why each is taken out (null: it stays)


def _still_in(table: Table, rows: pa.Table, id_column: str) -> pa.Table:
    """Those of `rows` the table holds now (the others were quarantined before, or never there)."""
    if not rows.num_rows:
        return rows
    return rows.filter(pa.array(repeats(table, rows, record_keys(rows, id_column), id_numbers(rows, id_column),
                                        id_column, {})))


def _plan_rows(table: Table, target: DrainTarget, run_files: list[DataFile], added_by: dict[str, int],
               pick: Picker) -> _Plan:
    rows = _read(table, run_files, added_by)
    reasons = pick(rows)
    picked = rows.append_column(_REASON, reasons).filter(pc.is_valid(reasons))
    picked = _still_in(table, picked, target.id_column)
    return _Plan(stored_checkpoint(table, target.topic), [], picked, picked)


def _plan(table: Table, target: DrainTarget, run_files: list[DataFile], added_by: dict[str, int]) -> _Plan:
    live_paths = set(table.inspect.data_files().column("file_path").to_pylist()) if table.current_snapshot() else set()
    live = [f for f in run_files if f.file_path in live_paths]
    gone = _read(table, [f for f in run_files if f.file_path not in live_paths], added_by)
    gone = _still_in(table, gone, target.id_column)  # quarantined before, or merged by compaction (those left)
    return _Plan(stored_checkpoint(table, target.topic), live, gone,
                 pa.concat_tables([_read(table, live, added_by), gone]))


def _id_filter(rows: pa.Table, id_column: str) -> BooleanExpression:
    """Exactly these rows: per exchange and symbol, their ids (ids are unique per symbol, not overall)."""
    groups = rows.group_by(["exchange", "symbol"]).aggregate([(id_column, "list")])
    return any_of([And(And(EqualTo("exchange", g["exchange"]), EqualTo("symbol", g["symbol"])),
                       In(id_column, set(g[f"{id_column}_list"])))
                   for g in groups.to_pylist()])


def _json_value(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _quarantine_rows(rows: pa.Table, target: DrainTarget, source_run_id: str, reason: str, detail: str | None,
                     quarantine_run_id: str) -> pa.Table:
    n, now_us = rows.num_rows, time.time_ns() // 1000
    reasons = rows[_REASON] if _REASON in rows.column_names else pa.array([reason] * n, pa.string())
    whole = rows.drop_columns([c for c in (_SOURCE_SNAPSHOT, _REASON) if c in rows.column_names]).to_pylist(
        maps_as_pydicts="strict")
    return pa.table({
        "table_name": pa.array([target.table.identifier] * n, pa.string()),
        "record_id": rows[target.id_column],
        "symbol": rows["symbol"],
        "event_timestamp": rows["timestamp"],
        "row_json": pa.array([json.dumps(row, default=_json_value) for row in whole], pa.string()),
        "reason": reasons,
        "detail": pa.array([detail] * n, pa.string()),
        "source_run_id": pa.array([source_run_id] * n, pa.string()),
        "source_snapshot_id": rows[_SOURCE_SNAPSHOT],
        "quarantine_run_id": pa.array([quarantine_run_id] * n, pa.string()),
        "quarantined_at": pa.array([now_us] * n, pa.timestamp("us", tz="UTC")),
    })


def _already_quarantined(catalog: Catalog, target: DrainTarget, source_run_id: str) -> int:
    held = catalog.load_table(QUARANTINE.identifier).scan(
        row_filter=And(EqualTo("table_name", target.table.identifier), EqualTo("source_run_id", source_run_id)),
        selected_fields=("source_run_id",))
    return held.to_arrow().num_rows


def quarantine_run(catalog: Catalog, target: DrainTarget, source_run_id: str, reason: str, detail: str | None,
                   quarantine_run_id: str, dry_run: bool = False, pick: Picker | None = None) -> QuarantineResult:
    """Move the rows that run `source_run_id` drained into `target`'s table to market_data.quarantine (see above):
    those `pick` names (with why), or all of them (`reason`) without it."""
    started = time.perf_counter()
    if quarantine_run_id == source_run_id:
        raise ValueError("the quarantine needs a run id of its own, not the id of the run it quarantines")
    identifier = target.table.identifier
    main = catalog.load_table(identifier)
    snapshots = _run_snapshots(main, source_run_id)
    if not snapshots:
        raise UnknownRun(f"no snapshot of {identifier} was committed by run {source_run_id!r}")
    run_files = run_data_files(main, DRAIN_RUN_ID, source_run_id)
    added_by = _added_by(main, snapshots)
    result = QuarantineResult(identifier, source_run_id, dry_run, snapshots, 0, 0, None, {}, 0, 0.0,
                              already_quarantined=_already_quarantined(catalog, target, source_run_id))
    written_for: pa.Table | None = None
    files: list[DataFile] = []

    def plan_commit(attempt: int) -> list[Transaction] | None:
        nonlocal written_for, files
        main, quarantine = catalog.load_table(identifier), catalog.load_table(QUARANTINE.identifier)
        plan = _plan(main, target, run_files, added_by) if pick is None \
            else _plan_rows(main, target, run_files, added_by, pick)
        result.files_removed, result.rows_quarantined = len(plan.live_files), plan.rows.num_rows
        result.rows_by_filter, result.offsets_kept = plan.merged.num_rows, plan.checkpoint.offsets
        current = main.current_snapshot()
        if current is None:  # the run's snapshots were there when the quarantine began
            raise UnknownRun(f"{identifier} has no snapshot now: nothing of run {source_run_id!r} to quarantine")
        result.snapshot_after = current.snapshot_id
        if not plan.rows.num_rows or dry_run:
            return None
        if written_for is None or not plan.rows.equals(written_for):  # a lost race changed what to take out
            files, written_for = write_rows(catalog, QUARANTINE.identifier, _quarantine_rows(
                plan.rows, target, source_run_id, reason, detail, quarantine_run_id)), plan.rows
        cp = plan.checkpoint
        state = symbol_state(catalog, target.topic, cp)
        after = next_checkpoint(target.topic, cp.offsets, quarantine_run_id, cp, state, state.sequences, state.ceilings)
        properties = after.properties | {SOURCE_RUN_ID: source_run_id}
        main_transaction = new_transaction(main)
        if plan.live_files:
            with main_transaction.update_snapshot(snapshot_properties=properties).overwrite() as overwrite:
                for data_file in plan.live_files:
                    overwrite.delete_data_file(data_file)
        if plan.merged.num_rows:
            main_transaction.delete(_id_filter(plan.merged, target.id_column), snapshot_properties=properties)
        keep_position(main_transaction, target.topic, after)
        quarantine_transaction = new_transaction(quarantine)
        append_files(quarantine_transaction, files, {DRAIN_RUN_ID: quarantine_run_id, SOURCE_RUN_ID: source_run_id})
        # only a checkpoint of the old form has state to write: it moves to the state table
        state_changes = state_transaction(catalog, target.topic, after, state_files(catalog, after), quarantine_run_id)
        result.commit_attempts = attempt
        return [main_transaction, quarantine_transaction] + ([state_changes] if state_changes else [])

    committed = commit(catalog, plan_commit, "planning again")
    if committed:
        result.snapshot_after = committed.snapshot_id(identifier)
        result.offsets_kept = stored_checkpoint(committed.tables[identifier], target.topic).offsets
    if not result.rows_quarantined:
        result.note = (f"nothing to do: no rows of run {source_run_id} are left in {identifier}"
                       + (f"; the quarantine table holds {result.already_quarantined}" if result.already_quarantined
                          else ""))
    elif result.rows_by_filter and pick is None:
        result.note = (f"{result.rows_by_filter} rows were merged by compaction into files with other batches' rows: "
                       f"deleted by {target.id_column} with a row filter")
    result.seconds = time.perf_counter() - started
    return result


def quarantined_runs(catalog: Catalog, identifier: str) -> set[str]:
    """The runs whose rows of table `identifier` a quarantine took out."""
    held = catalog.load_table(QUARANTINE.identifier).scan(row_filter=EqualTo("table_name", identifier),
                                                          selected_fields=("source_run_id",)).to_arrow()
    return set(pc.unique(held.column("source_run_id")).to_pylist())


@dataclass
class ReleaseResult:
    table: str
    source_run_id: str
    reason: str | None  # only the rows quarantined for this check; None: every held row of the run
    rows_released: int  # back in the table
    rows_already_there: int  # held, but the table holds them again (a replay after the quarantine): marked only
    snapshot_after: int | None
    commit_attempts: int
    seconds: float


def _held_filter(identifier: str, source_run_id: str | None = None, reason: str | None = None) -> BooleanExpression:
    conditions = [EqualTo("table_name", identifier), IsNull("released_by_run")]
    conditions += [EqualTo("source_run_id", source_run_id)] if source_run_id else []
    conditions += [EqualTo("reason", reason)] if reason else []
    return reduce(And, conditions)


def held(catalog: Catalog, identifier: str | None = None) -> pa.Table:
    """The rows the quarantine holds (not released), of every table or of one."""
    quarantine = catalog.load_table(QUARANTINE.identifier)
    row_filter = _held_filter(identifier) if identifier else IsNull("released_by_run")
    return quarantine.scan(row_filter=row_filter).to_arrow()


def _value(value: Any, data_type: pa.DataType) -> Any:
    """A value of a row's JSON (see _json_value) back as what Arrow takes for the type."""
    if value is None:
        return None
    if pa.types.is_decimal(data_type):
        return Decimal(value)
    if pa.types.is_timestamp(data_type):
        return datetime.fromisoformat(value)
    if pa.types.is_date(data_type):
        return date.fromisoformat(value)
    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return bytes.fromhex(value)
    if pa.types.is_map(data_type):
        return list(value.items())
    return value


def _rows_from_json(texts: list[str], schema: pa.Schema) -> pa.Table:
    records = [json.loads(text) for text in texts]
    return pa.Table.from_pylist([{f.name: _value(r.get(f.name), f.type) for f in schema} for r in records],
                                schema=schema)


def release(catalog: Catalog, target: DrainTarget, source_run_id: str, release_run_id: str,
            reason: str | None = None) -> ReleaseResult:
    """Put the rows a quarantine took out of run `source_run_id`'s batch (those of one check, with `reason`) back
    into their table, and mark them released, in one atomic commit: exactly once (a second release finds nothing
    held, and does nothing)."""
    started = time.perf_counter()
    identifier = target.table.identifier
    result = ReleaseResult(identifier, source_run_id, reason, 0, 0, None, 0, 0.0)

    def plan_commit(attempt: int) -> list[Transaction] | None:
        main, quarantine = catalog.load_table(identifier), catalog.load_table(QUARANTINE.identifier)
        current = main.current_snapshot()
        result.snapshot_after = current.snapshot_id if current else None
        row_filter = _held_filter(identifier, source_run_id, reason)
        rows_held = quarantine.scan(row_filter=row_filter).to_arrow()
        if not rows_held.num_rows:
            return None
        rows = _rows_from_json(rows_held.column("row_json").to_pylist(), main.schema().as_arrow())
        there = repeats(main, rows, record_keys(rows, target.id_column), id_numbers(rows, target.id_column),
                        target.id_column, {})
        back = rows.filter(pa.array(~there))
        result.rows_released, result.rows_already_there = back.num_rows, int(there.sum())
        released = rows_held.set_column(rows_held.schema.get_field_index("released_by_run"), "released_by_run",
                                        pa.array([release_run_id] * rows_held.num_rows, pa.string())) \
            .set_column(rows_held.schema.get_field_index("released_at"), "released_at",
                        pa.array([time.time_ns() // 1000] * rows_held.num_rows, pa.timestamp("us", tz="UTC")))
        properties = {RELEASE_RUN_ID: release_run_id, SOURCE_RUN_ID: source_run_id}
        quarantine_transaction = new_transaction(quarantine)
        quarantine_transaction.delete(row_filter, snapshot_properties=properties)
        append_files(quarantine_transaction, write_rows(catalog, QUARANTINE.identifier, released), properties)
        transactions = [quarantine_transaction]
        if back.num_rows:  # no checkpoint of its own: the drain's stays where it is, and it resumes from it
            main_transaction = new_transaction(main)
            append_files(main_transaction, write_rows(catalog, identifier, back), properties)
            transactions.append(main_transaction)
        result.commit_attempts = attempt
        return transactions

    committed = commit(catalog, plan_commit, "planning the release again")
    if committed and identifier in committed.tables:  # rows went back, not only marked released
        result.snapshot_after = committed.snapshot_id(identifier)
    result.seconds = time.perf_counter() - started
    return result
