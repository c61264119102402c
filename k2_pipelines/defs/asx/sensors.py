import json
from datetime import date

import dagster as dg

from k2_pipelines.defs.asx.jobs import asx_load_job
from k2_pipelines.defs.asx.partitions import asx_trading_days
from k2_pipelines.defs.asx.resources import AsxLandingResource
from k2_pipelines.lib.asx.landing import digest, fingerprint, landing_files, trading_dates
from k2_pipelines.lib.utils.day_ranges import consecutive_day_ranges

# Dagster's tags for a run over a partition range (what the UI sets for a single-run backfill)
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def plan_runs(
    landing_state: dict, previous: dict, first_key: str, last_key: str
) -> tuple[list[dg.RunRequest], list[str]]:
    """(run requests for the trading dates whose files are new, changed or gone; dates outside the partitions).

    `landing_state` and `previous` map each file to {"fp": fingerprint, "dates": [partition keys]}.
    """
    changed = {path for path in landing_state.keys() | previous.keys()
               if landing_state.get(path, {}).get("fp") != previous.get(path, {}).get("fp")}
    info_changed = any(path.endswith("company_info.csv") for path in changed)
    affected: set[str] = set()
    for path in (landing_state.keys() | previous.keys()) if info_changed else changed:
        affected.update(landing_state.get(path, {}).get("dates", []), previous.get(path, {}).get("dates", []))
    skipped = sorted(key for key in affected if not first_key <= key <= last_key)
    requests = []
    wanted = [date.fromisoformat(key) for key in affected if first_key <= key <= last_key]
    for first, last in consecutive_day_ranges(wanted):
        start, end = first.isoformat(), last.isoformat()
        sources = [f"{path}={state['fp']}" for path, state in landing_state.items()
                   if not state["dates"] or any(start <= key <= end for key in state["dates"])]
        run_key = f"asx:{start}..{end}:{digest(sources)}"
        if start == end:
            requests.append(dg.RunRequest(run_key=run_key, partition_key=start))
        else:
            requests.append(dg.RunRequest(run_key=run_key, tags={RANGE_START_TAG: start, RANGE_END_TAG: end}))
    return requests, skipped


@dg.sensor(
    job=asx_load_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Loads the trading dates whose ASX landing files are new or changed (one run per contiguous range)",
)
def asx_landing_sensor(context: dg.SensorEvaluationContext, asx_landing: AsxLandingResource) -> dg.SensorResult:
    previous = json.loads(context.cursor) if context.cursor else {}
    landing_state = {}
    for path in landing_files(asx_landing.root()):
        known = previous.get(str(path), {})
        fp = fingerprint(path)
        if known.get("fp") == fp or path.name == "company_info.csv":
            dates = known.get("dates", [])
        else:
            dates = trading_dates(path)
        landing_state[str(path)] = {"fp": fp, "dates": dates}
    first_key = asx_trading_days.start.strftime("%Y-%m-%d")
    last_key = asx_trading_days.get_last_partition_key()
    if last_key is None:  # the cursor is kept: the files are planned once their dates have partitions
        return dg.SensorResult(skip_reason=f"no ASX partition yet: the first trading day {first_key} "
                                           "(K2_ASX_FIRST_DAY) is after tomorrow")
    requests, skipped = plan_runs(landing_state, previous, first_key, last_key)
    if skipped:
        context.log.warning(f"dates outside the partitions {first_key}..{last_key} are not loaded: {skipped}")
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(landing_state))
