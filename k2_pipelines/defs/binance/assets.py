import dagster as dg

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.tags import INCIDENT_TAG
from k2_pipelines.lib.drain.drain import DrainResult
from k2_pipelines.lib.drain.kafka_batch import Limits, OffsetsOutOfRange
from k2_pipelines.lib.runs.drain_batch import drain_batch


class DrainConfig(dg.Config):
    """Bounds of one micro-batch: whichever is reached first ends it."""

    max_messages: int = Limits.max_messages
    max_bytes: int = Limits.max_bytes
    max_seconds: float = Limits.max_seconds


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
