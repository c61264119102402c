"""Compact a table's small data files into files near a target size, sorted by the table's sort order.

PyIceberg has no rewrite_data_files; this is one on its snapshot API. Per partition, the files under 75% of the
target are bin-packed; each bin of two or more is read, sorted, written as one new file and checked (same row
count, same content checksum) before anything is committed. Every bin then goes into one snapshot that deletes the
old files and adds the new, committed as a compare-and-set. Drains append meanwhile: when one wins the race the
commit is planned again with the files already written. A bin whose input files another writer removed (an ASX
reload replaced them) is dropped and its new files deleted: no row is lost or duplicated.
"""

import logging
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table, TableProperties, Transaction
from pyiceberg.table.sorting import NullOrder, SortDirection
from pyiceberg.typedef import Record
from pyiceberg.utils.bin_packing import PackingIterator

from k2_pipelines.lib.iceberg.commit import commit, new_transaction
from k2_pipelines.lib.iceberg.data_files import write_data_files
from k2_pipelines.lib.iceberg.summary import UPKEEP_OPERATION

log = logging.getLogger(__name__)
TARGET_FILE_BYTES = 128 * 2**20  # the default size compaction packs files to
SMALL_FILE_RATIO = 0.75  # files under this share of the target are rewritten (Iceberg's min-file-size-bytes default)
PACKING_LOOKBACK = 16  # open bins the packer tries before closing one (a first-fit over the last few)


class ContentMismatch(RuntimeError):
    """The rows written differ from the rows read; nothing was committed and the new files are deleted."""


@dataclass
class CompactionResult:
    table: str
    dry_run: bool
    files_before: int  # the whole table's live data files
    bytes_before: int
    files_after: int  # == before on a dry run
    bytes_after: int
    files_planned: int  # the plan's estimate of files_after (without other writers' commits)
    partitions_compacted: int
    files_rewritten: int  # small files replaced
    files_written: int  # new files (dry run: the planned bins)
    rows: int  # rows in the rewritten files
    checksum_before: str  # order-independent content checksum of those rows ("" on a dry run)
    checksum_after: str
    snapshot_id: int | None  # the compaction's snapshot (None: dry run or nothing to do)
    commit_attempts: int
    seconds: float


@dataclass(frozen=True)
class Bin:
    partition: Record
    inputs: list[FileScanTask]


@dataclass(frozen=True)
class Rewrite:
    bin: Bin
    outputs: list[DataFile]
    rows: int
    checksum_read: int
    checksum_written: int


def _file_bytes(task: FileScanTask) -> int:
    return task.file.file_size_in_bytes


def is_small(data_file: DataFile, target_file_bytes: int = TARGET_FILE_BYTES) -> bool:
    """Whether compaction would rewrite the file."""
    return data_file.file_size_in_bytes < SMALL_FILE_RATIO * target_file_bytes


def most_small_files_in_a_partition(data_files: Iterable[DataFile], target_file_bytes: int = TARGET_FILE_BYTES) -> int:
    """The largest count of small files in one partition: what a query of that partition opens, file by file."""
    counts = Counter((f.spec_id, f.partition) for f in data_files if is_small(f, target_file_bytes))
    return max(counts.values(), default=0)


def plan_bins(tasks: list[FileScanTask], target_file_bytes: int) -> list[Bin]:
    """Per partition, the small files bin-packed by size on disk; bins of one file would gain nothing."""
    small = defaultdict(list)
    for task in tasks:
        if is_small(task.file, target_file_bytes):
            small[(task.file.spec_id, task.file.partition)].append(task)
    return [
        Bin(partition, packed)
        for (_, partition), candidates in small.items()
        for packed in PackingIterator(candidates, target_file_bytes, PACKING_LOOKBACK, _file_bytes)
        if len(packed) > 1
    ]


def content_checksum(rows: pa.Table) -> int:
    """Sum of every row's hash, wrapping at 2**64.

    polars' row hash covers every column, nested ones included, with fixed seeds; a sum does not depend on the
    order of the rows yet counts each one, so a row lost, duplicated or changed changes it (bar a 2**-64 collision).
    """
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)  # a table makes a frame (only an array makes a Series)
    return int(frame.hash_rows().to_numpy().sum(dtype=np.uint64))


def sorted_by_sort_order(table: Table, rows: pa.Table) -> pa.Table:
    """`rows` in the table's sort order (each field's transform, direction and null order)."""
    order, schema = table.sort_order(), table.schema()
    if order.is_unsorted:
        return rows
    keys = pa.table({
        str(i): field.transform.pyarrow_transform(schema.find_field(field.source_id).field_type)(
            rows.column(schema.find_column_name(field.source_id)))
        for i, field in enumerate(order.fields)
    })
    sort_keys = [(str(i), "ascending" if field.direction == SortDirection.ASC else "descending",
                  "at_start" if field.null_order == NullOrder.NULLS_FIRST else "at_end")
                 for i, field in enumerate(order.fields)]
    return rows.take(pc.sort_indices(keys, sort_keys=sort_keys))


def _read(table: Table, tasks: list[FileScanTask]) -> pa.Table:
    return ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)


def _delete(io: FileIO, files: list[DataFile]) -> None:
    for data_file in files:
        io.delete(data_file.file_path)


def _rewrite(table: Table, bin_: Bin) -> Rewrite:
    """Write the bin's rows, sorted, as one file; read it back and check it holds exactly the rows read."""
    rows = _read(table, bin_.inputs)
    # the writer measures its target in Arrow bytes (several times the Parquet size): twice the bin's keeps it whole
    properties = table.properties | {TableProperties.WRITE_TARGET_FILE_SIZE_BYTES: str(2 * rows.nbytes + 1)}
    metadata = table.metadata.model_copy(update={"properties": properties})
    outputs = write_data_files(metadata, table.io, sorted_by_sort_order(table, rows), uuid.uuid4())
    for data_file in outputs:  # write_file passes the spec id to DataFile.from_args, which drops it; reads need it
        data_file.spec_id = metadata.default_spec_id
    written = _read(table, [FileScanTask(data_file) for data_file in outputs])
    checksum_read, checksum_written = content_checksum(rows), content_checksum(written)
    if written.num_rows != rows.num_rows or checksum_written != checksum_read:
        _delete(table.io, outputs)
        raise ContentMismatch(
            f"{'.'.join(table.name())}: rewriting {len(bin_.inputs)} files of partition {bin_.partition} read "
            f"{rows.num_rows} rows but wrote {written.num_rows} or other content; nothing committed")
    return Rewrite(bin_, outputs, rows.num_rows, checksum_read, checksum_written)


def live_files(table: Table) -> list[FileScanTask]:
    return list(table.scan().plan_files())


def files_and_bytes(tasks: list[FileScanTask]) -> tuple[int, int]:
    return len(tasks), sum(map(_file_bytes, tasks))


@dataclass(frozen=True)
class _Committed:
    rewrites: list[Rewrite]
    table: Table  # as committed, or as last loaded if no rewrite was left
    snapshot_id: int | None
    attempts: int


def _commit(catalog: Catalog, identifier: str, rewrites: list[Rewrite]) -> _Committed:
    """Commit the rewrites whose inputs are all still live, in one snapshot; a lost race plans the commit again."""
    table: Table  # as the last attempt loaded it
    snapshot_id: int | None = None  # the one the last attempt planned
    attempts = 0

    def plan_commit(attempt: int) -> list[Transaction] | None:
        nonlocal table, rewrites, snapshot_id, attempts
        attempts, table = attempt, catalog.load_table(identifier)
        live = {task.file.file_path for task in live_files(table)}
        intact = {id(r): all(task.file.file_path in live for task in r.bin.inputs) for r in rewrites}
        for dropped in (r for r in rewrites if not intact[id(r)]):
            log.warning("%s: the input files of a bin of partition %s were replaced meanwhile; bin dropped",
                        identifier, dropped.bin.partition)
            _delete(table.io, dropped.outputs)
        rewrites = [r for r in rewrites if intact[id(r)]]
        if not rewrites:
            return None
        transaction = new_transaction(table)
        with transaction.update_snapshot(snapshot_properties={UPKEEP_OPERATION: "compact"}).overwrite() as overwrite:
            for rewrite in rewrites:
                for task in rewrite.bin.inputs:
                    overwrite.delete_data_file(task.file)
                for data_file in rewrite.outputs:
                    overwrite.append_data_file(data_file)
        snapshot_id = overwrite.snapshot_id
        return [transaction]

    try:
        committed = commit(catalog, plan_commit, "planning the commit again")
    except CommitFailedException:  # the last attempt lost too, known not committed: the new files would only be orphans
        _delete(table.io, [f for r in rewrites for f in r.outputs])
        raise
    if not committed:
        return _Committed([], table, None, attempts)
    return _Committed(rewrites, committed.tables[identifier], snapshot_id, committed.attempts)


def checksum_hex(checksums: list[int]) -> str:
    return f"{sum(checksums) % 2**64:016x}"


def compact_table(catalog: Catalog, identifier: str, target_file_bytes: int = TARGET_FILE_BYTES,
                  dry_run: bool = False) -> CompactionResult:
    """Rewrite the table's small files into files near `target_file_bytes` (see the module docstring)."""
    if target_file_bytes <= 0:
        raise ValueError(f"target_file_bytes must be positive, not {target_file_bytes}")
    started = time.perf_counter()
    table = catalog.load_table(identifier)
    tasks = live_files(table)
    bins = plan_bins(tasks, target_file_bytes)
    planned_inputs = sum(len(b.inputs) for b in bins)
    files_before, bytes_before = files_and_bytes(tasks)
    result = CompactionResult(
        table=identifier, dry_run=dry_run, files_before=files_before, bytes_before=bytes_before,
        files_after=files_before, bytes_after=bytes_before, files_planned=files_before - planned_inputs + len(bins),
        partitions_compacted=len({b.partition for b in bins}), files_rewritten=planned_inputs, files_written=len(bins),
        rows=sum(task.file.record_count for b in bins for task in b.inputs), checksum_before="", checksum_after="",
        snapshot_id=None, commit_attempts=0, seconds=0.0)
    if not dry_run and bins:
        rewrites = []
        try:
            for bin_ in bins:
                rewrites.append(_rewrite(table, bin_))
        except BaseException:
            _delete(table.io, [f for r in rewrites for f in r.outputs])
            raise
        outcome = _commit(catalog, identifier, rewrites)
        committed, after = outcome.rewrites, live_files(outcome.table)
        result.files_after, result.bytes_after = files_and_bytes(after)
        result.partitions_compacted = len({r.bin.partition for r in committed})
        result.files_rewritten = sum(len(r.bin.inputs) for r in committed)
        result.files_written = sum(len(r.outputs) for r in committed)
        result.rows = sum(r.rows for r in committed)
        result.checksum_before = checksum_hex([r.checksum_read for r in committed])
        result.checksum_after = checksum_hex([r.checksum_written for r in committed])
        result.snapshot_id, result.commit_attempts = outcome.snapshot_id, outcome.attempts
    result.seconds = time.perf_counter() - started
    log.info("%s: %s", identifier, result)
    return result
