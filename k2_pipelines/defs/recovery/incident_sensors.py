"""Closing incidents: a run launched to recover from an incident (tagged with it) succeeded."""

from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.recovery.health_sensors import BACK_AT_TAG
from k2_pipelines.defs.tags import INCIDENT_TAG
from k2_pipelines.lib.recovery.incidents import OPEN, Incident, incidents, record_incident


def _what_the_run_did(instance: dg.DagsterInstance, run_id: str) -> str:
    done = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.asset_materialization
        if materialization is None:
            raise ValueError(f"run {run_id}: a materialization event without its AssetMaterialization")
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        counts = ", ".join(f"{key} {metadata[key]:,}" for key in ("messages", "rows_written", "lag_after")
                           if key in metadata)
        done.append(f"{materialization.asset_key.to_user_string()}: {counts or 'materialized'}")
    return "; ".join(done) or "succeeded"


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, minimum_interval_seconds=30,
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Resolves the incident a recovery run was launched for, once that run succeeded, "
                                  "with the time to recovery")
def incident_resolution_sensor(context: dg.RunStatusSensorContext, iceberg: IcebergCatalogResource) -> dg.SkipReason:
    incident_id = context.dagster_run.tags.get(INCIDENT_TAG)
    if not incident_id:
        return dg.SkipReason("not a recovery run")
    catalog = iceberg.catalog()
    recorded: Sequence[Incident | None] = incidents(catalog, incident_id=incident_id)
    [incident] = recorded or [None]
    if incident is None or incident.status != OPEN:
        return dg.SkipReason(f"incident {incident_id} is not open")
    run = context.dagster_run
    ended = context.instance.get_run_stats(run.run_id).end_time
    resolved_at = datetime.fromtimestamp(ended, UTC) if ended else datetime.now(UTC)
    outcome = _what_the_run_did(context.instance, run.run_id)
    if BACK_AT_TAG in run.tags:
        back = (resolved_at - datetime.fromisoformat(run.tags[BACK_AT_TAG])).total_seconds()
        outcome += f"; recovered {back:.0f}s after the dependency answered again"
    action = f"{incident.action}; run {run.run_id} ({run.job_name})" if incident.action else f"run {run.run_id}"
    resolved = incident.resolve(action, outcome, run.run_id, resolved_at)
    record_incident(catalog, resolved)
    context.log.info(f"incident {incident_id} resolved after {resolved.time_to_recovery_seconds:.0f}s: {outcome}")
    return dg.SkipReason(f"resolved incident {incident_id}")
