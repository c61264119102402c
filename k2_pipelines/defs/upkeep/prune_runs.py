"""Dagster's own storage bounded: a drain of each table every 30 s is 5,760 runs a day, each with its event log and
compute logs. Finished runs older than a few days are deleted, a page at a time.

Kept whatever their age: runs in flight (only finished runs are read); runs tagged with an incident not yet
resolved (the incident sensor closes it when such a run succeeds) and runs an unresolved incident names; failures
the failed-run and orphan sensors have not read yet, or still hold in their cursors. Only the frequent jobs are
pruned: the runs of the partitioned ASX loads and gold builds hold the materializations that say which partitions
are loaded (the gold gate reads them), and delete_run deletes those events too.
"""

import math
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.scheduler.instigation import SensorInstigatorData
from dagster._core.storage.event_log import SqliteEventLogStorage
from pyiceberg.catalog import Catalog

from k2_pipelines.defs.binance.jobs import drain_jobs
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.recovery.failed_run_cursor import FailedRunCursor
from k2_pipelines.defs.recovery.failed_runs import failed_run_sensor
from k2_pipelines.defs.recovery.jobs import catch_up_after_outage
from k2_pipelines.defs.recovery.orphan_sensor import orphan_cleanup_sensor
from k2_pipelines.defs.tags import INCIDENT_TAG
from k2_pipelines.defs.upkeep.jobs import UPKEEP_TAG, compact_tables, expire_snapshots_job, remove_orphan_files_job
from k2_pipelines.lib.recovery.incidents import RESOLVED, incidents

_PAGE = 200
_SUCCEEDED = [dg.DagsterRunStatus.SUCCESS]
_UNSUCCESSFUL = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
# the sensors that read failed runs through a FailedRunCursor: their cursors say which failures they still need
_FAILURE_READERS = (failed_run_sensor.name, orphan_cleanup_sensor.name)
PRUNED_JOBS = [*(job.name for job in drain_jobs.values()), catch_up_after_outage.name, compact_tables.name,
               expire_snapshots_job.name, remove_orphan_files_job.name, "prune_runs"]


class PruneRunsConfig(dg.Config):
    keep_days: float = 2.0  # successful runs
    keep_failed_days: float = 14.0  # failed and canceled runs: their logs say why, and incidents point at them
    jobs: list[str] = PRUNED_JOBS
    max_deleted: int = 10_000  # per run: a long-grown instance is pruned over several runs, none holding the slot long
    dry_run: bool = False  # count what would be deleted, delete nothing


class _Held:
    """What must stay, read once per prune."""

    def __init__(self, instance: dg.DagsterInstance, catalog: Catalog) -> None:
        found = incidents(catalog)
        self.resolved = {i.incident_id for i in found if i.status == RESOLVED}
        self.named = " ".join(f"{i.subject} {i.detail} {i.run_id}" for i in found if i.status != RESOLVED)
        self.unread_failures_after, self.sensor_runs = math.inf, set()
        # sensors' states only: a schedule's data has no cursor
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            data = state.instigator_data
            cursor = data.cursor if isinstance(data, SensorInstigatorData) else None
            if state.name in _FAILURE_READERS and cursor:
                read = FailedRunCursor.parse(cursor)
                self.unread_failures_after = min(self.unread_failures_after, read.after)
                self.sensor_runs |= read.pending_run_ids()

    def why(self, record: dg.RunRecord) -> str | None:
        run = record.dagster_run
        if (INCIDENT_TAG in run.tags and run.tags[INCIDENT_TAG] not in self.resolved) or run.run_id in self.named:
            return "kept_for_incidents"
        unread = run.status != dg.DagsterRunStatus.SUCCESS and \
            record.update_timestamp.timestamp() > self.unread_failures_after
        return "kept_for_sensors" if unread or run.run_id in self.sensor_runs else None


def _finished_before(instance: dg.DagsterInstance, job: str, statuses: list, before: datetime) -> Iterator:
    """The job's runs in `statuses` last updated before `before`, oldest first, a page at a time. The next page is read
    before the caller deletes this one: its cursor is the page's last run."""
    filters = dg.RunsFilter(job_name=job, statuses=statuses, updated_before=before)
    page = instance.get_run_records(filters, limit=_PAGE, ascending=True)
    while page:
        following = instance.get_run_records(filters, limit=_PAGE, cursor=page[-1].dagster_run.run_id,
                                             ascending=True) if len(page) == _PAGE else []
        yield from page
        page = following


def delete_run_and_logs(instance: dg.DagsterInstance, run_id: str) -> None:
    instance.delete_run(run_id)
    instance.compute_log_manager.delete_logs(prefix=[run_id])
    storage = instance.event_log_storage
    if isinstance(storage, SqliteEventLogStorage):  # a database file per run, which delete_run empties but keeps
        for suffix in ("", "-wal", "-shm"):
            Path(storage.path_for_shard(run_id) + suffix).unlink(missing_ok=True)


def _old_finished_runs(instance: dg.DagsterInstance, config: PruneRunsConfig, now: datetime) -> Iterator:
    """(record, what it counts as if deleted) for each finished run of the pruned jobs past its keep."""
    for statuses, days, deleted in ((_SUCCEEDED, config.keep_days, "deleted_succeeded"),
                                    (_UNSUCCESSFUL, config.keep_failed_days, "deleted_failed_or_canceled")):
        for job in config.jobs:
            for record in _finished_before(instance, job, statuses, now - timedelta(days=days)):
                yield record, deleted


@dg.op
def prune(context: dg.OpExecutionContext, config: PruneRunsConfig, iceberg: IcebergCatalogResource) -> dg.Output:
    started = time.monotonic()
    held, counts, deleted = _Held(context.instance, iceberg.catalog()), Counter[str](), 0
    for record, if_deleted in _old_finished_runs(context.instance, config, datetime.now(UTC)):
        if deleted >= config.max_deleted:
            break
        reason = held.why(record)
        counts[reason or if_deleted] += 1
        if not reason:
            deleted += 1
            if not config.dry_run:
                delete_run_and_logs(context.instance, record.dagster_run.run_id)
    metadata = {key: counts[key] for key in ("deleted_succeeded", "deleted_failed_or_canceled", "kept_for_incidents",
                                             "kept_for_sensors")}
    context.log.info(str(metadata))
    return dg.Output(None, metadata=metadata | {"seconds": round(time.monotonic() - started, 3),
                                                "dry_run": config.dry_run})


@dg.job(tags={UPKEEP_TAG: "dagster"}, executor_def=dg.in_process_executor,
        description="Delete finished runs of the frequent jobs (drains, upkeep) older than N days, failures after "
                    "longer, with their logs; never a run in flight, one an unresolved incident needs, or a failure "
                    "the recovery sensors have not read")
def prune_runs() -> None:
    prune()
