"""Runbooks as jobs: each acts on the incident a sensor opened, records how it ended in market_data.incidents and
reports it in the run's metadata. A runbook that cannot fix its incident leaves it `needs_human`, never silent."""

import json
import shutil
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.recovery.incident_runs import RunbookConfig, incident_metadata
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.dead_letter_replay import replay_dead_letters
from k2_pipelines.lib.drain.offset_drift import RealignRefused, realign_group
from k2_pipelines.lib.quality.validations import failing_drained_rows
from k2_pipelines.lib.recovery.incidents import Incident, record_incident
from k2_pipelines.lib.recovery.quarantine import quarantine_run, release
from k2_pipelines.settings import state_dir

TABLES = ("trades", "quotes")


def _finish(context: dg.OpExecutionContext, iceberg: IcebergCatalogResource, incident: Incident,
            facts: dict) -> dg.Output:
    record_incident(iceberg.catalog(), incident)
    context.log.info(f"incident {incident.incident_id} {incident.status}: {incident.outcome}")
    return dg.Output(incident.incident_id, metadata=incident_metadata(incident) | facts)


def _runbook_job(name: str, op: dg.OpDefinition, description: str) -> dg.JobDefinition:
    @dg.job(name=name, description=description, executor_def=dg.in_process_executor,
            tags={"k2/runbook": name, "dagster/priority": "10"})  # ahead of routine runs in the queue
    def runbook() -> None:
        op()

    return runbook


class LandingFileConfig(RunbookConfig):
    path: str  # the landing file a load could not read


@dg.op(name="move_landing_file")
def quarantine_landing_file_op(context: dg.OpExecutionContext, config: LandingFileConfig,
                               iceberg: IcebergCatalogResource) -> dg.Output:
    """Move an unreadable ASX file out of the landing folder (kept, with why) so its dates load without it."""
    source = Path(config.path)
    incident = config.opened("run_failed", str(source))
    folder = state_dir() / "quarantine" / "asx"
    folder.mkdir(parents=True, exist_ok=True)
    moved = folder / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{source.name}"
    if not source.exists():
        return _finish(context, iceberg, incident.escalate(
            f"quarantine {source}", f"{source} is no longer in the landing folder: nothing moved", context.run_id), {})
    shutil.move(source, moved)
    moved.with_suffix(moved.suffix + ".reason.json").write_text(json.dumps(
        {"source": str(source), "reason": incident.detail, "failed_run": incident.subject}, indent=2))
    return _finish(context, iceberg, incident.resolve(
        f"moved {source} to {moved}",
        "the landing sensor reloads its trading dates without it; its rows wait in the quarantine folder for a "
        "corrected file", context.run_id), {"quarantined_file": dg.MetadataValue.path(str(moved))})


class TableConfig(RunbookConfig):
    table: str  # trades or quotes


@dg.op(name="realign_group")
def realign_consumer_offsets_op(context: dg.OpExecutionContext, config: TableConfig, iceberg: IcebergCatalogResource,
                                binance_kafka: BinanceKafkaResource) -> dg.Output:
    """Commit the offsets stored in Iceberg for the drain's consumer group; a recreated topic is left to a human."""
    target = binance_kafka.target(config.table)
    incident = config.opened("offset_drift", target.topic)
    stored = stored_checkpoint(iceberg.catalog().load_table(target.table.identifier), target.topic).offsets
    action = f"commit the offsets stored in {target.table.identifier} for the group of {target.topic}"
    try:
        committed = realign_group(binance_kafka.servers(), target, stored)
    except RealignRefused as refused:
        return _finish(context, iceberg, incident.escalate(action, f"refused: {refused}", context.run_id), {})
    return _finish(context, iceberg, incident.resolve(action, f"group offsets now {committed}", context.run_id),
                   {"offsets": dg.MetadataValue.json({str(p): o for p, o in committed.items()})})


class BadBatchConfig(TableConfig):
    source_run_id: str  # the drain run whose batch failed a blocking check
    check: str  # the checks that failed, comma-separated
    whole_batch: bool = False  # an operator's choice: the whole batch, not only the rows the checks fail on


@dg.op(name="move_batch_to_quarantine")
def quarantine_bad_batch_op(context: dg.OpExecutionContext, config: BadBatchConfig, iceberg: IcebergCatalogResource,
                            binance_kafka: BinanceKafkaResource, quality: QualityResource) -> dg.Output:
    """Take the rows the failed checks name (or the whole batch) out of their table into market_data.quarantine;
    the batch's good rows stay, and the stored offsets stay past it."""
    incident = config.opened("quality_check_failed", config.source_run_id)
    catalog, checks = iceberg.catalog(), [name.strip() for name in config.check.split(",")]
    pick = None if config.whole_batch else failing_drained_rows(catalog, config.table, checks, quality.thresholds(),
                                                                 datetime.now(UTC))
    result = quarantine_run(catalog, binance_kafka.target(config.table), config.source_run_id, config.check,
                            incident.detail, context.run_id, pick=pick)
    taken = "the batch" if config.whole_batch else f"the rows failing {config.check}"
    action = f"quarantine {taken} of run {config.source_run_id}"
    outcome = (f"{result.rows_quarantined:,} rows of run {config.source_run_id} moved to market_data.quarantine; "
               f"stored offsets unchanged at {result.offsets_kept}") + (f" ({result.note})" if result.note else "")
    done = incident.resolve(action, outcome, context.run_id) if result.rows_quarantined or result.already_quarantined \
        else incident.escalate(action, f"{outcome}: the checks name no row of the batch now (a threshold changed "
                               "back?); check the batch again, or quarantine it whole", context.run_id)
    return _finish(context, iceberg, done,
                   {"rows_quarantined": result.rows_quarantined, "files_removed": result.files_removed,
                    "snapshot_after": dg.MetadataValue.text(str(result.snapshot_after))})


class ReleaseConfig(TableConfig):
    source_run_id: str  # the drain run whose quarantined rows go back
    check: str = ""  # only the rows quarantined for this check; empty: every row of the run still held


@dg.op(name="release_from_quarantine")
def release_quarantined_rows_op(context: dg.OpExecutionContext, config: ReleaseConfig, iceberg: IcebergCatalogResource,
                                binance_kafka: BinanceKafkaResource) -> dg.Output:
    """Once the cause is fixed (a threshold, the reference data), put quarantined rows back into their table,
    exactly once, recorded as an incident."""
    incident = config.opened("quality_check_failed", f"release of run {config.source_run_id}")
    result = release(iceberg.catalog(), binance_kafka.target(config.table), config.source_run_id, context.run_id,
                     config.check or None)
    rows = f"{'the rows failing ' + config.check if config.check else 'the rows'} of run {config.source_run_id}"
    action = f"release {rows} from market_data.quarantine into {result.table}"
    outcome = (f"{result.rows_released:,} rows back in {result.table}"
               + (f", {result.rows_already_there:,} were there again already (marked released)"
                  if result.rows_already_there else "")
               if result.commit_attempts else "nothing held: released before, or never quarantined")
    return _finish(context, iceberg, incident.resolve(action, outcome, context.run_id),
                   {"release": dg.MetadataValue.json(asdict(result))})


class ReplayConfig(TableConfig):
    dry_run: bool = False


@dg.op(name="redrive_dead_letters")
def replay_dead_letters_op(context: dg.OpExecutionContext, config: ReplayConfig, iceberg: IcebergCatalogResource,
                           binance_kafka: BinanceKafkaResource, quality: QualityResource) -> dg.Output:
    """Decode the table's dead letters again (after a fix, such as a schema registered late); those that land now
    leave the dead letters in the same commit."""
    incident = config.opened("dead_letters_accumulating", config.table)
    result = replay_dead_letters(iceberg.catalog(), binance_kafka.target(config.table), binance_kafka.registry(),
                                 context.run_id, config.dry_run, quality.thresholds())
    outcome = (f"{result.landed:,} landed, {result.duplicates:,} were already in the table, {result.still_dead:,} "
               f"still dead {result.still_dead_by_class or ''}" + (" (dry run)" if config.dry_run else ""))
    action = f"replay the dead letters of {result.topic}"
    done = incident.resolve(action, outcome, context.run_id) if not result.still_dead and not config.dry_run \
        else incident.escalate(action, outcome + ": these need a fix before a replay", context.run_id)
    return _finish(context, iceberg, done, {"replay": dg.MetadataValue.json(asdict(result))})


quarantine_landing_file = _runbook_job(
    "quarantine_landing_file", quarantine_landing_file_op,
    "Runbook run_failed (poison data): move an unreadable ASX landing file to quarantine")
realign_consumer_offsets = _runbook_job(
    "realign_consumer_offsets", realign_consumer_offsets_op,
    "Runbook offset_drift: realign a drain's consumer group with the offsets in Iceberg")
quarantine_bad_batch = _runbook_job(
    "quarantine_bad_batch", quarantine_bad_batch_op,
    "Runbook quality_check_failed: move the rows of a micro-batch that failed a blocking check to "
    "market_data.quarantine, keeping the stored offsets")
release_quarantined_rows = _runbook_job(
    "release_quarantined_rows", release_quarantined_rows_op,
    "Runbook quality_check_failed, once the cause is fixed: put a batch's quarantined rows back into their table, "
    "exactly once")
replay_dead_letters_job = _runbook_job(
    "replay_dead_letters", replay_dead_letters_op,
    "Runbook dead_letters_accumulating: re-drive a table's dead letters after a fix")
