import os

import dagster as dg

from k2_pipelines.defs.binance.jobs import drain_jobs
from k2_pipelines.defs.binance.lag import table_lag
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource

# the drain cadence: at most one drain per table per interval, of whatever arrived since (a run costs Dagster a
# process start: `k2 bench runs`)
DRAIN_INTERVAL_SECONDS = int(os.environ.get("K2_DRAIN_INTERVAL_SECONDS", "30"))


@dg.sensor(
    jobs=list(drain_jobs.values()),
    minimum_interval_seconds=DRAIN_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a drain of a table whenever its topic has messages beyond the offsets stored in Iceberg; "
                "the run key is those offsets, so one range is never launched twice",
)
def binance_lag_sensor(context: dg.SensorEvaluationContext, iceberg: IcebergCatalogResource,
                       binance_kafka: BinanceKafkaResource) -> dg.SensorResult | dg.SkipReason:
    lags = [table_lag(table, iceberg, binance_kafka) for table in drain_jobs]
    requests = [dg.RunRequest(run_key=lag.run_key, job_name=drain_jobs[lag.table].name) for lag in lags if lag.messages]
    return dg.SensorResult(run_requests=requests) if requests else dg.SkipReason("; ".join(lag.note for lag in lags))
