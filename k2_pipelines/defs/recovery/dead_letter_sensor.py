"""Case 6: dead letters accumulate. Once a fix lets some of them decode (a schema registered late, say), a replay
re-drives them; while none can, past a threshold, a human is asked for that fix."""

import json
import uuid
from datetime import UTC, datetime

import dagster as dg

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.recovery.incident_runs import runbook_page, runbook_run_config, try_record
from k2_pipelines.defs.recovery.runbooks import TABLES, replay_dead_letters_job
from k2_pipelines.lib.drain.dead_letter_replay import replay_dead_letters
from k2_pipelines.lib.recovery.health import UNREACHABLE
from k2_pipelines.lib.recovery.incidents import Incident


@dg.sensor(job=replay_dead_letters_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Runbook dead_letters_accumulating: replays a table's dead letters when some decode now; asks "
                       "for a fix when too many cannot")
def dead_letter_sensor(context: dg.SensorEvaluationContext, iceberg: IcebergCatalogResource,
                       binance_kafka: BinanceKafkaResource, quality: QualityResource) -> dg.SensorResult:
    reported = json.loads(context.cursor) if context.cursor else {}  # table -> dead letters last reported
    requests, notes = [], []
    for table in TABLES:
        target = binance_kafka.target(table)
        try:
            plan = replay_dead_letters(iceberg.catalog(), target, binance_kafka.registry(),
                                       f"plan-{uuid.uuid4().hex}", dry_run=True, thresholds=quality.thresholds())
        except UNREACHABLE as error:  # the storage health sensor reports it
            notes.append(f"{target.topic}: {error}")
            continue
        notes.append(f"{target.topic}: {plan.dead_letters_seen} dead letters, {plan.landed} would land")
        detail = (f"{plan.dead_letters_seen:,} dead letters of {target.topic}: {plan.landed:,} decode now, "
                  f"{plan.still_dead:,} do not {plan.still_dead_by_class}")
        incident = Incident("dead_letters_accumulating", target.topic, datetime.now(UTC),
                            context.sensor_name, detail, runbook_page("dead_letters_accumulating"))
        if plan.landed or plan.duplicates:
            requests.append(dg.RunRequest(
                run_key=f"replay:{table}:{plan.snapshot_after}:{plan.dead_letters_seen}",
                run_config=runbook_run_config("redrive_dead_letters", incident, table=table)))
        # reported again only when it has doubled: one incident per order of growth, not one per tick
        elif plan.still_dead >= max(quality.dead_letters_for_incident, 2 * reported.get(table, 0)) and try_record(
                iceberg, incident.escalate("none yet", "fix the producer or register the schema, then the sensor "
                                           "replays them", None), context.log):
            reported[table] = plan.still_dead
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(reported),
                           skip_reason=None if requests else "; ".join(notes))
