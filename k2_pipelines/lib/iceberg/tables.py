"""K2's Iceberg tables: one definition each, created idempotently from the Avro schemas."""

from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform, Transform

from k2_pipelines.lib.avro.iceberg import iceberg_schema, load_avro

NAMESPACE = "market_data"

# every table: PyIceberg and K2's atomic commits delete metadata json files that drop out of the metadata log (a drain
# every 30 s writes ~2,880 a day), and appends merge small manifests (one per commit otherwise, read by every plan)
_BOUNDED_METADATA = {
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "32",
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "16",
}


@dataclass(frozen=True)
class TableDefinition:
    name: str
    avro_schema: str
    partition_by: tuple[tuple[str, Transform[Any, Any]], ...] = ()
    sort_by: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)  # besides _BOUNDED_METADATA, which every table has

    @property
    def identifier(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    @property
    def table_properties(self) -> dict[str, str]:
        return _BOUNDED_METADATA | self.properties

    def schema(self) -> Schema:
        return iceberg_schema(load_avro(self.avro_schema))

    def partition_spec(self, schema: Schema) -> PartitionSpec:
        fields = [
            PartitionField(
                source_id=schema.find_field(column).field_id,
                field_id=1000 + position,
                transform=transform,
                name=f"{column}_{transform}".replace("identity", "").rstrip("_"),
            )
            for position, (column, transform) in enumerate(self.partition_by)
        ]
        return PartitionSpec(*fields)

    def sort_order(self, schema: Schema) -> SortOrder:
        return SortOrder(*(SortField(source_id=schema.find_field(c).field_id) for c in self.sort_by))


class _Layout(TypedDict):
    """Partitioning, sort order and properties shared by several tables."""

    partition_by: tuple[tuple[str, Transform[Any, Any]], ...]
    sort_by: tuple[str, ...]
    properties: dict[str, str]


_MARKET_EVENTS = _Layout(
    partition_by=(("timestamp", DayTransform()), ("exchange", IdentityTransform())),
    sort_by=("symbol", "timestamp"),
    properties={
        "write.parquet.compression-codec": "zstd",
        # dictionaries for the columns with few values (symbol, exchange, side, vendor keys); ids and prices, which
        # never fit one, fall back to plain encoding at once instead of after 2 MB (measured: 40% faster writes,
        # 20% smaller files)
        "write.parquet.dict-size-bytes": "65536",
        # row groups of 128k rows: a one-symbol query skips the others' groups by their statistics (a compacted day
        # is one file of over a million rows, two groups at the default 1M)
        "write.parquet.row-group-limit": "131072",
    },
)

TRADES = TableDefinition("trades", "trade_v2", **_MARKET_EVENTS)
QUOTES = TableDefinition("quotes", "quote_v2", **_MARKET_EVENTS)
REFERENCE_DATA = TableDefinition("reference_data", "reference_data_v2")
REJECTS = TableDefinition("rejects", "reject", partition_by=(("source", IdentityTransform()),))

DEAD_LETTERS = TableDefinition("dead_letters", "dead_letter", partition_by=(("topic", IdentityTransform()),))
SEQUENCE_GAPS = TableDefinition("sequence_gaps", "sequence_gap", partition_by=(("table_name", IdentityTransform()),))
DRAIN_STATE = TableDefinition("drain_state", "drain_state", partition_by=(("topic", IdentityTransform()),))
QUARANTINE = TableDefinition("quarantine", "quarantined_row", partition_by=(("table_name", IdentityTransform()),))
INCIDENTS = TableDefinition("incidents", "incident")

# gold: bars per interval, one table each (a query reads one interval; each is rebuilt per UTC day on its own)
_BARS = _Layout(partition_by=(("bar_start", DayTransform()),), sort_by=("symbol", "bar_start"),
                properties={"write.parquet.compression-codec": "zstd"})
OHLCV_1M = TableDefinition("ohlcv_1m", "ohlcv_bar", **_BARS)
OHLCV_1H = TableDefinition("ohlcv_1h", "ohlcv_bar", **_BARS)
OHLCV_1D = TableDefinition("ohlcv_1d", "ohlcv_bar", **_BARS)
OHLCV_TABLES = {"1m": OHLCV_1M, "1h": OHLCV_1H, "1d": OHLCV_1D}

# every drain commit writes to these (its rows, dead letters, sequence breaks, state): ~2,880 snapshots a day each
DRAINED_TABLES = (TRADES, QUOTES, DEAD_LETTERS, SEQUENCE_GAPS, DRAIN_STATE)
ALL_TABLES = (TRADES, QUOTES, REFERENCE_DATA, REJECTS, DEAD_LETTERS, SEQUENCE_GAPS, DRAIN_STATE, QUARANTINE, INCIDENTS,
              *OHLCV_TABLES.values())


def ensure_table(catalog: Catalog, definition: TableDefinition) -> Table:
    with suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(NAMESPACE)
    if catalog.table_exists(definition.identifier):  # create_table would write a metadata file, orphaned, first
        return _with_properties(_with_fields(catalog.load_table(definition.identifier), definition), definition)
    schema = definition.schema()
    try:
        table = catalog.create_table(
            definition.identifier,
            schema=schema,
            partition_spec=definition.partition_spec(schema),
            sort_order=definition.sort_order(schema),
            properties=definition.table_properties,
        )
    except TableAlreadyExistsError:  # another process created it meanwhile
        table = catalog.load_table(definition.identifier)
    return _with_properties(table, definition)


def _with_fields(table: Table, definition: TableDefinition) -> Table:
    """Tables made by an older K2 take the optional fields its definition has added since."""
    schema = definition.schema()
    if {f.name for f in schema.fields} <= {f.name for f in table.schema().fields}:
        return table
    with table.update_schema() as update:
        update.union_by_name(schema)
    return table


def _with_properties(table: Table, definition: TableDefinition) -> Table:
    properties = definition.table_properties
    if any(table.properties.get(key) != value for key, value in properties.items()):
        with table.transaction() as transaction:  # tables made by an older K2 take the definition's properties
            transaction.set_properties(properties)
    return table


def ensure_tables(catalog: Catalog) -> dict[str, Table]:
    return {definition.name: ensure_table(catalog, definition) for definition in ALL_TABLES}
