"""Replace slices of tables (rows and their rejects) in one atomic commit.

Data files are written first, once; the commit only adds them and deletes what they replace. If another writer
got there first the commit is planned again against the tables as they now are, reusing the same files.
"""

import uuid
import warnings
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import BooleanExpression
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction

from k2_pipelines.lib.iceberg.catalog import load_table
from k2_pipelines.lib.iceberg.commit import commit, new_transaction
from k2_pipelines.lib.iceberg.data_files import write_data_files


@dataclass(frozen=True)
class Replacement:
    table: str  # identifier
    data_files: list[DataFile]  # from write_rows: the new content of the slice
    row_filter: BooleanExpression  # the slice: rows matching it are replaced


@dataclass(frozen=True)
class CommitOutcome:
    snapshots_before: dict[str, int | None]
    snapshots_after: dict[str, int | None]
    attempts: int


def conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """`rows` in exactly the table's Arrow schema: missing optional columns as nulls, types cast."""
    columns = [
        rows[f.name].cast(f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def write_rows(catalog: Catalog, identifier: str, rows: pa.Table,
               file_groups: pa.Array | None = None) -> list[DataFile]:
    """Write `rows` as data files of the table, not yet committed (see write_data_files for file_groups)."""
    table = load_table(catalog, identifier)
    rows = conform(rows, table.schema().as_arrow())
    return write_data_files(table.metadata, table.io, rows, uuid.uuid4(), file_groups)


def replacement(catalog: Catalog, identifier: str, rows: pa.Table, row_filter: BooleanExpression) -> Replacement:
    return Replacement(identifier, write_rows(catalog, identifier, rows), row_filter)


def _snapshot_id(table: Table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def append_files(transaction: Transaction, data_files: list[DataFile], snapshot_properties: dict[str, str]) -> None:
    """Append files in a merge append: small manifests are merged as `commit.manifest.*` says
    (lib/iceberg/tables.py)."""
    with transaction.update_snapshot(snapshot_properties=snapshot_properties).merge_append() as append:
        for data_file in data_files:
            append.append_data_file(data_file)


def replace_atomically(catalog: Catalog, replacements: list[Replacement],
                       snapshot_properties: dict[str, str]) -> CommitOutcome:
    """Commit every replacement in one catalog transaction: each slice is deleted and its new files added."""
    before: dict[str, int | None] = {}

    def plan_commit(attempt: int) -> list[Transaction]:
        nonlocal before
        tables = {r.table: load_table(catalog, r.table) for r in replacements}
        before = {name: _snapshot_id(table) for name, table in tables.items()}
        transactions = []
        for r in replacements:
            transaction = new_transaction(tables[r.table])
            with warnings.catch_warnings():  # a first load replaces nothing, which is fine
                warnings.filterwarnings("ignore", "Delete operation did not match any records")
                transaction.delete(delete_filter=r.row_filter, snapshot_properties=snapshot_properties)
            if r.data_files:
                append_files(transaction, r.data_files, snapshot_properties)
            transactions.append(transaction)
        return transactions

    committed = commit(catalog, plan_commit, "planning again")
    after = dict(before) | {name: committed.snapshot_id(name) for name in committed.tables}
    return CommitOutcome(before, after, committed.attempts)
