"""Commit several Iceberg transactions as one: all tables move, or none does.

PyIceberg commits one table at a time. With a SQL catalog every table's current metadata pointer is a row in
`iceberg_tables`, so swapping all pointers in one database transaction (each a compare-and-set on the metadata
the transaction was built from) makes a multi-table commit atomic: rows and their rejects land together.

Like PyIceberg's own commit path, which this one bypasses, a committed table deletes the metadata json files that
dropped out of its metadata log (`write.metadata.delete-after-commit.enabled`, keeping
`write.metadata.previous-versions-max`): without it a table keeps one file per commit until orphan removal.

Every K2 writer commits through `commit`: plan against the tables as they are, commit, and after a lost race
(another writer moved a table) wait and plan again.
"""

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast, overload

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table, Transaction
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import (
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.utils.datetime import datetime_to_millis
from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session

from k2_pipelines.lib.iceberg.catalog import remember, stored_metadata_location

log = logging.getLogger(__name__)
COMMIT_ATTEMPTS = 10
BACKOFF_SECONDS = (0.05, 5.0)  # first and largest wait between attempts (exponential, full jitter)


def _updated_metadata(base: TableMetadata, updates: tuple[TableUpdate, ...],
                      metadata_location: str | None = None) -> TableMetadata:
    """PyIceberg's update_table_metadata without its closing deep copy of the whole metadata, every snapshot
    included: measured, 30 ms a call at 300 snapshots, four calls a drain commit. Metadata models are frozen and the
    updates build new containers, so nothing is shared that anyone changes."""
    context, metadata = _TableMetadataUpdateContext(), base
    for table_update in updates:
        metadata = _apply_table_update(table_update, metadata, context)
    if context.has_changes():
        if metadata_location:
            metadata = _update_table_metadata_log(metadata, metadata_location, base.last_updated_ms)
        if base.last_updated_ms == metadata.last_updated_ms:
            metadata = metadata.model_copy(update={"last_updated_ms": datetime_to_millis(datetime.now().astimezone())})
    metadata.spec().check_compatible(metadata.schema())
    metadata.sort_order().check_compatible(metadata.schema())
    return metadata


class _Transaction(Transaction):
    """PyIceberg's Transaction builds its table metadata anew each time `table_metadata` is read: dozens of times per
    commit. The result changes only when an update is staged (a new `_updates` tuple), so it is built once per staged
    change, and without a deep copy. PyIceberg's own commit is refused: its retry refreshes the table in place."""

    _built_from: TableMetadata | None = None
    _built_for: tuple | None = None
    _built: TableMetadata

    @property
    def table_metadata(self) -> TableMetadata:
        if self._built_from is not self._table.metadata or self._built_for is not self._updates:
            self._built = _updated_metadata(self._table.metadata, self._updates)
            self._built_from, self._built_for = self._table.metadata, self._updates
        return self._built

    def commit_transaction(self) -> Table:
        raise TypeError("commit K2's transactions with commit_atomically: PyIceberg's retry would refresh the table "
                        "in place, and K2 caches tables")


def _staged(catalog: SqlCatalog, current: Table, transaction: Transaction) -> Table:
    """The table as `transaction` leaves it, at its next metadata location (PyIceberg's _update_and_stage_table)."""
    for requirement in transaction._requirements:
        requirement.validate(current.metadata)
    metadata = _updated_metadata(current.metadata, transaction._updates, current.metadata_location)
    location = load_location_provider(metadata.location, metadata.properties).new_table_metadata_file_location(
        catalog._parse_metadata_version(current.metadata_location) + 1)
    return Table(current.name(), metadata, location, catalog._load_file_io(metadata.properties, location), catalog)


def new_transaction(table: Table) -> Transaction:
    """A transaction on `table`, as `table.transaction()` makes it: commit it with commit_atomically."""
    return _Transaction(table)


def commit_atomically(catalog: Catalog, transactions: list[Transaction]) -> list[Table]:
    """Commit `transactions` (each from `new_transaction(table)`) in one catalog transaction.

    Raises CommitFailedException, with nothing committed, if any table moved since its transaction began.
    Table requirements (e.g. the snapshot a transaction was based on) are checked as PyIceberg checks them;
    unlike `Transaction.commit_transaction` nothing is retried: the caller decides what a conflict means.
    """
    if not isinstance(catalog, SqlCatalog):
        raise TypeError(f"atomic multi-table commits need a SQL catalog, not {type(catalog).__name__}")
    staged = []
    for transaction in transactions:
        current = transaction._table
        if not transaction._updates:
            continue
        if stored_metadata_location(catalog, ".".join(current.name())) != current.metadata_location:
            raise CommitFailedException(f"{'.'.join(current.name())} changed since this transaction began")
        updated = _staged(catalog, current, transaction)
        catalog._write_metadata(metadata=updated.metadata, io=updated.io, metadata_path=updated.metadata_location)
        staged.append((current, updated))

    with Session(catalog.engine) as session, session.begin():
        for current, updated in staged:
            namespace, name = catalog.namespace_to_string(current.name()[:-1]), current.name()[-1]
            moved = session.execute(
                update(IcebergTables)
                .where(
                    IcebergTables.catalog_name == catalog.name,
                    IcebergTables.table_namespace == namespace,
                    IcebergTables.table_name == name,
                    IcebergTables.metadata_location == current.metadata_location,
                )
                .values(metadata_location=updated.metadata_location,
                        previous_metadata_location=current.metadata_location)
            )
            # an UPDATE's result is a CursorResult (Session.execute is typed as returning any Result)
            if cast(CursorResult, moved).rowcount != 1:
                raise CommitFailedException(f"{namespace}.{name} was updated by another process; nothing committed")
    for current, updated in staged:
        catalog._delete_old_metadata(updated.io, current.metadata, updated.metadata)
    for _, updated in staged:
        remember(catalog, updated)
    return [updated for _, updated in staged]


@dataclass(frozen=True)
class Committed:
    tables: dict[str, Table]  # identifier -> the table as committed, of those the commit changed
    attempts: int

    def snapshot_id(self, identifier: str) -> int | None:
        """The table's current snapshot after the commit (None: the commit left the table alone)."""
        snapshot = self.tables[identifier].current_snapshot() if identifier in self.tables else None
        return snapshot.snapshot_id if snapshot else None


Plan = Callable[[int], list[Transaction] | None]  # attempt -> the transactions to commit (None: nothing to commit)


def _wait_after_lost_race(attempt: int, conflict: CommitFailedException, next_step: str) -> None:
    """Re-raise the conflict after the last attempt; else wait an exponential backoff with full jitter."""
    if attempt == COMMIT_ATTEMPTS:
        raise conflict
    wait = random.uniform(0, min(BACKOFF_SECONDS[1], BACKOFF_SECONDS[0] * 2**attempt))
    log.warning("commit attempt %d lost a race (%s); %s in %.2fs", attempt, conflict, next_step, wait)
    time.sleep(wait)


@overload
def commit(catalog: Catalog, plan: Callable[[int], list[Transaction]], next_step: str) -> Committed: ...
@overload
def commit(catalog: Catalog, plan: Plan, next_step: str) -> Committed | None: ...
def commit(catalog: Catalog, plan: Plan, next_step: str) -> Committed | None:
    """Commit what `plan(attempt)` returns (transactions from `new_transaction` on tables it loads) atomically; after
    a lost race wait and plan again (the log names `next_step`), up to COMMIT_ATTEMPTS attempts, then re-raise the
    CommitFailedException. None if a plan found nothing to commit."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        transactions = plan(attempt)
        if transactions is None:
            return None
        try:
            committed = commit_atomically(catalog, transactions)
            return Committed({".".join(table.name()): table for table in committed}, attempt)
        except CommitFailedException as conflict:
            _wait_after_lost_race(attempt, conflict, next_step)
    raise AssertionError("unreachable")
