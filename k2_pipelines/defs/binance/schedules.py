import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from k2_pipelines.defs.binance.jobs import drain_jobs
from k2_pipelines.defs.binance.lag import table_lag
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource


def _fallback(table: str, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(name=f"{job.name}_every_15_minutes", job=job, cron_schedule="*/15 * * * *",
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="The fallback if the lag sensor is off or misses a tick; like the sensor, it skips a "
                             "topic without lag, or whose broker cannot be reached (no storm of failing drains)")
    def fallback(context: dg.ScheduleEvaluationContext, iceberg: IcebergCatalogResource,
                 binance_kafka: BinanceKafkaResource) -> dg.RunRequest | dg.SkipReason:
        lag = table_lag(table, iceberg, binance_kafka)
        return dg.RunRequest(run_key=lag.run_key) if lag.messages else dg.SkipReason(lag.note)

    return fallback


drain_schedules = [_fallback(table, job) for table, job in drain_jobs.items()]
