"""Commit several Iceberg transactions as one: all tables move, or none does.

PyIceberg commits one table at a time. With a SQL catalog every table's current metadata pointer is a row in
`iceberg_tables`, so swapping all pointers in one database transaction (each a compare-and-set on the metadata
the transaction was built from) makes a multi-table commit atomic: rows and their rejects land together.

Like PyIceberg's own commit path, which this one bypasses, a committed table deletes the metadata json files that
dropped out of its metadata log (`write.metadata.delete-after-commit.enabled`, keeping
`write.metadata.previous-versions-max`): without it a table keeps one file per commit until orphan removal.
"""

from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table, Transaction
from sqlalchemy import update
from sqlalchemy.orm import Session


def commit_atomically(catalog: SqlCatalog, transactions: list[Transaction]) -> list[Table]:
    """Commit `transactions` (each from `table.transaction()`) in one catalog transaction.

    Raises CommitFailedException, with nothing committed, if any table moved since its transaction began.
    Table requirements (e.g. the snapshot a transaction was based on) are checked as PyIceberg checks them;
    unlike `Transaction.commit_transaction` nothing is retried: the caller decides what a conflict means.
    """
    if not isinstance(catalog, SqlCatalog):
        raise TypeError(f"atomic multi-table commits need a SQL catalog, not {type(catalog).__name__}")
    staged = []
    for transaction in transactions:
        table = transaction._table
        if not transaction._updates:
            continue
        current = catalog.load_table(table.name())
        if current.metadata_location != table.metadata_location:
            raise CommitFailedException(f"{'.'.join(table.name())} changed since this transaction began")
        updated = catalog._update_and_stage_table(current, table.name(), transaction._requirements, transaction._updates)
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
                .values(metadata_location=updated.metadata_location, previous_metadata_location=current.metadata_location)
            )
            if moved.rowcount != 1:
                raise CommitFailedException(f"{namespace}.{name} was updated by another process; nothing committed")
    for current, updated in staged:
        catalog._delete_old_metadata(updated.io, current.metadata, updated.metadata)
    return [catalog.load_table(current.name()) for current, _ in staged]
