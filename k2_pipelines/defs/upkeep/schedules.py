import dagster as dg

from k2_pipelines.defs.upkeep.jobs import compact_tables, expire_snapshots_job, remove_orphan_files_job

# nightly in Sydney, after the ASX close and before its open; one after the other (dagster.yaml runs one at a time)
upkeep_schedules = [
    dg.ScheduleDefinition(name=f"{job.name}_nightly", job=job, cron_schedule=cron, execution_timezone="Australia/Sydney",
                          default_status=dg.DefaultScheduleStatus.RUNNING)
    for job, cron in ((compact_tables, "0 1 * * *"), (expire_snapshots_job, "0 2 * * *"),
                      (remove_orphan_files_job, "0 3 * * *"))
]
