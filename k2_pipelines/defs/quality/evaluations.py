"""The asset-check evaluations Dagster stored, as K2 reads them: which checks block, whose data an evaluation judged,
and why it failed. Shared by the quality gate sensor (it quarantines bad batches) and the gold bars' gate (it holds
back days built from them)."""

from collections.abc import Iterator, Set
from itertools import islice

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

FAILED = AssetCheckExecutionRecordStatus.FAILED
FAILURES_READ = 50  # failed evaluations read per blocking check, newest first (as many as the quality gate sensor)
_PAGE = 100


def blocking_keys(checks: dg.AssetChecksDefinition) -> list[dg.AssetCheckKey]:
    return [spec.key for spec in checks.check_specs if spec.blocking]


def history(instance: dg.DagsterInstance, key: dg.AssetCheckKey,
            status: Set[AssetCheckExecutionRecordStatus] | None = None) -> Iterator[AssetCheckExecutionRecord]:
    """The executions of `key`, newest first (planned ones too unless `status` says otherwise), a page at a time:
    callers stop reading once they know enough."""
    cursor = None
    while True:
        records = instance.event_log_storage.get_asset_check_execution_history(key, limit=_PAGE, cursor=cursor,
                                                                               status=status)
        yield from records
        if len(records) < _PAGE:
            return
        cursor = records[-1].id


def evaluation(record: AssetCheckExecutionRecord) -> dg.AssetCheckEvaluation | None:
    """What a completed execution found; None while it is only planned (or never ran: the run died first)."""
    if record.status == AssetCheckExecutionRecordStatus.PLANNED:
        return None
    return record.evaluation


def validated_run(record: AssetCheckExecutionRecord, found: dg.AssetCheckEvaluation) -> str:
    """The run whose data was judged: K2's checks say so in `validated_run` (a check run on its own judges the
    newest load or drain, not its own run)."""
    validated = found.metadata.get("validated_run")
    return validated.value if isinstance(validated, dg.TextMetadataValue) else record.run_id


def blocks(found: dg.AssetCheckEvaluation) -> bool:
    return not found.passed and found.severity == dg.AssetCheckSeverity.ERROR


def failure_detail(key: dg.AssetCheckKey, found: dg.AssetCheckEvaluation) -> str:
    failing = found.metadata.get("failing")
    return f"{key.name}: {failing.value if failing else '?'} failing rows ({found.description})"


def failed_batches(instance: dg.DagsterInstance,
                   keys: list[dg.AssetCheckKey]) -> dict[str, list[tuple[dg.AssetCheckKey, int, str]]]:
    """Per judged run, the newest blocking failure of each of `keys` among the newest FAILURES_READ of each:
    (check, evaluation record id, detail)."""
    failures: dict[str, list[tuple[dg.AssetCheckKey, int, str]]] = {}
    for key in keys:
        for record in islice(history(instance, key, {FAILED}), FAILURES_READ):
            found = evaluation(record)
            if found is None or not blocks(found):
                continue
            run_id = validated_run(record, found)
            if all(k != key for k, _, _ in failures.get(run_id, [])):
                failures.setdefault(run_id, []).append((key, record.id, failure_detail(key, found)))
    return failures
