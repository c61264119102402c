"""Scan planning for a query: the snapshot an as-of names, and the data files a row filter selects (partition pruning
on the day, then the files' column statistics; see lib/iceberg/snapshot_files.py)."""

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, In, LessThan
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import ALWAYS_TRUE, Table

from k2_pipelines.lib.iceberg.snapshot_files import selected_data_files
from k2_pipelines.lib.query.validate import AsOf, NotFound, QueryError


@dataclass(frozen=True)
class Plan:
    table: Table
    snapshot_id: int | None  # None: the table has no snapshot yet (it is empty)
    row_filter: BooleanExpression
    files: tuple[str, ...]  # local paths DuckDB reads
    # PyIceberg reads instead of DuckDB: the snapshot has delete files (DuckDB's read_parquet would not apply them), or
    # a file is not local (s3://: DuckDB's httpfs extension is a download at first use, which K2 cannot rely on)
    pyiceberg_read: bool


def snapshot_id(table: Table, as_of: AsOf | None) -> int | None:
    """The snapshot an as-of names (the current one without it), or a QueryError saying why there is none."""
    if as_of is None:
        snapshot = table.current_snapshot()
        return snapshot.snapshot_id if snapshot else None
    name = ".".join(table.name())
    if as_of.snapshot_id is not None:
        if table.snapshot_by_id(as_of.snapshot_id) is None:
            raise NotFound(f"{name} has no snapshot {as_of.snapshot_id} (see `k2 query snapshots`)")
        return as_of.snapshot_id
    if as_of.at is None:
        raise QueryError("as_of names neither a snapshot id nor a time")
    at_ms = int(as_of.at.timestamp() * 1000)
    snapshot = table.snapshot_as_of_timestamp(at_ms)
    if snapshot is None:
        raise NotFound(f"{name} had no snapshot yet at {as_of.at.isoformat()}")
    # the snapshot committed next: if expiry took its parent, snapshots between the two are gone, and the one found
    # may not be what the table held at that time (expiry cuts the parent link of what it leaves)
    later = [e for e in table.metadata.snapshot_log if e.timestamp_ms > at_ms]
    following = table.snapshot_by_id(later[0].snapshot_id) if later else None
    if following is not None and following.parent_snapshot_id is None:
        raise NotFound(f"{name}'s snapshots of {as_of.at.isoformat()} were expired (the tables drains write keep "
                         "2 hours and each day's newest; see `k2 query snapshots`)")
    return snapshot.snapshot_id


def range_filter(column: str, symbols: list[str], start: datetime, end: datetime) -> BooleanExpression:
    return And(In("symbol", symbols), And(GreaterThanOrEqual(column, start.isoformat()),
                                          LessThan(column, end.isoformat())))


def plan(table: Table, snapshot: int | None, row_filter: BooleanExpression = ALWAYS_TRUE) -> Plan:
    if snapshot is None:
        return Plan(table, None, row_filter, (), False)
    data_files = selected_data_files(table, snapshot, row_filter)
    if data_files is None:  # delete files: PyIceberg plans and reads, and applies them
        tasks = table.scan(row_filter=row_filter, snapshot_id=snapshot).plan_files()
        return Plan(table, snapshot, row_filter, tuple(task.file.file_path for task in tasks), True)
    paths = [local_path(data_file.file_path) for data_file in data_files]
    local = [path for path in paths if path is not None]
    return Plan(table, snapshot, row_filter, tuple(local), len(local) < len(paths))


def local_path(location: str) -> str | None:
    """The path on this machine of a file Iceberg records as `location`, in whichever form its writer chose (/p,
    file:/p as Spark writes it, file:///p as PyIceberg does); None for a file elsewhere (s3://, s3a://, ...)."""
    scheme, _, path = PyArrowFileIO.parse_location(location)
    return path if scheme == "file" else None


def source(planned: Plan) -> tuple[str, ...] | pa.Table:
    """What DuckDB reads: the planned files, or PyIceberg's own read of them when DuckDB cannot read them right."""
    if planned.pyiceberg_read:
        return planned.table.scan(row_filter=planned.row_filter, snapshot_id=planned.snapshot_id).to_arrow()
    if not planned.files:  # read_parquet needs a file; an empty result still has the table's columns
        return planned.table.schema().as_arrow().empty_table()
    return planned.files
