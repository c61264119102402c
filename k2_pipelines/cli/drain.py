"""`k2 drain binance`: what the Dagster drain assets run (lib/runs/drain_batch.py `drain_batch`), outside Dagster
(operators, tests, benchmarks): micro-batches from Kafka into Iceberg, exactly once, each one's metrics pushed. It
reads the same settings as the assets' unconfigured resources, and starts without importing Dagster."""

import argparse
import sys
from typing import TYPE_CHECKING

from k2_pipelines.lib.drain.kafka_batch import Limits

if TYPE_CHECKING:
    from k2_pipelines.lib.drain.drain import DrainResult


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sources = commands.add_parser("drain", help="drain Kafka into Iceberg (what the Dagster drain assets run)") \
        .add_subparsers(dest="source", required=True)
    binance = sources.add_parser("binance", help="Binance trades/quotes topics into market_data tables")
    binance.add_argument("--table", choices=["trades", "quotes", "all"], default="all")
    binance.add_argument("--topic", help="read this topic instead of the default one")
    binance.add_argument("--max-messages", type=int, default=Limits.max_messages)
    binance.add_argument("--max-bytes", type=int, default=Limits.max_bytes)
    binance.add_argument("--max-seconds", type=float, default=Limits.max_seconds)
    binance.add_argument("--until-caught-up", action="store_true", help="drain batch after batch until no lag")
    binance.set_defaults(run=drain_binance)


def describe(result: "DrainResult") -> str:
    spans = ", ".join(f"[{p}] {result.offsets_from[p]}..{result.offsets_to[p]}" for p in sorted(result.offsets_to))
    dead = sum(result.dead_letters.values())
    return (f"{result.table}: {result.messages:,} messages -> {result.rows_written:,} rows, {dead:,} dead letters, "
            f"{result.duplicates_in_batch + result.duplicates_committed:,} duplicates, "
            f"{result.quarantined_repeats:,} repeats of quarantined rows, "
            f"{sum(result.breaks.values()):,} sequence breaks; offsets {spans}; lag "
            f"{sum(result.lag_after.values()):,}; {result.seconds:.2f}s")


def drain_binance(args: argparse.Namespace) -> int:
    from k2_pipelines.lib.avro.registry import default_registry
    from k2_pipelines.lib.binance.producer import Topics
    from k2_pipelines.lib.drain.drain import DrainAbandoned, quotes_target, reader_for, trades_target
    from k2_pipelines.lib.drain.kafka_batch import OffsetsOutOfRange
    from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
    from k2_pipelines.lib.iceberg.tables import ensure_tables
    from k2_pipelines.lib.quality.thresholds import DEFAULTS
    from k2_pipelines.lib.runs.drain_batch import drain_batch
    from k2_pipelines.settings import bootstrap_servers

    tables = ["trades", "quotes"] if args.table == "all" else [args.table]
    if args.topic and len(tables) > 1:
        raise SystemExit("k2 drain: --topic needs --table trades or --table quotes")
    limits = Limits(args.max_messages, args.max_bytes, args.max_seconds)
    # what the assets' resources give unconfigured: the same catalog, broker, registry and thresholds
    catalog, registry = load_k2_catalog(), default_registry()
    ensure_tables(catalog)
    targets = {"trades": trades_target(args.topic or Topics.trades),
               "quotes": quotes_target(args.topic or Topics.quotes)}
    for table in tables:
        target = targets[table]
        reader = reader_for(bootstrap_servers(), target)
        try:
            while True:
                try:
                    result = drain_batch(catalog, reader, target, registry, limits, DEFAULTS)
                except DrainAbandoned as abandoned:  # other drains keep committing: each abandon is their progress
                    print(f"{target.table.identifier}: {abandoned}; draining on from the new offsets")
                    continue
                except OffsetsOutOfRange as error:  # as the asset, which fails without a retry: no retry can help
                    print(f"k2 drain: {error}", file=sys.stderr)
                    return 1
                print(describe(result))
                if not args.until_caught_up or not result.messages or not sum(result.lag_after.values()):
                    break
        finally:
            reader.close()
    return 0
