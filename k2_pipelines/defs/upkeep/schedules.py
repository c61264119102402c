import dagster as dg

from k2_pipelines.defs.upkeep.jobs import compact_tables, expire_snapshots_job, remove_orphan_files_job
from k2_pipelines.defs.upkeep.prune_runs import prune_runs
from k2_pipelines.lib.iceberg.tables import DRAINED_TABLES

# nightly in Sydney, after the ASX close and before its open; one after the other (dagster.yaml runs one at a time)
upkeep_schedules = [
    dg.ScheduleDefinition(name=f"{job.name}_nightly", job=job, cron_schedule=cron,
                          execution_timezone="Australia/Sydney", default_status=dg.DefaultScheduleStatus.RUNNING)
    for job, cron in ((compact_tables, "0 1 * * *"), (expire_snapshots_job, "0 2 * * *"),
                      (remove_orphan_files_job, "0 3 * * *"))
]
# hourly: an hour of drains is a few hundred runs, so each prune is short and the instance never grows a day's worth
prune_runs_hourly = dg.ScheduleDefinition(name="prune_runs_hourly", job=prune_runs, cron_schedule="40 * * * *",
                                          default_status=dg.DefaultScheduleStatus.RUNNING)
# hourly for the tables every drain commits to: their retention window is hours (DRAINED_RETENTION_HOURS)
expire_drained_tables_hourly = dg.ScheduleDefinition(
    name="expire_drained_tables_hourly", job=expire_snapshots_job, cron_schedule="10 * * * *",
    run_config={"ops": {"expire": {"config": {"tables": [definition.name for definition in DRAINED_TABLES]}}}},
    default_status=dg.DefaultScheduleStatus.RUNNING)
