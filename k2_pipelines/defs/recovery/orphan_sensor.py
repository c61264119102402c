"""Case 7: a run that writes tables failed; the files it wrote but never committed are orphans. Once the safety age
has passed since it failed, orphan removal runs (it also runs nightly)."""

import time
from datetime import UTC, datetime

import dagster as dg

from k2_pipelines.defs.gold.jobs import build_ohlcv
from k2_pipelines.defs.recovery.failed_run_cursor import FailedRunCursor
from k2_pipelines.defs.recovery.failed_runs import RETRIED_JOBS
from k2_pipelines.defs.recovery.incident_runs import runbook_page, runbook_run_config
from k2_pipelines.defs.recovery.runbooks import quarantine_bad_batch, release_quarantined_rows, replay_dead_letters_job
from k2_pipelines.lib.recovery.incidents import Incident
from k2_pipelines.lib.upkeep.orphans import MIN_ORPHAN_AGE

# defs/upkeep's jobs by name: upkeep imports recovery (prune_runs keeps what the recovery sensors need), never the
# reverse; test_definitions checks that each name is a job
REMOVE_ORPHAN_FILES, COMPACT_TABLES = "remove_orphan_files", "compact_tables"
WRITERS = {COMPACT_TABLES, build_ohlcv.name, *(job.name for job in RETRIED_JOBS),
           *(job.name for job in (quarantine_bad_batch, release_quarantined_rows, replay_dead_letters_job))}


@dg.sensor(job_name=REMOVE_ORPHAN_FILES, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Runbook orphan_files: after a run that writes tables failed, removes the files it left once "
                       "the safety age has passed")
def orphan_cleanup_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    cursor = FailedRunCursor.parse(context.cursor)
    records, after = cursor.new_failures(context.instance)
    pending = cursor.pending + [{"run_id": record.dagster_run.run_id, "job": record.dagster_run.job_name,
                                 "failed_at": record.update_timestamp.timestamp()}
                                for record in records if record.dagster_run.job_name in WRITERS]
    due = [p for p in pending if p["failed_at"] + MIN_ORPHAN_AGE.total_seconds() <= time.time()]
    requests = []
    if due:  # one removal covers every failed run due; its files are older than the safety age by now
        first = min(p["failed_at"] for p in due)
        incident = Incident("orphan_files", ", ".join(p["run_id"] for p in due),
                            datetime.fromtimestamp(first, UTC), context.sensor_name,
                            "files of failed runs: " + ", ".join(f"{p['job']} {p['run_id']}" for p in due),
                            runbook_page("orphan_files"))
        requests.append(dg.RunRequest(
            run_key=f"orphans-after:{max(p['failed_at'] for p in due)}",
            run_config=runbook_run_config("remove_orphans", incident,
                                          older_than_hours=MIN_ORPHAN_AGE.total_seconds() / 3600)))
    return dg.SensorResult(run_requests=requests,
                           cursor=FailedRunCursor(after, [p for p in pending if p not in due]).serialize())
