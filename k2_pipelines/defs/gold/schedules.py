"""How the bars keep up: every hour, today's and yesterday's UTC days are rebuilt.

A schedule rather than an automation condition: trades arrive all day (drains every 15 minutes) and late (an ASX
trading date, loaded after its close, also holds the first hour of the UTC day before it), ASX has no trades on
weekends (an eager condition would wait for them), and a rebuild is idempotent and cheap (one day of trades). Older
days are rebuilt by a backfill of build_ohlcv, e.g. after an ASX reload.
"""

from datetime import date, timedelta

import dagster as dg

from k2_pipelines.defs.gold.gating import Gate, held_back
from k2_pipelines.defs.gold.jobs import build_ohlcv
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.lib.recovery.health import UNREACHABLE

HELD_TAG = "k2/held-back"  # on a run requested for a held-back day: what held it (Gate.key)


def _shown_by(instance: dg.DagsterInstance, day: date, hold: str) -> str | None:
    """The run already requested for the day under the same hold, if any."""
    runs = instance.get_runs(dg.RunsFilter(job_name=build_ohlcv.name,
                                           tags={"dagster/partition": day.isoformat(), HELD_TAG: hold}), limit=1)
    return runs[0].run_id if runs else None


@dg.schedule(job=build_ohlcv, cron_schedule="10 * * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Rebuild the bars of yesterday and today (UTC) every hour; a day held back by failed "
                         "checks on its trades is requested once per hold (it fails, saying why), then skipped")
def build_ohlcv_hourly(context: dg.ScheduleEvaluationContext,
                       iceberg: IcebergCatalogResource) -> list[dg.RunRequest] | dg.SkipReason:
    tick = context.scheduled_execution_time
    days = [tick.date() - timedelta(days=1), tick.date()]
    try:
        gate = held_back(iceberg.catalog(), context.instance, days)
    except UNREACHABLE as error:  # each run gates itself anyway
        context.log.warning(f"cannot tell which days are held back ({type(error).__name__}: {error})")
        gate = Gate()
    # A held-back day is requested once per hold: that run fails saying why and the partition shows failed in the
    # UI, where people look. A red run every hour would bury other failures (and each would queue an orphan removal).
    requests, skipped = [], []
    for day in days:
        hold = gate.key(day)
        shown = _shown_by(context.instance, day, hold) if hold else None
        if shown:
            skipped.append(f"{day} is held back (run {shown} failed saying why)")
            continue
        requests.append(dg.RunRequest(run_key=f"{day}@{tick.isoformat()}", partition_key=day.isoformat(),
                                      tags={HELD_TAG: hold} if hold else None))
    for reason in skipped:
        context.log.info(f"not requested: {reason}")
    return requests or dg.SkipReason("; ".join(skipped))
