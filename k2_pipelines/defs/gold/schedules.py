"""How the bars keep up: every hour, today's and yesterday's UTC days are rebuilt.

A schedule rather than an automation condition: trades arrive all day (drains every 15 minutes) and late (an ASX
trading date, loaded after its close, also holds the first hour of the UTC day before it), ASX has no trades on
weekends (an eager condition would wait for them), and a rebuild is idempotent and cheap (one day of trades). Older
days are rebuilt by a backfill of build_ohlcv, e.g. after an ASX reload.
"""

from datetime import timedelta

import dagster as dg

from k2_pipelines.defs.gold.jobs import build_ohlcv


@dg.schedule(job=build_ohlcv, cron_schedule="10 * * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Rebuild the bars of yesterday and today (UTC) every hour")
def build_ohlcv_hourly(context: dg.ScheduleEvaluationContext):
    tick = context.scheduled_execution_time
    for day in (tick.date() - timedelta(days=1), tick.date()):
        yield dg.RunRequest(run_key=f"{day}@{tick.isoformat()}", partition_key=day.isoformat())
