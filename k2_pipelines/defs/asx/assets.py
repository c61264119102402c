from datetime import date
from typing import TypedDict

import dagster as dg

from k2_pipelines.defs.asx.partitions import asx_trading_days
from k2_pipelines.defs.asx.resources import AsxLandingResource
from k2_pipelines.defs.iceberg.metadata import load_metadata
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.lib.asx.layouts import QUOTES, TRADES, CsvLayout
from k2_pipelines.lib.asx.load import load_market_days, load_reference_data
from k2_pipelines.lib.asx.parse import UnreadableFileError
from k2_pipelines.lib.metrics.push import push_asx


class _AssetOptions(TypedDict):
    partitions_def: dg.DailyPartitionsDefinition
    backfill_policy: dg.BackfillPolicy
    group_name: str
    kinds: set[str]


_COMMON = _AssetOptions(
    partitions_def=asx_trading_days,
    backfill_policy=dg.BackfillPolicy.single_run(),  # a date range is parsed and committed once
    group_name="asx",
    kinds={"iceberg", "csv"},
)


def _fail_unreadable(error: UnreadableFileError) -> dg.Failure:
    # the file is named in the failure so that the failed-run runbook can quarantine it
    return dg.Failure(description=str(error), metadata={"error": str(error), "source_file": str(error.path)},
                      allow_retries=False)


@dg.asset(**_COMMON, description="ASX company info (company_info.csv) in market_data.reference_data")
def asx_reference_data(
    context: dg.AssetExecutionContext, iceberg: IcebergCatalogResource, asx_landing: AsxLandingResource
) -> dg.MaterializeResult:
    catalog = iceberg.catalog()
    try:
        result = load_reference_data(catalog, asx_landing.root(), context.run.run_id)
    except UnreadableFileError as error:
        raise _fail_unreadable(error) from error
    push_asx(result)  # to K2_PUSHGATEWAY_URL if set; a failed push only logs a warning
    return dg.MaterializeResult(metadata=load_metadata(result, catalog))


def _market_asset(layout: CsvLayout) -> dg.AssetsDefinition:
    @dg.asset(
        name=layout.asset,
        deps=[asx_reference_data],
        description=f"ASX {layout.kind} of each trading date in market_data.{layout.kind} (v2), bad rows (and rows "
                    "breaking a row rule) in market_data.rejects",
        **_COMMON,
    )
    def load(
        context: dg.AssetExecutionContext, iceberg: IcebergCatalogResource, asx_landing: AsxLandingResource,
        quality: QualityResource,
    ) -> dg.MaterializeResult:
        keys = context.partition_key_range
        first, last = date.fromisoformat(keys.start), date.fromisoformat(keys.end)
        catalog = iceberg.catalog()
        try:
            result = load_market_days(catalog, asx_landing.root(), layout, first, last, context.run.run_id,
                                      quality.thresholds())
        except UnreadableFileError as error:
            raise _fail_unreadable(error) from error
        push_asx(result)
        context.log.info(f"{layout.asset} {first}..{last}: {result.rows_written} rows, {result.rows_rejected} rejected")
        return dg.MaterializeResult(metadata=load_metadata(result, catalog))

    return load


asx_trades = _market_asset(TRADES)
asx_quotes = _market_asset(QUOTES)
