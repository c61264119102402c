"""What a drain has consumed, committed atomically with the rows it describes.

The drained table's snapshot summary holds, per topic, the next offset to read in each partition, the run id and a
checkpoint number: O(partitions) whatever the number of symbols. The per-symbol state (last sequence and its event
time, the highest id number committed: see replays.py) lives in market_data.drain_state, in the same commit: one
row per symbol the commit changed, numbered with the checkpoint. A symbol's state at checkpoint N is its row with the
highest number at or below N. Once a topic's state spans MAX_STATE_FILES files, the next commit rewrites it as one
file of each symbol's latest row, so reading it costs O(symbols), never O(commits).

A drain starts from the newest snapshot holding offsets (walking ancestry, so that snapshots from other writers,
such as compaction, are skipped). Snapshots written by K2 before the state table held the whole state as JSON in the
summary: that state is read from there, and the next commit writes all of it to the state table.
"""

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, EqualTo
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table, Transaction
from pyiceberg.table.snapshots import ancestors_of

from k2_pipelines.lib.drain.replays import Ceilings
from k2_pipelines.lib.drain.sequences import State as Sequences
from k2_pipelines.lib.drain.sequences import first_occurrences
from k2_pipelines.lib.iceberg.catalog import load_table
from k2_pipelines.lib.iceberg.commit import new_transaction
from k2_pipelines.lib.iceberg.snapshot_files import selected_data_files
from k2_pipelines.lib.iceberg.summary import (
    DRAIN_OFFSETS_PREFIX,
    DRAIN_RUN_ID,
    DRAIN_STATE_PREFIX,
    LEGACY_DRAIN_CEILINGS_PREFIX,
    LEGACY_DRAIN_SEQUENCES_PREFIX,
)
from k2_pipelines.lib.iceberg.tables import DRAIN_STATE
from k2_pipelines.lib.iceberg.writes import append_files, write_rows
from k2_pipelines.lib.utils.bounded_cache import BoundedCache

MAX_STATE_FILES = 16
_state_files: BoundedCache[pa.Table] = BoundedCache(4 * MAX_STATE_FILES)  # a few topics' worth


@dataclass(frozen=True)
class SymbolState:
    sequences: Sequences = field(default_factory=dict)
    ceilings: Ceilings = field(default_factory=dict)
    files: int = 0  # state files it was read from
    in_state_table: bool = True  # False: read from a summary of the old form, not yet in market_data.drain_state


@dataclass(frozen=True)
class Checkpoint:
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    number: int = 0  # of the state in market_data.drain_state (0: none there)
    snapshot_id: int | None = None  # the snapshot that holds it
    run_id: str | None = None
    legacy_state: SymbolState | None = None  # the state of a summary of the old form


def stored_checkpoint(table: Table, topic: str) -> Checkpoint:
    """The checkpoint of `topic` in the table's newest snapshot holding one; else, once another engine's expiry took
    every such snapshot (Spark's expire_snapshots after its rewrite or insert), the copy each commit keeps in the
    table's properties (with no snapshot id); else an empty one: never drained, or the position truly lost."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        if snapshot.summary is not None and snapshot.summary.get(DRAIN_OFFSETS_PREFIX + topic) is not None:
            return _checkpoint_in(snapshot.summary, topic, snapshot.snapshot_id)
    if DRAIN_OFFSETS_PREFIX + topic in table.properties:
        return _checkpoint_in(table.properties, topic, None)
    return Checkpoint()


def checkpointed_topics(properties: Mapping[str, str]) -> list[str]:
    """The topics whose checkpoint a snapshot summary's (or the table's) properties hold, sorted."""
    return sorted(key.removeprefix(DRAIN_OFFSETS_PREFIX) for key in properties if key.startswith(DRAIN_OFFSETS_PREFIX))


def newest_drained_topic(table: Table) -> str | None:
    """The topic of the table's newest snapshot holding a checkpoint, else of the copy in its properties, as
    stored_checkpoint reads them (None: never drained)."""
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        topics = checkpointed_topics(snapshot.summary.additional_properties if snapshot.summary else {})
        if topics:  # a drain's snapshot names one topic
            return topics[0]
    return next(iter(checkpointed_topics(table.properties)), None)


def _checkpoint_in(summary: Mapping[str, str], topic: str, snapshot_id: int | None) -> Checkpoint:
    legacy, sequences = None, summary.get(LEGACY_DRAIN_SEQUENCES_PREFIX + topic)
    if sequences is not None:
        ceilings = json.loads(summary.get(LEGACY_DRAIN_CEILINGS_PREFIX + topic) or "{}")
        legacy = SymbolState({symbol: tuple(state) for symbol, state in json.loads(sequences).items()}, ceilings,
                             in_state_table=False)
    offsets = json.loads(summary.get(DRAIN_OFFSETS_PREFIX + topic) or "{}")
    return Checkpoint({int(partition): offset for partition, offset in offsets.items()},
                      int(summary.get(DRAIN_STATE_PREFIX + topic) or 0), snapshot_id, summary.get(DRAIN_RUN_ID),
                      legacy)


def keep_position(transaction: Transaction, topic: str, after: "NextCheckpoint") -> None:
    """Copy the checkpoint's offsets and state number into the table's properties, in the same commit as its
    snapshot: another engine's expiry or rewrite drops snapshots, never properties (one value per topic, replaced by
    each commit, so the metadata does not grow with commits)."""
    transaction.set_properties({key: after.properties[key] for key in (DRAIN_OFFSETS_PREFIX + topic,
                                                                         DRAIN_STATE_PREFIX + topic)})


def _file_rows(scan: ArrowScan, data_file: DataFile) -> pa.Table:
    return scan.to_table([FileScanTask(data_file)])


def _latest_rows(state_table: Table, topic: str, number: int) -> tuple[pa.Table, int]:
    """Each symbol's row with the highest checkpoint number at or below `number`, and how many files held them.
    A state file never changes, so a process reads each one once (a drain loop reads only the files added since)."""
    snapshot = state_table.current_snapshot()
    files: list[DataFile] | None = (
        selected_data_files(state_table, snapshot.snapshot_id, EqualTo("topic", topic)) if snapshot else [])
    scan = ArrowScan(state_table.metadata, state_table.io, state_table.schema(), AlwaysTrue())
    if files is None:  # delete files (another engine's): PyIceberg's plan pairs them with the data files they apply to
        tasks = list(state_table.scan(row_filter=EqualTo("topic", topic)).plan_files())
        rows = scan.to_table(tasks)
        file_count = len(tasks)
    else:
        parts = [_state_files.get_or_make(f.file_path, partial(_file_rows, scan, f)) for f in files]
        rows = pa.concat_tables(parts) if parts else state_table.schema().as_arrow().empty_table()
        file_count = len(files)
    rows = rows.filter(pc.and_(pc.equal(rows.column("topic"), topic), pc.less_equal(rows.column("checkpoint"), number)))
    rows = rows.sort_by([("checkpoint", "descending")])
    return rows.filter(pa.array(first_occurrences(rows.column("symbol").combine_chunks()))), file_count


def symbol_state(catalog: Catalog, topic: str, checkpoint: Checkpoint) -> SymbolState:
    """The per-symbol state at `checkpoint` (read from the state table: load it after the drained table)."""
    if checkpoint.legacy_state is not None:
        return checkpoint.legacy_state
    if not checkpoint.number:
        return SymbolState()
    rows, files = _latest_rows(load_table(catalog, DRAIN_STATE.identifier), topic, checkpoint.number)
    symbols, sequence = rows.column("symbol").to_pylist(), rows.column("sequence").to_pylist()
    times = rows.column("sequence_time").cast(pa.int64()).to_pylist()
    sequences = {s: (n, t) for s, n, t in zip(symbols, sequence, times) if n is not None}
    ceilings = {s: c for s, c in zip(symbols, rows.column("id_ceiling").to_pylist()) if c is not None}
    return SymbolState(sequences, ceilings, files)


@dataclass(frozen=True)
class NextCheckpoint:
    """What a commit stores: the drained table's summary properties and the state rows to commit with it."""
    properties: dict[str, str]
    rows: pa.Table | None  # the state rows to append (None: the state did not change)
    rewrite: bool  # the rows are the topic's whole state: they replace its files


def checkpoint_properties(topic: str, offsets: dict[int, int], number: int, run_id: str) -> dict[str, str]:
    """The drained table's snapshot summary properties of a checkpoint."""
    return {DRAIN_OFFSETS_PREFIX + topic: json.dumps({str(p): o for p, o in sorted(offsets.items())}),
            DRAIN_STATE_PREFIX + topic: str(number), DRAIN_RUN_ID: run_id}


def next_checkpoint(topic: str, offsets: dict[int, int], run_id: str, checkpoint: Checkpoint, before: SymbolState,
                    sequences: Sequences, ceilings: Ceilings) -> NextCheckpoint:
    """The checkpoint after a commit that leaves the symbols' state at (sequences, ceilings)."""
    symbols = sorted(sequences.keys() | ceilings.keys())
    changed = [s for s in symbols if sequences.get(s) != before.sequences.get(s)
               or ceilings.get(s) != before.ceilings.get(s)]
    # the old form moves to the state table whole; else a change rewrites a topic's state spanning too many files
    rewrite = not before.in_state_table or (bool(changed) and before.files >= MAX_STATE_FILES)
    if not rewrite:
        symbols = changed
    number = checkpoint.number + 1 if symbols else checkpoint.number
    properties = checkpoint_properties(topic, offsets, number, run_id)
    if not symbols:
        return NextCheckpoint(properties, None, False)
    state = [sequences.get(s) for s in symbols]
    rows = pa.table({
        "topic": pa.array([topic] * len(symbols), pa.string()),
        "symbol": pa.array(symbols, pa.string()),
        "checkpoint": pa.array([number] * len(symbols), pa.int64()),
        "sequence": pa.array([s[0] if s else None for s in state], pa.int64()),
        "sequence_time": pa.array([s[1] if s else None for s in state], pa.timestamp("us", tz="UTC")),
        "id_ceiling": pa.array([ceilings.get(s) for s in symbols], pa.int64()),
        "run_id": pa.array([run_id] * len(symbols), pa.string()),
    })
    return NextCheckpoint(properties, rows, rewrite)


def state_files(catalog: Catalog, after: NextCheckpoint) -> list[DataFile]:
    """The state rows of `after` written as data files of the state table, not yet committed."""
    return write_rows(catalog, DRAIN_STATE.identifier, after.rows) if after.rows is not None else []


def state_transaction(catalog: Catalog, topic: str, after: NextCheckpoint, data_files: list[DataFile],
                      run_id: str) -> Transaction | None:
    """The state table's part of a commit (None if the state did not change): load it after the drained table."""
    if not data_files:
        return None
    transaction = new_transaction(load_table(catalog, DRAIN_STATE.identifier))
    if after.rewrite:
        with warnings.catch_warnings():  # state of the old form replaces nothing in the table
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            transaction.delete(EqualTo("topic", topic), snapshot_properties={DRAIN_RUN_ID: run_id})
    append_files(transaction, data_files, {DRAIN_RUN_ID: run_id})
    return transaction
