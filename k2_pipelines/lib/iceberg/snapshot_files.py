"""The data files of a snapshot that a row filter selects, by PyIceberg's own evaluators (the manifests' partition
summaries, then each file's partition and column statistics) over manifest entries read once per process.

PyIceberg's plan_files reads every manifest of the snapshot again on every query: a table with a manifest per drain
took 330 ms to plan with 210 of them. A manifest never changes once written, so after a drain only its new
manifest is read, and a snapshot's manifest list is read once."""

from collections.abc import Callable

from pyiceberg.expressions import BooleanExpression
from pyiceberg.expressions.visitors import (
    _InclusiveMetricsEvaluator,
    expression_evaluator,
    inclusive_projection,
    manifest_evaluator,
)
from pyiceberg.manifest import DataFile, ManifestContent, ManifestFile
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import ALWAYS_TRUE, Table
from pyiceberg.typedef import StructProtocol

from k2_pipelines.lib.utils.bounded_cache import BoundedCache

# data files listed by the manifests cached: appends merge manifests (lib/iceberg/tables.py), and each merged one lists
# again the live files of those it replaces, so the cache is bounded by what they list, not by how many
MAX_CACHED_DATA_FILES = 200_000
MAX_CACHED_SNAPSHOTS = 1_000  # each a tuple of references to the manifests above
_entries: BoundedCache[tuple[DataFile, ...]] = BoundedCache(MAX_CACHED_DATA_FILES, weight=len)
_manifests: BoundedCache[tuple[ManifestFile, ...]] = BoundedCache(MAX_CACHED_SNAPSHOTS)
# (keeps the manifest, keeps the partition)
_Evaluators = tuple[Callable[[ManifestFile], bool], Callable[[StructProtocol], bool]]


def selected_data_files(table: Table, snapshot_id: int, row_filter: BooleanExpression) -> list[DataFile] | None:
    """The live data files of the snapshot that may hold rows matching `row_filter`; None if the snapshot has delete
    files (then PyIceberg's own scan must plan and read it, to apply them)."""
    metadata = table.metadata
    snapshot = metadata.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise ValueError(f"snapshot {snapshot_id} is not in the metadata of {'.'.join(table.name())}")
    manifests = _manifests.get_or_make(snapshot.manifest_list, lambda: tuple(snapshot.manifests(table.io)))
    if any(m.content != ManifestContent.DATA for m in manifests):
        return None
    schema = metadata.schema()
    by_spec: dict[int, _Evaluators] = {}
    keeps_file = _InclusiveMetricsEvaluator(schema, row_filter, case_sensitive=True).eval
    selected: list[DataFile] = []
    for manifest in manifests:
        spec_id = manifest.partition_spec_id
        if spec_id not in by_spec:
            by_spec[spec_id] = _partition_evaluators(metadata.specs()[spec_id], schema, row_filter)
        keeps_manifest, keeps_partition = by_spec[spec_id]
        if keeps_manifest(manifest):
            selected.extend(f for f in _live_data_files(table, manifest)
                            if keeps_partition(f.partition) and keeps_file(f))
    return selected


def live_data_files(table: Table, snapshot_id: int) -> list[DataFile]:
    """Every live data file of the snapshot (with delete files, as PyIceberg's own planning lists them)."""
    data_files = selected_data_files(table, snapshot_id, ALWAYS_TRUE)
    if data_files is None:
        return [task.file for task in table.scan(snapshot_id=snapshot_id).plan_files()]
    return data_files


def _partition_evaluators(spec: PartitionSpec, schema: Schema, row_filter: BooleanExpression) -> _Evaluators:
    partition_filter = inclusive_projection(schema, spec, case_sensitive=True)(row_filter)
    partition_schema = Schema(*spec.partition_type(schema).fields)
    return (manifest_evaluator(spec, schema, partition_filter, case_sensitive=True),
            expression_evaluator(partition_schema, partition_filter, case_sensitive=True))


def _live_data_files(table: Table, manifest: ManifestFile) -> tuple[DataFile, ...]:
    return _entries.get_or_make(manifest.manifest_path, lambda: tuple(
        entry.data_file for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)))
