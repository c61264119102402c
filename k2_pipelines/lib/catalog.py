"""The `k2` Iceberg catalog: pyiceberg's own configuration, else an embedded SQLite catalog under the state dir."""

import sqlite3
from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.utils.config import Config

from k2_pipelines.lib.paths import state_dir

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


def catalog_properties() -> dict[str, str]:
    """pyiceberg's configuration for `k2` (.pyiceberg.yaml, PYICEBERG_CATALOG__K2__*), else the embedded default."""
    return Config().get_catalog_config(CATALOG_NAME) or embedded_catalog_properties(state_dir())


def load_k2_catalog() -> Catalog:
    return _load(catalog_properties())


def load_catalog_at(root: Path) -> Catalog:
    """An embedded catalog under `root`, whatever the configuration says (benchmarks, scratch work)."""
    return _load(embedded_catalog_properties(root))


def _load(properties: dict[str, str]) -> Catalog:
    catalog = load_catalog(CATALOG_NAME, **properties)
    if properties.get("uri", "").startswith("sqlite"):
        with catalog.engine.begin() as connection:  # WAL lets readers work while a load commits
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    return catalog
