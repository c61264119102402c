from datetime import UTC, datetime

import dagster as dg
from pyiceberg.catalog import Catalog

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.tags import INCIDENT_TAG
from k2_pipelines.lib.avro.registry import Registry
from k2_pipelines.lib.drain.drain import DrainResult, DrainTarget, drain
from k2_pipelines.lib.drain.kafka_batch import Limits, OffsetsOutOfRange, TopicReader
from k2_pipelines.lib.metrics.push import push_drain
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.recovery.incidents import Incident, record_incident


class DrainConfig(dg.Config):
    """Bounds of one micro-batch: whichever is reached first ends it."""

    max_messages: int = Limits.max_messages
    max_bytes: int = Limits.max_bytes
    max_seconds: float = Limits.max_seconds


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


def drain_metadata(result: DrainResult) -> dict:
    by_symbol = "\n".join(f"| {symbol} | {rows:,} |" for symbol, rows in sorted(result.rows_by_symbol.items()))
    return {
        "messages": result.messages,
        "rows_written": result.rows_written,
        "rows_by_symbol": dg.MetadataValue.md(f"| symbol | rows |\n| --- | ---: |\n{by_symbol}"),
        "offsets": dg.MetadataValue.json({str(p): {"from": result.offsets_from[p], "to": result.offsets_to[p]}
                                          for p in sorted(result.offsets_to)}),
        "lag_after": sum(result.lag_after.values()),
        "dead_letters": sum(result.dead_letters.values()),
        "dead_letters_by_class": dg.MetadataValue.json(dict(result.dead_letters)),
        "rows_set_aside": sum(result.set_aside.values()),  # of dead_letters: rows that broke a row rule
        "rows_set_aside_by_rule": dg.MetadataValue.json(dict(result.set_aside)),
        "duplicates_dropped": result.duplicates_in_batch + result.duplicates_committed,
        "quarantined_repeats": result.quarantined_repeats,  # rows a quarantine took out, sent again
        "sequence_breaks": dg.MetadataValue.json(dict(result.breaks)),
        "snapshot_before": dg.MetadataValue.text(str(result.snapshot_before)),
        "snapshot_after": dg.MetadataValue.text(str(result.snapshot_after)),
        "commit_attempts": result.commit_attempts,
        "duration_seconds": round(result.seconds, 3),
    }


def _drain_asset(table: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"binance_{table}",
        group_name="binance",
        kinds={"iceberg", "kafka"},
        pool=f"k2_drain_{table}",  # one drain per table at a time (the drain also defends itself)
        description=f"One micro-batch of the Binance {table} topic into market_data.{table}, exactly once; bad "
                    "messages and rows breaking a row rule in market_data.dead_letters, sequence breaks in "
                    "market_data.sequence_gaps",
    )
    def drain_asset(context: dg.AssetExecutionContext, config: DrainConfig, iceberg: IcebergCatalogResource,
                    binance_kafka: BinanceKafkaResource, quality: QualityResource) -> dg.MaterializeResult:
        target = binance_kafka.target(table)
        reader = binance_kafka.reader(target)
        try:
            result = drain_batch(iceberg.catalog(), reader, target, binance_kafka.registry(),
                                 Limits(config.max_messages, config.max_bytes, config.max_seconds),
                                 quality.thresholds(), context.run.run_id)
        except OffsetsOutOfRange as error:
            raise dg.Failure(description=str(error), allow_retries=False) from error
        finally:
            reader.close()
        context.log.info(f"{target.topic}: {result.messages} messages, {result.rows_written} rows, "
                         f"lag after {sum(result.lag_after.values())}")
        # a drain run that recovers from an incident says so (the incident sensor closes it when the run succeeds)
        incident = {"incident": context.run.tags[INCIDENT_TAG]} if INCIDENT_TAG in context.run.tags else {}
        return dg.MaterializeResult(metadata=drain_metadata(result) | incident)

    return drain_asset


binance_trades = _drain_asset("trades")
binance_quotes = _drain_asset("quotes")
