"""A table as it is now, its metadata parsed once per metadata file (lib/catalog.load_table)."""

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from k2_pipelines.lib.iceberg.catalog import load_table


def current_table(catalog: Catalog, identifier: str) -> Table | None:
    """The table now, or None if the catalog has no such table."""
    try:
        return load_table(catalog, identifier)
    except NoSuchTableError:
        return None
