"""Write an Arrow table into a partitioned Iceberg table in one pass instead of one scan per partition.

PyIceberg's writer filters the whole table once for every partition it finds (six UTC days of ASX data: six full
scans). Here each batch is cut where its partition values change (one pass, no copy when the batch is already
grouped); the slices are then written by PyIceberg's own `write_file`, as its append would.
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


def _partition_values(metadata: TableMetadata, batch: pa.RecordBatch) -> pa.Table:
    spec, schema = metadata.spec(), metadata.schema()
    return pa.table({
        str(i): field.transform.pyarrow_transform(schema.find_field(field.source_id).field_type)(
            batch.column(schema.find_column_name(field.source_id))
        )
        for i, field in enumerate(spec.fields)
    })


def _runs(values: pa.Table) -> list[tuple[int, int, tuple]]:
    """(start, end, partition values) of each run of equal partition values."""
    changes = np.zeros(values.num_rows, dtype=bool)
    for column in values.columns:
        column = column.combine_chunks()
        changes[1:] |= pc.not_equal(column[1:], column[:-1]).fill_null(True).to_numpy(zero_copy_only=False)
    starts = np.concatenate(([0], np.flatnonzero(changes))).tolist()
    ends = starts[1:] + [values.num_rows]
    return [(s, e, tuple(c[s].as_py() for c in values.columns)) for s, e in zip(starts, ends)]


def partition_slices(metadata: TableMetadata, rows: pa.Table) -> list[tuple[PartitionKey, pa.Table]]:
    """Rows grouped by partition. Batches already grouped (ASX files are in time order) are sliced without a copy;
    others are sorted by their partition values first."""
    spec, schema = metadata.spec(), metadata.schema()
    groups: dict[tuple, list[pa.RecordBatch]] = defaultdict(list)
    for batch in rows.to_batches():
        values = _partition_values(metadata, batch)
        runs = _runs(values)
        if len({key for _, _, key in runs}) < len(runs):  # a partition recurs: group it by sorting
            order = pc.sort_indices(values, sort_keys=[(name, "ascending") for name in values.column_names])
            batch, values = batch.take(order), values.take(order)
            runs = _runs(values)
        for start, end, key in runs:
            groups[key].append(batch.slice(start, end - start))
    return [
        (PartitionKey(field_values=[PartitionFieldValue(field=f, value=v) for f, v in zip(spec.fields, key)],
                      partition_spec=spec, schema=schema),
         pa.Table.from_batches(batches))
        for key, batches in groups.items()
    ]


def write_data_files(metadata: TableMetadata, io: FileIO, rows: pa.Table, write_uuid: uuid.UUID) -> list[DataFile]:
    if rows.num_rows == 0:
        return []
    target_file_size = property_as_int(
        metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
    )
    task_schema = pyarrow_to_schema(rows.schema, name_mapping=metadata.schema().name_mapping,
                                    format_version=metadata.format_version)
    counter = itertools.count(0)
    slices = partition_slices(metadata, rows) if not metadata.spec().is_unpartitioned() else [(None, rows)]
    tasks = (
        WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=batches, partition_key=key, schema=task_schema)
        for key, part in slices
        for batches in bin_pack_arrow_table(part, target_file_size)
    )
    return list(write_file(io=io, table_metadata=metadata, tasks=tasks))
