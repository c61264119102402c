"""What every runbook shares: the incident a run acts on (its config; its tag is defs/tags.INCIDENT_TAG) and how it is
reported."""

import json
import logging
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.lib.recovery.health import UNREACHABLE
from k2_pipelines.lib.recovery.incidents import Incident, record_incident


def runbook_page(name: str) -> str:
    return f"docs/runbooks/{name}.md"


class RunbookConfig(dg.Config):
    incident: str = ""  # the Incident the sensor opened, as JSON (Incident.as_record); empty: launched by hand

    def opened(self, kind: str, subject: str) -> Incident:
        if self.incident:
            return Incident.from_record(json.loads(self.incident))
        return Incident(kind, subject, datetime.now(UTC), "a person (launched by hand)",
                        "launched by hand", runbook_page(kind))


def runbook_run_config(op: str, incident: Incident, **config: Any) -> dict[str, Any]:
    return {"ops": {op: {"config": {"incident": json.dumps(incident.as_record()), **config}}}}


def incident_metadata(incident: Incident) -> dict:
    metadata = {
        "incident": dg.MetadataValue.json(incident.as_record()),
        "incident_status": incident.status,
        "runbook": dg.MetadataValue.path(incident.runbook),
    }
    if incident.time_to_recovery_seconds is not None:
        metadata["time_to_recovery_seconds"] = round(incident.time_to_recovery_seconds, 1)
    return metadata


def try_record(iceberg: IcebergCatalogResource, incident: Incident, log: logging.Logger) -> bool:
    """Record from a sensor; False (to try again on a later tick) while the catalog or warehouse is unreachable."""
    try:
        record_incident(iceberg.catalog(), incident)
    except UNREACHABLE as error:
        log.warning(f"incident {incident.incident_id} not recorded yet: {type(error).__name__}: {error}")
        return False
    return True
