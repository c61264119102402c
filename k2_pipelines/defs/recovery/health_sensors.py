"""Cases 1 and 2: a dependency (Kafka, the catalog, the warehouse) goes down, then comes back.

While it is down the drains skip (the lag sensor cannot read offsets or tables) and an incident is open; when it is
back a catch-up drain is launched, and the incident closes when that run succeeds (incident_sensors.py). An
incident opened while the catalog itself is down is kept in the sensor's cursor until it can be written.
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.recovery.incident_runs import runbook_page, try_record
from k2_pipelines.defs.recovery.jobs import catch_up_after_outage
from k2_pipelines.defs.tags import INCIDENT_TAG
from k2_pipelines.lib.recovery.health import catalog_problem, kafka_problem, object_store_problem
from k2_pipelines.lib.recovery.incidents import Incident

BACK_AT_TAG = "k2/dependency-back-at"  # when the sensor saw the dependency answer again


def _health_sensor(name: str, probes: dict[str, Callable[[BinanceKafkaResource], str | None]],
                   description: str) -> dg.SensorDefinition:
    """probes: incident kind -> a function of the Kafka resource that says what is wrong (None: healthy)."""

    @dg.sensor(name=name, job=catch_up_after_outage, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING, description=description)
    def health(context: dg.SensorEvaluationContext, iceberg: IcebergCatalogResource,
               binance_kafka: BinanceKafkaResource) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else {}
        found = next(((kind, problem) for kind, probe in probes.items() if (problem := probe(binance_kafka))), None)
        incident = Incident.from_record(state["incident"]) if state.get("incident") else None
        if found:
            kind, problem = found
            if incident is None:
                incident = Incident(kind, _subject(kind, binance_kafka), datetime.now(UTC), name, problem,
                                    runbook_page(kind), action="drains skip until it answers again")
                context.log.warning(f"incident {incident.incident_id}: {problem}")
            recorded = state.get("recorded") or try_record(iceberg, incident, context.log)
            return dg.SensorResult(skip_reason=problem,
                                   cursor=json.dumps({"incident": incident.as_record(), "recorded": recorded}))
        if incident is None:
            return dg.SensorResult(skip_reason="healthy", cursor=context.cursor)
        if not state.get("recorded") and not try_record(iceberg, incident, context.log):
            return dg.SensorResult(skip_reason="back, but the incident cannot be recorded yet", cursor=context.cursor)
        back_at = datetime.now(UTC).isoformat()
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=incident.incident_id,
                                        tags={INCIDENT_TAG: incident.incident_id, BACK_AT_TAG: back_at})],
            cursor=json.dumps({}))

    return health


def _subject(kind: str, binance_kafka: BinanceKafkaResource) -> str:
    return binance_kafka.servers() if kind == "kafka_broker_down" else kind.removesuffix("_unreachable")


kafka_health_sensor = _health_sensor(
    "kafka_health_sensor", {"kafka_broker_down": lambda kafka: kafka_problem(kafka.servers())},
    "Runbook kafka_broker_down: opens an incident while the Binance topics' broker is unreachable; when it is back, "
    "launches a catch-up drain")
storage_health_sensor = _health_sensor(
    "storage_health_sensor",
    {"catalog_unreachable": lambda _: catalog_problem(), "object_store_unreachable": lambda _: object_store_problem()},
    "Runbooks catalog_unreachable / object_store_unreachable: opens an incident while the Iceberg catalog or its "
    "warehouse is unreachable; when both are back, launches a catch-up drain")
