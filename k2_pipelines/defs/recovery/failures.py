"""Why a run failed: transient (retry it), poison data (quarantine it), a failed quality gate (the quality runbook
handles it) or a bug (a human must look), read from the errors Dagster recorded for the run."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._utils.error import SerializableErrorInfo

TRANSIENT, POISON, QUALITY, BUG = "transient", "poison_data", "quality_gate", "bug"

# exception classes (anywhere in the chain of causes) and what they mean
_KINDS = {
    TRANSIENT: {"KafkaException", "OperationalError", "CommitFailedException", "DrainAbandoned", "ConnectionError",
                "ConnectionRefusedError", "ConnectionResetError", "TimeoutError", "CatalogUnavailable",
                "BrokenPipeError", "DagsterExecutionInterruptedError"},
    POISON: {"UnreadableFileError", "UnicodeDecodeError", "ArrowInvalid", "BadFrame"},
    QUALITY: {"DagsterAssetCheckFailedError"},
}


@dataclass(frozen=True)
class RunFailure:
    kind: str
    error: str  # the innermost error, for the incident
    step: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # what the failing step attached (e.g. source_file)


# (step, error, the failure's metadata); Dagster records a step failure's error as optional
RecordedError = tuple[str | None, SerializableErrorInfo | None, dict[str, Any]]


def _chain(error: SerializableErrorInfo | None) -> Iterator[SerializableErrorInfo]:
    while error is not None:
        yield error
        error = error.cause or error.context


def classify(errors: list[RecordedError]) -> RunFailure:
    """The most specific reading of a run's step/run failures: a quality gate or poison data outranks the transient
    errors they may have caused downstream; no recognised error at all is a bug."""
    found = []
    for step, error, metadata in errors:
        chain = list(_chain(error))
        names = {e.cls_name for e in chain}
        kind = next((kind for kind in (QUALITY, POISON, TRANSIENT) if names & _KINDS[kind]), BUG)
        # the recognised error says most (an unreadable file's name and why), else the innermost one
        telling = next((e for e in chain if e.cls_name in _KINDS.get(kind, ())), chain[-1])
        found.append(RunFailure(kind, telling.message.strip(), step, metadata))
    if not found:
        return RunFailure(BUG, "the run failed without a recorded error")
    return min(found, key=lambda f: (QUALITY, POISON, BUG, TRANSIENT).index(f.kind))


def run_errors(instance: dg.DagsterInstance, run_id: str) -> list[RecordedError]:
    """(step, error, the failure's metadata) of each failed step, or the run's own failure if no step failed."""
    errors: list[RecordedError] = []
    for record in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE,
                                                     dg.DagsterEventType.RUN_FAILURE}):
        event = record.get_dagster_event()  # every record of these types holds one
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            metadata = {k: v.value for k, v in (data.user_failure_data.metadata if data.user_failure_data else {})
                        .items()}
            errors.append((event.step_key, data.error, metadata))
        elif event.job_failure_data and event.job_failure_data.error:
            errors.append((None, event.job_failure_data.error, {}))
    step_errors = [e for e in errors if e[0] is not None]
    return step_errors or errors
