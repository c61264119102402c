"""Incidents: what a sensor detected, what its runbook did and how it ended, one row per incident in
market_data.incidents (rewritten as the incident moves from open to resolved)."""

import re
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, And, EqualTo

from k2_pipelines.lib.iceberg.tables import INCIDENTS
from k2_pipelines.lib.iceberg.writes import replace_atomically, replacement

OPEN, RESOLVED, NEEDS_HUMAN = "open", "resolved", "needs_human"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Incident:
    kind: str
    subject: str
    detected_at: datetime
    detected_by: str
    detail: str
    runbook: str  # the docs/runbooks page, relative to the repository
    status: str = OPEN
    action: str | None = None
    outcome: str | None = None
    run_id: str | None = None
    resolved_at: datetime | None = None
    incident_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def time_to_recovery_seconds(self) -> float | None:
        return (self.resolved_at - self.detected_at).total_seconds() if self.resolved_at else None

    def resolve(self, action: str, outcome: str, run_id: str | None, at: datetime | None = None) -> "Incident":
        return replace(self, status=RESOLVED, action=action, outcome=outcome, run_id=run_id, resolved_at=at or _now())

    def escalate(self, action: str, outcome: str, run_id: str | None) -> "Incident":
        """The runbook could not fix it: a human must."""
        return replace(self, status=NEEDS_HUMAN, action=action, outcome=outcome, run_id=run_id)

    def as_record(self) -> dict:
        """JSON-safe (sensor cursors, run configs, run metadata)."""
        record = asdict(self) | {"time_to_recovery_seconds": self.time_to_recovery_seconds}
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in record.items()}

    @classmethod
    def from_record(cls, record: dict) -> "Incident":
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        for key in ("detected_at", "resolved_at"):
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        return cls(**values)


def record_incident(catalog: Catalog, incident: Incident) -> None:
    """Write the incident's current state, replacing its earlier row (one commit)."""
    row = incident.as_record() | {"detected_at": incident.detected_at, "resolved_at": incident.resolved_at,
                                  "updated_at": _now()}
    schema = INCIDENTS.schema().as_arrow()
    rows = pa.Table.from_pylist([{f.name: row[f.name] for f in schema}], schema=schema)
    replace_atomically(catalog, [replacement(catalog, INCIDENTS.identifier, rows,
                                             EqualTo("incident_id", incident.incident_id))], {})


def incidents(catalog: Catalog, status: str | None = None, kind: str | None = None,
              incident_id: str | None = None) -> list[Incident]:
    wanted = {"status": status, "kind": kind, "incident_id": incident_id}
    row_filter = AlwaysTrue()
    for column, value in wanted.items():
        if value is not None:
            row_filter = And(row_filter, EqualTo(column, value))
    rows = catalog.load_table(INCIDENTS.identifier).scan(row_filter=row_filter).to_arrow().to_pylist()
    found = [Incident.from_record(r | {k: r[k].isoformat() for k in ("detected_at", "resolved_at") if r[k]})
             for r in rows]
    return sorted(found, key=lambda i: i.detected_at)


# Dagster's run ids and k2 drain's
_RUN_ID = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b")


def runs_named_by_open_incidents(catalog: Catalog) -> frozenset[str]:
    """Run ids that an incident not yet resolved names: what its runbook may still need of them."""
    unresolved = incidents(catalog, status=OPEN) + incidents(catalog, status=NEEDS_HUMAN)
    return frozenset(run_id for incident in unresolved for text in (incident.subject, incident.detail)
                     for run_id in _RUN_ID.findall(text))
