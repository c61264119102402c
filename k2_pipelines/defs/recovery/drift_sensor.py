"""Case 4: a drain's consumer group disagrees with the offsets stored in Iceberg (reset, deleted), or its topic no
longer holds what they count (recreated, deleted). The first is realigned from Iceberg by a runbook; the second is
an incident for a human, and the drain refuses to read (nothing skipped, nothing read twice)."""

import json
from datetime import UTC, datetime

import dagster as dg
from confluent_kafka import KafkaException

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.recovery.incident_runs import runbook_page, runbook_run_config, try_record
from k2_pipelines.defs.recovery.runbooks import TABLES, realign_consumer_offsets
from k2_pipelines.defs.tags import DRAIN_TAG
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.offset_drift import offset_drift
from k2_pipelines.lib.recovery.health import UNREACHABLE
from k2_pipelines.lib.recovery.incidents import Incident

_REFUSED = ("topic_recreated", "topic_missing")


def _draining(instance: dg.DagsterInstance, table: str) -> bool:
    """A drain between its Iceberg commit and its group commit disagrees for a moment: not drift."""
    return bool(instance.get_run_ids(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING],
                                                   tags={DRAIN_TAG: table}), limit=1))


@dg.sensor(job=realign_consumer_offsets, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Runbook offset_drift: compares each drain's consumer group and topic with the offsets stored "
                       "in Iceberg; launches a realignment, or opens an incident for a recreated topic")
def offset_drift_sensor(context: dg.SensorEvaluationContext, iceberg: IcebergCatalogResource,
                        binance_kafka: BinanceKafkaResource) -> dg.SensorResult:
    reported = json.loads(context.cursor) if context.cursor else {}  # table -> the refused drift last reported
    requests, notes = [], []
    for table in TABLES:
        target = binance_kafka.target(table)
        try:
            stored = stored_checkpoint(iceberg.catalog().load_table(target.table.identifier), target.topic).offsets
            if not stored or _draining(context.instance, table):
                continue
            drift = offset_drift(binance_kafka.servers(), target, stored)
        except (*UNREACHABLE, KafkaException) as error:  # the health sensors report these
            notes.append(f"{table}: {error}")
            continue
        notes.append(f"{table}: {drift.kind}")
        if drift.kind == "aligned":
            reported.pop(table, None)
            continue
        incident = Incident("topic_recreated" if drift.kind in _REFUSED else "offset_drift", target.topic,
                            datetime.now(UTC), context.sensor_name, f"{drift.kind}: {drift.detail}",
                            runbook_page("offset_drift"))
        if drift.kind in _REFUSED:
            fingerprint = f"{drift.kind}:{json.dumps(stored, sort_keys=True)}"
            if reported.get(table) != fingerprint and try_record(iceberg, incident.escalate(
                    "none: the drain refuses to read it", "a human must decide: restore the topic, or reset the "
                    "stored offsets for the new one (docs/runbooks/offset_drift.md)", None), context.log):
                reported[table] = fingerprint
            continue
        committed = json.dumps({str(p): o for p, o in sorted(drift.committed.items())})
        requests.append(dg.RunRequest(
            run_key=f"realign:{table}:{json.dumps(stored, sort_keys=True)}:{committed}",
            run_config=runbook_run_config("realign_group", incident, table=table)))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(reported),
                           skip_reason=None if requests else "; ".join(notes) or "nothing drained yet")
