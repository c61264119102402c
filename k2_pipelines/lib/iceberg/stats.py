"""Per-table statistics read from the catalog (snapshot summaries, file statistics): cheap, no data scan."""

from datetime import UTC, datetime
from typing import TypedDict, cast

from pyiceberg.catalog import Catalog
from pyiceberg.conversions import from_bytes
from pyiceberg.expressions import EqualTo
from pyiceberg.table import Table
from pyiceberg.types import TimestamptzType

from k2_pipelines.lib.iceberg.tables import NAMESPACE


class TableStats(TypedDict):
    table: str
    rows: int
    data_files: int
    bytes: int
    snapshot_id: int | None
    snapshot_at_ms: int | None
    location: str


def table_stats(catalog: Catalog) -> list[TableStats]:
    stats: list[TableStats] = []
    for identifier in sorted(catalog.list_tables(NAMESPACE)):
        table = catalog.load_table(identifier)
        snapshot = table.current_snapshot()
        summary = snapshot.summary.additional_properties if snapshot and snapshot.summary else {}
        stats.append({
            "table": ".".join(identifier),
            "rows": int(summary.get("total-records", 0)),
            "data_files": int(summary.get("total-data-files", 0)),
            "bytes": int(summary.get("total-files-size", 0)),
            "snapshot_id": snapshot.snapshot_id if snapshot else None,
            "snapshot_at_ms": snapshot.timestamp_ms if snapshot else None,
            "location": table.location(),
        })
    return stats


def format_stats(stats: list[TableStats]) -> str:
    header = f"{'table':<28} {'rows':>12} {'files':>6} {'bytes':>14}  snapshot"
    lines = [header, "-" * len(header)]
    for s in stats:
        lines.append(f"{s['table']:<28} {s['rows']:>12,} {s['data_files']:>6} {s['bytes']:>14,}  {s['snapshot_id']}")
    return "\n".join(lines)


def newest_event_time(table: Table, exchange: str) -> datetime | None:
    """The latest event time of an exchange's rows, from the data files' column bounds: no data is read."""
    field_id = table.schema().find_field("timestamp").field_id
    # a timestamptz bound decodes to epoch microseconds (pyiceberg types it as any primitive)
    bounds = [cast(int, from_bytes(TimestamptzType(), task.file.upper_bounds[field_id]))
              for task in table.scan(row_filter=EqualTo("exchange", exchange)).plan_files()
              if field_id in (task.file.upper_bounds or {})]
    return datetime.fromtimestamp(max(bounds) / 1e6, UTC) if bounds else None
