import dagster as dg
from pyiceberg.catalog import Catalog

from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import ensure_tables


class IcebergCatalogResource(dg.ConfigurableResource):
    """The `k2` Iceberg catalog (pyiceberg's configuration, else the embedded SQLite one), with K2's tables."""

    def catalog(self) -> Catalog:
        catalog = load_k2_catalog()
        ensure_tables(catalog)
        return catalog


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"iceberg": IcebergCatalogResource()})
