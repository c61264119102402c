"""`k2 drain binance`: drain micro-batches from Kafka into Iceberg outside Dagster (operators, tests, benchmarks)."""

import dagster as dg

from k2_pipelines.cli.dagster_home import prepare_dagster_home
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import Topics
from k2_pipelines.lib.drain.drain import (
    DrainAbandoned,
    DrainResult,
    drain,
    quotes_target,
    reader_for,
    trades_target,
)
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.catalog import load_k2_catalog
from k2_pipelines.lib.iceberg.tables import ensure_tables
from k2_pipelines.settings import bootstrap_servers


def describe(result: DrainResult) -> str:
    spans = ", ".join(f"[{p}] {result.offsets_from[p]}..{result.offsets_to[p]}" for p in sorted(result.offsets_to))
    dead = sum(result.dead_letters.values())
    return (f"{result.table}: {result.messages:,} messages -> {result.rows_written:,} rows, {dead:,} dead letters, "
            f"{result.duplicates_in_batch + result.duplicates_committed:,} duplicates, "
            f"{result.quarantined_repeats:,} repeats of quarantined rows, "
            f"{sum(result.breaks.values()):,} sequence breaks; offsets {spans}; lag "
            f"{sum(result.lag_after.values()):,}; {result.seconds:.2f}s")


def drain_binance(tables: list[str], topic: str | None, limits: Limits, until_caught_up: bool) -> int:
    catalog = load_k2_catalog()
    ensure_tables(catalog)
    registry = default_registry()
    topics = Topics()
    makers = {"trades": (trades_target, topics.trades), "quotes": (quotes_target, topics.quotes)}
    for table in tables:
        make, default_topic = makers[table]
        target = make(topic or default_topic)
        reader = reader_for(bootstrap_servers(), target)
        try:
            while True:
                try:
                    result = drain(catalog, reader, target, registry, limits)
                except DrainAbandoned as abandoned:  # other drains keep committing: each abandon is their progress
                    print(f"{target.table.identifier}: {abandoned}; draining on from the new offsets")
                    continue
                print(describe(result))
                if not until_caught_up or not result.messages or not sum(result.lag_after.values()):
                    break
        finally:
            reader.close()
    return 0


def run_drain_jobs(table: str) -> list[dg.ExecuteInProcessResult]:
    """The table's Dagster drain job, run after run in the persistent instance, until the topic is drained."""
    from k2_pipelines.definitions import defs

    prepare_dagster_home()
    job = defs().resolve_job_def(f"drain_binance_{table}")
    runs = []
    with dg.DagsterInstance.get() as instance:
        while True:
            runs.append(job.execute_in_process(instance=instance, raise_on_error=False, run_config={
                "loggers": {"console": {"config": {"log_level": "INFO"}}}}))
            metadata = runs[-1].asset_materializations_for_node(f"binance_{table}")
            if not runs[-1].success or not metadata or not metadata[0].metadata["lag_after"].value:
                return runs
