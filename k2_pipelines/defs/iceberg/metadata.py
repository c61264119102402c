"""Dagster metadata that every K2 table load reports."""

import dagster as dg
from pyiceberg.catalog import Catalog

from k2_pipelines.lib.asx.load import LoadResult


def _markdown_counts(title: str, counts: dict) -> str:
    lines = [f"| {title} | rows |", "| --- | ---: |"] + [f"| {key} | {value:,} |" for key, value in counts.items()]
    return "\n".join(lines)


def load_metadata(result: LoadResult, catalog: Catalog) -> dict:
    schema = catalog.load_table(result.table).schema()
    # a ranged run reports once for all its partitions: a per-partition row count only makes sense for one
    single = {"dagster/row_count": result.rows_written} if len(result.rows_by_day) == 1 else {}
    return single | {
        "table": result.table,
        "rows_read": result.rows_read,
        "rows_written": result.rows_written,
        "rows_rejected": result.rows_rejected,
        "rows_by_partition": dg.MetadataValue.md(_markdown_counts("partition", result.rows_by_day)),
        "rejects_by_reason": dg.MetadataValue.json(result.rejects_by_reason),
        "snapshot_before": dg.MetadataValue.int(result.commit.snapshots_before[result.table] or 0),
        "snapshot_after": dg.MetadataValue.int(result.commit.snapshots_after[result.table] or 0),
        "commit_attempts": result.commit.attempts,
        "source_files": dg.MetadataValue.json(result.source_files),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.field_type), description=f.doc) for f in schema.fields]
        ),
    }
