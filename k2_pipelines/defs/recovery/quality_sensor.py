"""Case 5: a blocking quality check failed on a drained micro-batch. A failed check does not always fail a run (a
check run on its own does not), so this sensor reads the check evaluations themselves."""

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg

from k2_pipelines.defs.binance.checks import binance_quotes_quality, binance_trades_quality
from k2_pipelines.defs.quality.evaluations import (
    FAILED,
    blocking_keys,
    blocks,
    evaluation,
    failure_detail,
    validated_run,
)
from k2_pipelines.defs.recovery.incident_runs import runbook_page, runbook_run_config
from k2_pipelines.defs.recovery.runbooks import quarantine_bad_batch
from k2_pipelines.lib.recovery.incidents import Incident

_BLOCKING = {table: blocking_keys(checks)
             for table, checks in (("trades", binance_trades_quality), ("quotes", binance_quotes_quality))}


def _failed_blocking(instance: dg.DagsterInstance, key: dg.AssetCheckKey,
                     after: float) -> Iterator[tuple[float, str, str]]:
    """(when, validated run, description) of each failed ERROR evaluation of `key` since `after`."""
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=50, status={FAILED})
    for record in history:
        found = evaluation(record)
        if record.create_timestamp <= after or found is None or not blocks(found):
            continue
        yield record.create_timestamp, validated_run(record, found), failure_detail(key, found)


@dg.sensor(job=quarantine_bad_batch, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Runbook quality_check_failed: when a blocking check fails on a drained batch, launches the "
                       "quarantine of the rows it fails on (the batch's other rows stay; the stored offsets stay past "
                       "it)")
def quality_gate_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    after = float(context.cursor) if context.cursor else time.time()
    newest, requests = after, []
    for table, keys in _BLOCKING.items():
        failures: dict[str, list[str]] = {}
        for key in keys:
            for when, run_id, detail in _failed_blocking(context.instance, key, after):
                newest = max(newest, when)
                failures.setdefault(run_id, []).append(detail)
        for run_id, details in failures.items():
            incident = Incident("quality_check_failed", f"market_data.{table} batch of run {run_id}",
                                datetime.now(UTC), context.sensor_name, "; ".join(details),
                                runbook_page("quality_check_failed"))
            requests.append(dg.RunRequest(
                run_key=f"quarantine:{table}:{run_id}",
                run_config=runbook_run_config("move_batch_to_quarantine", incident, table=table, source_run_id=run_id,
                                              check=", ".join(sorted(d.split(":")[0] for d in details)))))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(newest))
