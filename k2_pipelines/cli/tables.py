"""`k2 tables`: rows, files, bytes and current snapshot of each of K2's Iceberg tables."""

import argparse
import json


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    tables = commands.add_parser("tables", help="K2's Iceberg tables: rows, files, bytes, current snapshot")
    tables.add_argument("--json", action="store_true")
    tables.set_defaults(run=show_tables)


def show_tables(args: argparse.Namespace) -> int:
    from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
    from k2_pipelines.lib.iceberg.stats import format_stats, table_stats
    from k2_pipelines.lib.iceberg.tables import ensure_tables

    catalog = load_k2_catalog()
    ensure_tables(catalog)
    stats = table_stats(catalog)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
