"""`k2 gold build`: rebuild the OHLCV bars of a range of UTC days in one build_ohlcv run (a CLI backfill)."""

from datetime import date

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog

from k2_pipelines.cli.dagster_home import prepare_dagster_home
from k2_pipelines.defs.asx.sensors import RANGE_END_TAG, RANGE_START_TAG
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.utils.day_ranges import consecutive_day_ranges


def run_build_ohlcv(first: date, last: date) -> dg.ExecuteInProcessResult:
    """The build_ohlcv job over UTC days first..last, recorded in the persistent instance (where the gate finds the
    trades' check results)."""
    from k2_pipelines.definitions import defs

    prepare_dagster_home()
    with dg.DagsterInstance.get() as instance:
        return defs().resolve_job_def("build_ohlcv").execute_in_process(
            instance=instance, raise_on_error=False,
            tags={RANGE_START_TAG: first.isoformat(), RANGE_END_TAG: last.isoformat()},
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})


def report(result: dg.ExecuteInProcessResult, first: date, last: date) -> None:
    # a ranged run reports each asset once for all its days (one event per day, same metadata)
    reported = {e.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}
    for asset, metadata in sorted(reported.items()):
        print(f"  {asset} {first}..{last}: {metadata['trades_read'].value:,} trades -> {metadata['bars'].value:,} bars")
    for failure in (e for e in result.all_events if e.is_step_failure):
        print(f"  {failure.step_key} FAILED: {failure.step_failure_data.error.message.strip()}")
    print(f"  run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")


def trade_day_ranges(catalog: Catalog) -> list[tuple[date, date]]:
    """The runs of consecutive UTC days that hold trades (from the timestamps: for the demo's small tables)."""
    times = catalog.load_table(TRADES.identifier).scan(selected_fields=("timestamp",)).to_arrow()["timestamp"]
    return consecutive_day_ranges(pc.unique(times.cast(pa.date32())).to_pylist())
