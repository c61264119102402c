"""The `k2` Iceberg catalog: pyiceberg's own configuration, else an embedded SQLite catalog under the state dir."""

import sqlite3
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.utils.config import Config
from sqlalchemy import select
from sqlalchemy.orm import Session

from k2_pipelines.lib.utils.bounded_cache import BoundedCache
from k2_pipelines.settings import state_dir

CATALOG_NAME = "k2"


class CatalogUnavailable(RuntimeError):
    """The catalog cannot be reached, or its database is gone while the warehouse still holds tables."""


def embedded_catalog_properties(root: Path) -> dict[str, str]:
    warehouse, database = root / "warehouse", root / "catalog.db"
    warehouse.mkdir(parents=True, exist_ok=True)
    if not database.exists():
        if any(warehouse.iterdir()):
            # opening it would create an empty catalog: new empty tables, drains starting again from offset 0
            raise CatalogUnavailable(f"the catalog database {database} is missing but {warehouse} holds tables")
        sqlite3.connect(database).close()
    return {
        "type": "sql",
        # mode=rw: a database moved away while K2 runs is an error, never silently a new empty catalog;
        # timeout is SQLite's busy timeout (seconds): concurrent runs wait for the lock instead of failing
        "uri": f"sqlite:///file:{database}?mode=rw&uri=true&timeout=30",
        "warehouse": warehouse.as_uri(),
    }


def catalog_properties() -> dict[str, Any]:
    """pyiceberg's configuration for `k2` (.pyiceberg.yaml, PYICEBERG_CATALOG__K2__*), else the embedded default.
    Values are as YAML reads them (mostly strings)."""
    return Config().get_catalog_config(CATALOG_NAME) or embedded_catalog_properties(state_dir())


def load_k2_catalog() -> Catalog:
    return _load(catalog_properties())


def load_catalog_at(root: Path) -> Catalog:
    """An embedded catalog under `root`, whatever the configuration says (benchmarks, scratch work)."""
    return _load(embedded_catalog_properties(root))


def _load(properties: dict[str, Any]) -> Catalog:
    catalog = load_catalog(CATALOG_NAME, **properties)
    if properties.get("uri", "").startswith("sqlite"):
        if not isinstance(catalog, SqlCatalog):
            raise TypeError(f"catalog {CATALOG_NAME} has a SQLite uri but is a {type(catalog).__name__}, not type sql")
        with catalog.engine.begin() as connection:  # WAL lets readers work while a load commits
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    return catalog


# Loading a table parses its metadata json, which lists every snapshot it keeps: ~8 ms at 250 snapshots, paid about
# ten times per drain. With a SQL catalog the current metadata location is one indexed row, so a table is parsed
# once per metadata file (Table objects are not changed in place: commits make new ones). Other catalogs load anew.
MAX_CACHED_TABLES = 256  # metadata versions kept: a few per table between commits
_by_location: BoundedCache[Table] = BoundedCache(MAX_CACHED_TABLES)


def load_table(catalog: Catalog, identifier: str) -> Table:
    """`catalog.load_table(identifier)`, parsed once per metadata file; NoSuchTableError if there is none."""
    if not isinstance(catalog, SqlCatalog):
        return catalog.load_table(identifier)
    location = stored_metadata_location(catalog, identifier)
    if location is None:
        raise NoSuchTableError(f"Table does not exist: {identifier}")
    cached = _by_location.get((catalog.name, identifier, location))
    if cached is not None:
        return cached
    table = catalog.load_table(identifier)  # a commit since the lookup is fine: cached under its own location
    remember(catalog, table)
    return table


def stored_metadata_location(catalog: SqlCatalog, identifier: str) -> str | None:
    """The metadata location the catalog holds for the table now (one indexed row; None: no such table)."""
    namespace, name = identifier.rsplit(".", 1)
    with Session(catalog.engine) as session:
        return session.scalar(select(IcebergTables.metadata_location).where(
            IcebergTables.catalog_name == catalog.name, IcebergTables.table_namespace == namespace,
            IcebergTables.table_name == name))


def remember(catalog: Catalog, table: Table) -> None:
    """Cache a table as committed (it is what the next load_table of it finds, unless another writer commits)."""
    _by_location.put_all({(catalog.name, ".".join(table.name()), table.metadata_location): table})
