"""Per-table statistics read from the catalog (current snapshot summaries): cheap, no data scan."""

from pyiceberg.catalog import Catalog

from k2_pipelines.lib.tables import NAMESPACE


def table_stats(catalog: Catalog) -> list[dict]:
    stats = []
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


def format_stats(stats: list[dict]) -> str:
    header = f"{'table':<28} {'rows':>12} {'files':>6} {'bytes':>14}  snapshot"
    lines = [header, "-" * len(header)]
    for s in stats:
        lines.append(f"{s['table']:<28} {s['rows']:>12,} {s['data_files']:>6} {s['bytes']:>14,}  {s['snapshot_id']}")
    return "\n".join(lines)
