"""The rows a run wrote into a table: the data files its commits added (snapshots that carry its run id), read even
if a later commit has replaced them, so that a check sees what the run wrote, whatever ran after it."""

import pyarrow as pa
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, ManifestEntryStatus
from pyiceberg.table import FileScanTask, Table


def run_data_files(table: Table, run_property: str, run_id: str) -> list[DataFile]:
    """Data files added by the snapshots whose summary says `run_property` = run_id."""
    files = []
    for snapshot in table.snapshots():
        if not snapshot.summary or snapshot.summary.get(run_property) != run_id:
            continue
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id == snapshot.snapshot_id:
                files += [entry.data_file for entry in manifest.fetch_manifest_entry(table.io)
                          if entry.status == ManifestEntryStatus.ADDED and entry.snapshot_id == snapshot.snapshot_id]
    return files


def rows_written_by_run(table: Table, run_property: str, run_id: str, columns: tuple[str, ...] = ()) -> pa.Table:
    schema = table.schema().select(*columns) if columns else table.schema()
    tasks = [FileScanTask(data_file) for data_file in run_data_files(table, run_property, run_id)]
    return ArrowScan(table.metadata, table.io, schema, AlwaysTrue()).to_table(tasks)
