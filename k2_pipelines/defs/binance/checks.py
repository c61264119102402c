"""Data-quality checks of the drains: Great Expectations over the micro-batch a run drained, and the feed's health."""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
from confluent_kafka import KafkaException

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.quality.results import check_results, check_specs
from k2_pipelines.lib.binance.normalize import EXCHANGE
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.quality.checks import market_checks, stream_checks
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.quality.validations import MARKET_TABLES, validate_drain


def _drained(context: dg.AssetCheckExecutionContext, asset: str,
             checkpoint_run: str | None) -> tuple[str | None, int | None]:
    """The run whose batch to check (this one, if it drained; else the newest drain's) and its message count."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    run_id = context.run.run_id if event and event.run_id == context.run.run_id else checkpoint_run
    messages = event.asset_materialization.metadata.get("messages") if event and event.run_id == run_id else None
    return run_id, messages.value if isinstance(messages, dg.IntMetadataValue) else None


def _drain_checks(table: str) -> dg.AssetChecksDefinition:
    definition, id_column = MARKET_TABLES[table]
    asset = f"binance_{table}"
    catalogue = market_checks(table, definition.schema(), id_column, Thresholds(), datetime.now(UTC)) \
        + stream_checks(Thresholds(), gaps_tracked=table == "trades")

    @dg.multi_asset_check(specs=check_specs(asset, catalogue), name=f"{asset}_quality",
                          description=f"Great Expectations over the {table} a drain wrote, its gaps, dead letters and "
                                      "the feed's freshness")
    def quality(context: dg.AssetCheckExecutionContext, iceberg: IcebergCatalogResource,
                binance_kafka: BinanceKafkaResource, quality: QualityResource) -> Iterator[dg.AssetCheckResult]:
        catalog = iceberg.catalog()
        target = binance_kafka.target(table)
        checkpoint = stored_checkpoint(catalog.load_table(definition.identifier), target.topic)
        run_id, messages = _drained(context, asset, checkpoint.run_id)
        if run_id is None:
            raise dg.Failure(f"{target.topic} has not been drained into {definition.identifier} yet: no data to check")
        reader = binance_kafka.reader(target)
        try:
            newest_message = reader.newest_message_time()
        except KafkaException as error:
            context.log.warning(f"cannot read {target.topic}'s newest message: {error}")
            newest_message = None
        finally:
            reader.close()
        yield from check_results(validate_drain(catalog, asset, table, target.topic, EXCHANGE, run_id, messages,
                                                newest_message, quality.thresholds(), datetime.now(UTC)))

    return quality


binance_trades_quality = _drain_checks("trades")
binance_quotes_quality = _drain_checks("quotes")
