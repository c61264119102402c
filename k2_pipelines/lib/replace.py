"""Replace a slice of a table and its rejects in one atomic commit, re-planned if another writer got there first."""

import logging
import warnings
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import BooleanExpression
from pyiceberg.table import Transaction

from k2_pipelines.lib.atomic_commit import commit_atomically
from k2_pipelines.lib.partitioned_write import write_data_files

log = logging.getLogger(__name__)
COMMIT_ATTEMPTS = 5


@dataclass(frozen=True)
class Replacement:
    table: str  # identifier
    rows: pa.Table
    row_filter: BooleanExpression  # rows matching it are replaced by `rows`


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


def _overwrite(transaction: Transaction, rows: pa.Table, row_filter: BooleanExpression, properties: dict[str, str]) -> None:
    """Transaction.overwrite, with K2's one-pass partitioned writer."""
    with warnings.catch_warnings():  # a first load replaces nothing, which is fine
        warnings.filterwarnings("ignore", "Delete operation did not match any records")
        transaction.delete(delete_filter=row_filter, snapshot_properties=properties)
    if rows.num_rows == 0:
        return
    with transaction.update_snapshot(snapshot_properties=properties).fast_append() as append:
        for data_file in write_data_files(transaction.table_metadata, transaction._table.io, rows, append.commit_uuid):
            append.append_data_file(data_file)


def _snapshot_id(table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def replace_atomically(catalog: Catalog, replacements: list[Replacement], snapshot_properties: dict[str, str]) -> CommitOutcome:
    """Overwrite every replacement's slice in one commit. Overwrites are idempotent, so on a conflict the
    whole commit is planned again against the tables as they now are (files written by the lost attempt are
    left for orphan cleanup)."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        tables = {r.table: catalog.load_table(r.table) for r in replacements}
        before = {name: _snapshot_id(table) for name, table in tables.items()}
        transactions = []
        for replacement in replacements:
            transaction = tables[replacement.table].transaction()
            rows = conform(replacement.rows, tables[replacement.table].schema().as_arrow())
            _overwrite(transaction, rows, replacement.row_filter, snapshot_properties)
            transactions.append(transaction)
        try:
            committed = commit_atomically(catalog, transactions)
        except CommitFailedException as conflict:
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.warning("commit attempt %d lost a race (%s); planning again", attempt, conflict)
            continue
        after = dict(before) | {".".join(t.name()): _snapshot_id(t) for t in committed}
        return CommitOutcome(before, after, attempt)
    raise AssertionError("unreachable")
