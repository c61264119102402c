"""Write an Arrow table into a partitioned Iceberg table in one pass instead of one scan per partition.

PyIceberg's writer filters the whole table once for every partition it finds (six UTC days of ASX data: six full
scans). Here each batch is cut where its partition values change (one pass, no copy when the batch is already
grouped); the slices are then written by PyIceberg's own `write_file`, as its append would. A caller may also
keep groups of rows (ASX trading dates, which straddle UTC days) in files of their own.
"""

import itertools
import uuid
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import bin_pack_arrow_table, pyarrow_to_schema, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.utils.properties import property_as_int


def _key_columns(metadata: TableMetadata, batch: pa.RecordBatch, file_groups: pa.Array | None) -> list[pa.Array]:
    """Per row: each partition field's value, then the caller's file group (if any)."""
    spec, schema = metadata.spec(), metadata.schema()
    columns = [
        field.transform.pyarrow_transform(schema.find_field(field.source_id).field_type)(
            batch.column(schema.find_column_name(field.source_id))
        )
        for field in spec.fields
    ]
    return columns + ([file_groups] if file_groups is not None else [])


def _runs(columns: list[pa.Array], n: int) -> list[tuple[int, int, tuple]]:
    """(start, end, key) of each run of rows with equal key columns."""
    changes = np.zeros(n, dtype=bool)
    for column in columns:
        changes[1:] |= pc.not_equal(column[1:], column[:-1]).fill_null(True).to_numpy(zero_copy_only=False)
    starts = np.concatenate(([0], np.flatnonzero(changes))).tolist()
    ends = [*starts[1:], n]
    return [(s, e, tuple(c[s].as_py() for c in columns)) for s, e in zip(starts, ends)]


def partition_slices(
    metadata: TableMetadata, rows: pa.Table, file_groups: pa.Array | None = None
) -> list[tuple[PartitionKey | None, pa.Table]]:
    """Rows grouped by partition and file group. Batches already grouped (ASX files are in time order) are sliced
    without a copy; others are sorted by their keys first."""
    spec, schema = metadata.spec(), metadata.schema()
    groups: dict[tuple, list[pa.RecordBatch]] = defaultdict(list)
    offset = 0
    for batch in rows.to_batches():
        if not batch.num_rows:  # chunked arrays may hold empty chunks; they have no runs
            continue
        columns = _key_columns(metadata, batch, file_groups.slice(offset, batch.num_rows) if file_groups else None)
        offset += batch.num_rows
        runs = _runs(columns, batch.num_rows)
        if len({key for _, _, key in runs}) < len(runs):  # a key recurs: group it by sorting
            keys = pa.table({str(i): c for i, c in enumerate(columns)})
            order = pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in keys.column_names])
            batch, columns = batch.take(order), [c.take(order) for c in columns]
            runs = _runs(columns, batch.num_rows)
        for start, end, key in runs:
            groups[key].append(batch.slice(start, end - start))
    partitioned = not spec.is_unpartitioned()
    return [
        (PartitionKey(field_values=[PartitionFieldValue(field=f, value=v) for f, v in zip(spec.fields, key)],
                      partition_spec=spec, schema=schema) if partitioned else None,
         pa.Table.from_batches(batches))
        for key, batches in groups.items()
    ]


def write_data_files(
    metadata: TableMetadata, io: FileIO, rows: pa.Table, write_uuid: uuid.UUID, file_groups: pa.Array | None = None
) -> list[DataFile]:
    """Data files (not committed) for `rows`. Rows of different `file_groups` values never share a file, so that
    a later delete of one group drops whole files instead of rewriting them."""
    if rows.num_rows == 0:
        return []
    target_file_size = property_as_int(
        metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
    )
    assert target_file_size is not None  # None only without a default
    task_schema = pyarrow_to_schema(rows.schema, name_mapping=metadata.schema().name_mapping,
                                    format_version=metadata.format_version)
    counter = itertools.count(0)
    tasks = (
        WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=batches, partition_key=key,
                  schema=task_schema)
        for key, part in partition_slices(metadata, rows, file_groups)
        for batches in bin_pack_arrow_table(part, target_file_size)
    )
    return list(write_file(io=io, table_metadata=metadata, tasks=tasks))
