"""Compaction of a table past one machine, handed to Spark: Iceberg's rewrite_data_files with K2's target size and
the table's sort order, then K2's own proof that rows are unchanged (the rows of the files Spark's rewrite removed
against those of the files it added: same count, same content checksum), as `compact_table` proves its own."""

import time

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, ManifestEntryStatus
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Operation, Snapshot

from k2_pipelines.lib.spark.session import spark_session
from k2_pipelines.lib.upkeep.compaction import (
    SMALL_FILE_RATIO,
    TARGET_FILE_BYTES,
    CompactionResult,
    ContentMismatch,
    checksum_hex,
    compact_table,
    content_checksum,
    files_and_bytes,
    live_files,
)


def _rewrite_sql(table: Table, identifier: str, target_file_bytes: int) -> str:
    # files under K2's small-file share of the target, in groups of two or more, as K2's compaction picks them
    options = {"target-file-size-bytes": target_file_bytes,
               "min-file-size-bytes": int(target_file_bytes * SMALL_FILE_RATIO), "min-input-files": 2}
    # the table's own sort order, as K2's compaction sorts; binpack where it has none
    strategy = "binpack" if table.sort_order().is_unsorted else "sort"
    return (f"CALL k2.system.rewrite_data_files(table => '{identifier}', strategy => '{strategy}', options => map("
            + ", ".join(f"'{key}', '{value}'" for key, value in options.items()) + "))")


def _rewrites_since(table: Table, before: int | None) -> list[Snapshot]:
    """The replace snapshots committed after `before` (Spark's rewrite; drains may have appended around it)."""
    found = []
    snapshot = table.current_snapshot()
    while snapshot is not None and snapshot.snapshot_id != before:
        if snapshot.summary is not None and snapshot.summary.operation == Operation.REPLACE:
            found.append(snapshot)
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return found


def _changed_files(table: Table, snapshot: Snapshot) -> tuple[list[DataFile], list[DataFile]]:
    """(removed, added) data files of one snapshot, from the manifests it wrote."""
    removed, added = [], []
    for manifest in snapshot.manifests(table.io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
            if entry.snapshot_id == snapshot.snapshot_id:
                if entry.status == ManifestEntryStatus.DELETED:
                    removed.append(entry.data_file)
                elif entry.status == ManifestEntryStatus.ADDED:
                    added.append(entry.data_file)
    return removed, added


def _rows_and_checksum(table: Table, files: list[DataFile]) -> tuple[int, str]:
    """Rows and content checksum, as compaction reports them, one file in memory at a time."""
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    rows, checksums = 0, []
    for data_file in files:
        read = scan.to_table([FileScanTask(data_file)])
        rows += read.num_rows
        checksums.append(content_checksum(read))
    return rows, checksum_hex(checksums)


def compact_table_on_spark(catalog: Catalog, identifier: str, target_file_bytes: int = TARGET_FILE_BYTES,
                           dry_run: bool = False, master: str = "local[*]") -> CompactionResult:
    """`compact_table`, with Spark doing the rewrite (a dry run is K2's own plan: Spark has none)."""
    if dry_run:
        return compact_table(catalog, identifier, target_file_bytes, dry_run=True)
    started = time.perf_counter()
    before = catalog.load_table(identifier)
    files_before, bytes_before = files_and_bytes(live_files(before))
    current = before.current_snapshot()
    before_id = current.snapshot_id if current else None
    with spark_session(catalog.properties, master) as session:
        session.sql(_rewrite_sql(before, identifier, target_file_bytes)).collect()
    after = catalog.load_table(identifier)
    rewrites = _rewrites_since(after, before_id)
    changes = [_changed_files(after, snapshot) for snapshot in rewrites]
    removed, added = [f for gone, _ in changes for f in gone], [f for _, new in changes for f in new]
    (rows_before, checksum_before), (rows_after, checksum_after) = (
        _rows_and_checksum(after, removed), _rows_and_checksum(after, added))
    if (rows_before, checksum_before) != (rows_after, checksum_after):
        raise ContentMismatch(
            f"{identifier}: Spark's rewrite (snapshots {[s.snapshot_id for s in rewrites]}) removed {rows_before} "
            f"rows and added {rows_after}, or other content; the table before it is snapshot {before_id} (rolling "
            "back to it also undoes the drains committed since)")
    files_after, bytes_after = files_and_bytes(live_files(after))
    return CompactionResult(
        table=identifier, dry_run=False, files_before=files_before, bytes_before=bytes_before,
        files_after=files_after, bytes_after=bytes_after, files_planned=files_after,
        partitions_compacted=len({f.partition for f in removed}), files_rewritten=len(removed),
        files_written=len(added), rows=rows_before, checksum_before=checksum_before,
        checksum_after=checksum_after, snapshot_id=rewrites[0].snapshot_id if rewrites else None,
        commit_attempts=len(rewrites),  # Spark's commits (it retries its own)
        seconds=time.perf_counter() - started)
