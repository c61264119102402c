import dagster as dg

from k2_pipelines.defs.binance.jobs import drain_jobs

# the fallback if the lag sensor is off or misses a tick
drain_schedules = [
    dg.ScheduleDefinition(name=f"{job.name}_every_15_minutes", job=job, cron_schedule="*/15 * * * *",
                          default_status=dg.DefaultScheduleStatus.RUNNING)
    for job in drain_jobs.values()
]
