from datetime import UTC, datetime

import dagster as dg

from k2_pipelines.defs.binance.jobs import drain_jobs
from k2_pipelines.defs.binance.lag import Lag, table_lag
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.settings import settings

# The batch policy. A drain run costs Dagster a process start, ~7.7 CPU s compiled against ~0.15 s of draining a
# quiet stream (`k2 bench runs`): a run every 30 s per table is half a core. So a table is drained when a full batch
# waits (its start is then paid for by the work), else once its newest drain is this old: drained rows are at most
# this stale (until fresh reads of the Kafka tail, issue 20). 300 s: 576 runs a day for two tables, 0.05 cores.
DRAIN_INTERVAL_SECONDS = settings().drain_interval_seconds
FULL_BATCH_MESSAGES = Limits.max_messages  # a drain run's default batch


def drain_due(lag: Lag, now: datetime) -> bool:
    if not lag.messages:
        return False
    return (lag.messages >= FULL_BATCH_MESSAGES or lag.drained_at is None
            or (now - lag.drained_at).total_seconds() >= DRAIN_INTERVAL_SECONDS)


def _waiting(lag: Lag, now: datetime) -> str:
    if not lag.messages or lag.drained_at is None:
        return lag.note
    return f"{lag.note}, drained {(now - lag.drained_at).total_seconds():.0f} s ago " \
           f"(every {DRAIN_INTERVAL_SECONDS} s or at {FULL_BATCH_MESSAGES:,} messages)"


@dg.sensor(
    jobs=list(drain_jobs.values()),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a drain of a table when a full batch waits in its topic, or when messages wait and its "
                "newest drain is K2_DRAIN_INTERVAL_SECONDS old; the run key is the stored offsets, so one range is "
                "never launched twice",
)
def binance_lag_sensor(context: dg.SensorEvaluationContext, iceberg: IcebergCatalogResource,
                       binance_kafka: BinanceKafkaResource) -> dg.SensorResult | dg.SkipReason:
    lags, now = [table_lag(table, iceberg, binance_kafka) for table in drain_jobs], datetime.now(UTC)
    requests = [dg.RunRequest(run_key=lag.run_key, job_name=drain_jobs[lag.table].name) for lag in lags
                if drain_due(lag, now)]
    return dg.SensorResult(run_requests=requests) if requests else \
        dg.SkipReason("; ".join(_waiting(lag, now) for lag in lags))
