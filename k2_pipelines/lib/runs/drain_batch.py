"""One micro-batch as the Dagster drain asset and `k2 drain binance` both run it: the drain, then what follows it
outside the table (metrics pushed, an incident when the drain's position was lost). Not Dagster-specific, so that
the command starts without importing Dagster."""

from datetime import UTC, datetime

from pyiceberg.catalog import Catalog

from k2_pipelines.lib.avro.registry import Registry
from k2_pipelines.lib.drain.drain import DrainResult, DrainTarget, drain
from k2_pipelines.lib.drain.kafka_batch import Limits, TopicReader
from k2_pipelines.lib.metrics.push import push_drain
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.recovery.incidents import Incident, record_incident


def drain_batch(catalog: Catalog, reader: TopicReader, target: DrainTarget, registry: Registry, limits: Limits,
                thresholds: Thresholds, run_id: str | None = None) -> DrainResult:
    """One micro-batch of the target's topic into its table, exactly once, and its metrics pushed (to
    K2_PUSHGATEWAY_URL if set; a failed push only logs a warning): what the drain asset runs, and `k2 drain binance`
    batch after batch. OffsetsOutOfRange when the stored offsets are ones the topic cannot serve (no retry helps),
    DrainAbandoned when other drains committed first every time."""
    result = drain(catalog, reader, target, registry, limits, run_id, thresholds)
    if result.resumed_from_group:
        record_incident(catalog, position_lost(result))
    push_drain(result)
    return result


def position_lost(result: DrainResult) -> Incident:
    """The record of a drain that found no checkpoint anywhere and resumed from its group's offsets."""
    detail = (f"{result.table} holds no drain checkpoint of {result.topic}, in any snapshot or in its properties "
              f"(removed by another engine?); resumed from the group's offsets {result.resumed_from_group}, never "
              f"from 0: {result.duplicates_committed:,} messages read again were dropped as duplicates")
    found = Incident("drain_position_lost", result.table, datetime.now(UTC), "drain", detail,
                     "docs/runbooks/drain_position_lost.md")
    return found.resolve("resumed from the consumer group's committed offsets",
                         f"run {result.run_id} committed offsets {result.offsets_to}", result.run_id)
