"""Data-quality checks of the ASX loads: Great Expectations over what the run loaded, a report per trading date."""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from k2_pipelines.defs.asx.assets import asx_quotes, asx_reference_data, asx_trades
from k2_pipelines.defs.asx.resources import AsxLandingResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.quality.results import check_results, check_specs
from k2_pipelines.lib.asx.layouts import QUOTES, TRADES, CsvLayout
from k2_pipelines.lib.asx.validation import validate_market_load
from k2_pipelines.lib.iceberg.tables import REFERENCE_DATA
from k2_pipelines.lib.quality.checks import asx_checks, market_checks, reference_checks
from k2_pipelines.lib.quality.report import combined, save
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines.lib.quality.validations import MARKET_TABLES, market_load, reference_load, validate_reference_load


def _market_checks(layout: CsvLayout, asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    table, id_column = MARKET_TABLES[layout.kind]
    catalogue = market_checks(layout.kind, table.schema(), id_column, Thresholds(), datetime.now(UTC)) \
        + asx_checks(Thresholds())

    @dg.multi_asset_check(specs=check_specs(layout.asset, catalogue), name=f"{layout.asset}_quality",
                          description=f"Great Expectations over the {layout.kind} a load wrote, per trading date")
    def quality(context: dg.AssetCheckExecutionContext, iceberg: IcebergCatalogResource,
                asx_landing: AsxLandingResource, quality: QualityResource) -> Iterator[dg.AssetCheckResult]:
        catalog = iceberg.catalog()
        load = market_load(catalog, layout.kind, context.run.run_id) or market_load(catalog, layout.kind)
        if load is None:
            raise dg.Failure(f"nothing has been loaded into {asset.key.to_user_string()} yet: no data to check")
        run_id, first, last = load
        now = datetime.now(UTC)
        days = validate_market_load(catalog, layout, asx_landing.root(), run_id, first, last, quality.thresholds(),
                                    now)
        pages = {day.partition: save(day) for day in days}
        context.log.info(f"{layout.asset} {first}..{last}: checked {sum(d.rows for d in days):,} rows of run {run_id}")
        yield from check_results(combined(layout.asset, run_id, now, days), pages)

    return quality


asx_trades_quality = _market_checks(TRADES, asx_trades)
asx_quotes_quality = _market_checks(QUOTES, asx_quotes)


@dg.multi_asset_check(specs=check_specs("asx_reference_data", reference_checks(REFERENCE_DATA.schema())),
                      name="asx_reference_data_quality",
                      description="Great Expectations over the company info a load wrote")
def asx_reference_data_quality(context: dg.AssetCheckExecutionContext,
                               iceberg: IcebergCatalogResource) -> Iterator[dg.AssetCheckResult]:
    catalog = iceberg.catalog()
    run_id = reference_load(catalog, context.run.run_id) or reference_load(catalog)
    if run_id is None:
        raise dg.Failure(f"nothing has been loaded into {asx_reference_data.key.to_user_string()} yet")
    yield from check_results(validate_reference_load(catalog, "asx_reference_data", run_id,
                                                     datetime.now(UTC)))
