"""Case 3: a drain or ASX load run failed. Transient failures are retried with exponential backoff (the retry
carries the incident; the incident sensor closes it when a retry succeeds), poison data is quarantined, a failed
quality gate is left to the quality sensor, anything else stays failed with an incident a human reads."""

import time
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg

from k2_pipelines.defs.asx.jobs import asx_load_job
from k2_pipelines.defs.binance.jobs import drain_jobs
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.recovery.failed_run_cursor import FailedRunCursor
from k2_pipelines.defs.recovery.failures import BUG, POISON, QUALITY, TRANSIENT, classify, run_errors
from k2_pipelines.defs.recovery.incident_runs import runbook_page, runbook_run_config, try_record
from k2_pipelines.defs.recovery.jobs import catch_up_after_outage
from k2_pipelines.defs.recovery.runbooks import quarantine_landing_file
from k2_pipelines.defs.tags import DRAIN_TAG, INCIDENT_TAG
from k2_pipelines.lib.recovery.health import UNREACHABLE
from k2_pipelines.lib.recovery.incidents import Incident, incidents

RETRIED_JOBS = [asx_load_job, *drain_jobs.values(), catch_up_after_outage]
ATTEMPT_TAG = "k2/retry-attempt"
MAX_ATTEMPTS = 3
FIRST_BACKOFF_SECONDS = 30  # then x4: 30 s, 2 min, 8 min
# the tags a retry keeps: what it runs (partitions), how it is limited, and the incident it belongs to
_KEPT_TAGS = ("dagster/partition", "dagster/asset_partition_range_start", "dagster/asset_partition_range_end",
              DRAIN_TAG, INCIDENT_TAG)


def backoff_seconds(attempt: int) -> float:
    return FIRST_BACKOFF_SECONDS * 4 ** (attempt - 1)


def _incident(iceberg: IcebergCatalogResource, run: dg.DagsterRun, detail: str, sensor: str) -> Incident:
    """A new incident, or the one the run was launched for (a failed recovery run: that incident goes on)."""
    if INCIDENT_TAG in run.tags:
        try:
            found = incidents(iceberg.catalog(), incident_id=run.tags[INCIDENT_TAG])
        except UNREACHABLE:  # the catalog is down: a new incident, recorded once it is back
            found = []
        if found:
            return replace(found[0], detail=f"{found[0].detail}; then {run.job_name} run {run.run_id} failed: "
                                            f"{detail}")
    return Incident("run_failed", run.run_id, datetime.now(UTC), sensor,
                    f"{run.job_name} run {run.run_id} failed: {detail}", runbook_page("run_failed"))


def _retry_request(run: dg.DagsterRun, attempt: int, incident_id: str) -> dg.RunRequest:
    tags = {k: v for k, v in run.tags.items() if k in _KEPT_TAGS} | {INCIDENT_TAG: incident_id,
                                                                    ATTEMPT_TAG: str(attempt)}
    return dg.RunRequest(run_key=f"retry:{run.run_id}", job_name=run.job_name, run_config=run.run_config, tags=tags)


@dg.sensor(jobs=[*RETRIED_JOBS, quarantine_landing_file], minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Runbook run_failed: classifies each failed drain or ASX load run; retries transient failures "
                       "with backoff, quarantines poison data, escalates bugs")
def failed_run_sensor(context: dg.SensorEvaluationContext, iceberg: IcebergCatalogResource) -> dg.SensorResult:
    cursor = FailedRunCursor.parse(context.cursor)
    requests, pending = [], []
    for retry in cursor.pending:  # retries waiting out their backoff
        if retry["due"] <= time.time():
            run = context.instance.get_run_by_id(retry["run_id"])
            if run:  # else deleted from the instance meanwhile: nothing left to retry
                requests.append(_retry_request(run, retry["attempt"], retry["incident_id"]))
        else:
            pending.append(retry)

    records, after = cursor.new_failures(context.instance)
    for record in records:
        run = record.dagster_run
        if run.job_name not in {job.name for job in RETRIED_JOBS}:
            continue
        failure = classify(run_errors(context.instance, run.run_id))
        if failure.kind == QUALITY:
            continue  # quality_sensor.py quarantines the batch
        incident = _incident(iceberg, run, f"{failure.kind}: {failure.error}", context.sensor_name)
        attempt = int(run.tags.get(ATTEMPT_TAG, 0)) + 1
        if failure.kind == TRANSIENT and attempt <= MAX_ATTEMPTS:
            wait = backoff_seconds(attempt)
            incident = replace(incident, action=f"retry {attempt} of {MAX_ATTEMPTS} after {wait:.0f}s")
            pending.append({"run_id": run.run_id, "attempt": attempt, "due": time.time() + wait,
                            "incident_id": incident.incident_id})
        elif failure.kind == POISON and "source_file" in failure.metadata:
            requests.append(dg.RunRequest(
                run_key=f"quarantine:{run.run_id}", job_name=quarantine_landing_file.name,
                run_config=runbook_run_config("move_landing_file", incident,
                                              path=failure.metadata["source_file"])))
        else:
            why = "retries exhausted" if failure.kind == TRANSIENT else \
                "no runbook can fix a bug" if failure.kind == BUG else "poison data with nothing to quarantine"
            incident = incident.escalate("none: stays failed", f"{why}; see the run's logs", None)
        try_record(iceberg, incident, context.log)
        context.log.info(f"{run.job_name} run {run.run_id}: {failure.kind} ({failure.error})")
    return dg.SensorResult(run_requests=requests, cursor=FailedRunCursor(after, pending).serialize())
