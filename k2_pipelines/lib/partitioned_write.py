"""Write an Arrow table into a partitioned Iceberg table with one sort instead of one scan per partition.

PyIceberg's writer filters the whole table once for every partition it finds (six UTC days of ASX data: six full
scans). Sorting by the partition values once and slicing is one pass; the slices are then written by
PyIceberg's own `write_file`, as its append would.
"""

import itertools
import uuid

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


def partition_slices(metadata: TableMetadata, rows: pa.Table) -> list[tuple[PartitionKey, pa.Table]]:
    spec, schema = metadata.spec(), metadata.schema()
    keys = pa.table({
        str(i): field.transform.pyarrow_transform(schema.find_field(field.source_id).field_type)(
            rows[schema.find_column_name(field.source_id)]
        )
        for i, field in enumerate(spec.fields)
    })
    order = pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in keys.column_names])
    sorted_rows, sorted_keys = rows.take(order), keys.take(order)
    changes = np.zeros(len(order), dtype=bool)
    for column in sorted_keys.columns:
        values = column.combine_chunks()
        changes[1:] |= pc.not_equal(values[1:], values[:-1]).to_numpy(zero_copy_only=False)
    starts = np.concatenate(([0], np.flatnonzero(changes))).tolist()
    ends = starts[1:] + [len(order)]
    slices = []
    for start, end in zip(starts, ends):
        values = [sorted_keys[name][start].as_py() for name in sorted_keys.column_names]
        key = PartitionKey(
            field_values=[PartitionFieldValue(field=f, value=v) for f, v in zip(spec.fields, values)],
            partition_spec=spec,
            schema=schema,
        )
        slices.append((key, sorted_rows.slice(start, end - start)))
    return slices


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
