"""Replace slices of tables (rows and their rejects) in one atomic commit.

Data files are written first, once; the commit only adds them and deletes what they replace. If another writer
got there first the commit is planned again against the tables as they now are, reusing the same files.
"""

import logging
import random
import time
import uuid
import warnings
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import BooleanExpression
from pyiceberg.manifest import DataFile
from pyiceberg.table import Transaction

from k2_pipelines.lib.iceberg.catalog import load_table
from k2_pipelines.lib.iceberg.commit import commit_atomically, new_transaction
from k2_pipelines.lib.iceberg.data_files import write_data_files

log = logging.getLogger(__name__)
COMMIT_ATTEMPTS = 10
BACKOFF_SECONDS = (0.05, 5.0)  # first and largest wait between attempts (exponential, full jitter)


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


def write_rows(catalog: Catalog, identifier: str, rows: pa.Table, file_groups: pa.Array | None = None) -> list[DataFile]:
    """Write `rows` as data files of the table, not yet committed (see write_data_files for file_groups)."""
    table = load_table(catalog, identifier)
    return write_data_files(table.metadata, table.io, conform(rows, table.schema().as_arrow()), uuid.uuid4(), file_groups)


def replacement(catalog: Catalog, identifier: str, rows: pa.Table, row_filter: BooleanExpression) -> Replacement:
    return Replacement(identifier, write_rows(catalog, identifier, rows), row_filter)


def _snapshot_id(table) -> int | None:
    snapshot = table.current_snapshot()
    return snapshot.snapshot_id if snapshot else None


def append_files(transaction: Transaction, data_files: list[DataFile], snapshot_properties: dict[str, str]) -> None:
    """Append files in a merge append: small manifests are merged as `commit.manifest.*` says (lib/iceberg/tables.py)."""
    with transaction.update_snapshot(snapshot_properties=snapshot_properties).merge_append() as append:
        for data_file in data_files:
            append.append_data_file(data_file)


def wait_after_lost_race(attempt: int, conflict: CommitFailedException, next_step: str) -> None:
    """Re-raise the conflict after the last attempt; else wait an exponential backoff with full jitter."""
    if attempt == COMMIT_ATTEMPTS:
        raise conflict
    wait = random.uniform(0, min(BACKOFF_SECONDS[1], BACKOFF_SECONDS[0] * 2**attempt))
    log.warning("commit attempt %d lost a race (%s); %s in %.2fs", attempt, conflict, next_step, wait)
    time.sleep(wait)


def replace_atomically(catalog: Catalog, replacements: list[Replacement], snapshot_properties: dict[str, str]) -> CommitOutcome:
    """Commit every replacement in one catalog transaction: each slice is deleted and its new files added."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
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
        try:
            committed = commit_atomically(catalog, transactions)
        except CommitFailedException as conflict:
            wait_after_lost_race(attempt, conflict, "planning again")
        else:
            after = dict(before) | {".".join(t.name()): _snapshot_id(t) for t in committed}
            return CommitOutcome(before, after, attempt)
    raise AssertionError("unreachable")
