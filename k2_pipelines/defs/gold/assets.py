from datetime import date, timedelta

import dagster as dg

from k2_pipelines.defs.asx.assets import asx_trades
from k2_pipelines.defs.binance.assets import binance_trades
from k2_pipelines.defs.gold.gating import held_back, held_back_failure
from k2_pipelines.defs.gold.partitions import utc_days
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.lib.gold.ohlcv import BarsResult, rebuild_day
from k2_pipelines.lib.iceberg.tables import OHLCV_TABLES

# UTC day D holds trades of ASX trading dates D and D+1 (Sydney is ahead). Dagster's time-window mapping refuses
# partitions in different time zones, so the graph maps D to trading date D, which holds most of them; the rebuild
# itself reads the trades by event time, whatever their trading date.
_ASX_TRADES = dg.AssetDep(asx_trades, partition_mapping=dg.IdentityPartitionMapping())


def _metadata(results: list[BarsResult]) -> dict:
    symbols = sorted({s for r in results for s in r.trades_by_symbol})
    lines = ["| day | trades | bars | snapshot |", "| --- | ---: | ---: | --- |"] + [
        f"| {r.day} | {r.trades_read:,} | {r.bars_written:,} | {r.snapshot_after} |" for r in results]
    single = {"dagster/row_count": results[0].bars_written} if len(results) == 1 else {}
    return single | {
        "table": results[0].table,
        "bars": sum(r.bars_written for r in results),
        "trades_read": sum(r.trades_read for r in results),
        "symbols": dg.MetadataValue.json(symbols),
        "bars_by_symbol": dg.MetadataValue.json(
            {s: sum(r.bars_by_symbol.get(s, 0) for r in results) for s in symbols}),
        "by_day": dg.MetadataValue.md("\n".join(lines)),
        "snapshot": dg.MetadataValue.text(str(results[-1].snapshot_after)),
        "commit_attempts": sum(r.commit_attempts for r in results),
    }


def _bars_asset(interval: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"ohlcv_{interval}",
        group_name="gold",
        kinds={"iceberg", "duckdb"},
        partitions_def=utc_days,
        backfill_policy=dg.BackfillPolicy.single_run(),  # a range of days in one run, one commit per day
        deps=[_ASX_TRADES, binance_trades],  # downstream of the trades' blocking quality checks
        description=f"{interval} OHLCV bars of every symbol per UTC day in {OHLCV_TABLES[interval].identifier}, "
                    "rebuilt from market_data.trades: a rerun replaces the day's bars, never adds to them. A day "
                    "holding trades whose blocking checks failed (in their load or drain run) fails, unbuilt",
    )
    def build(context: dg.AssetExecutionContext, iceberg: IcebergCatalogResource) -> dg.MaterializeResult:
        keys = context.partition_key_range
        first, last = date.fromisoformat(keys.start), date.fromisoformat(keys.end)
        days = [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
        catalog = iceberg.catalog()
        # the trades' checks ran in other runs (loads, drains): all days pass the gate before any is committed
        gate = held_back(catalog, context.instance, days)
        for note in gate.notes:
            context.log.warning(f"not held back, but unchecked: {note}")
        if gate.holds:
            raise held_back_failure(f"ohlcv_{interval}", days, gate)
        results = []
        for day in days:
            result = rebuild_day(catalog, interval, day, context.run.run_id)
            context.log.info(f"ohlcv_{interval} {result.day}: {result.trades_read:,} trades, "
                             f"{result.bars_written:,} bars, snapshot {result.snapshot_after}")
            results.append(result)
        return dg.MaterializeResult(metadata=_metadata(results))

    return build


ohlcv_1m = _bars_asset("1m")
ohlcv_1h = _bars_asset("1h")
ohlcv_1d = _bars_asset("1d")
