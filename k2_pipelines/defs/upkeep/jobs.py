"""Table upkeep as jobs: compaction, snapshot expiry and orphan removal, over some or all of K2's tables, each with a
dry run, each reporting files and bytes before and after and its duration per table."""

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field
from pyiceberg.catalog import Catalog

from k2_pipelines.defs.binance.checks import binance_quotes_quality, binance_trades_quality
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.evaluations import blocking_keys, failed_batches
from k2_pipelines.defs.recovery.incident_runs import RunbookConfig, incident_metadata
from k2_pipelines.lib.iceberg.tables import ALL_TABLES, DRAINED_TABLES, QUOTES, TRADES
from k2_pipelines.lib.metrics import write_upkeep_metrics
from k2_pipelines.lib.recovery.incidents import record_incident, runs_named_by_open_incidents
from k2_pipelines.lib.recovery.quarantine import quarantined_runs
from k2_pipelines.lib.spark.compaction import compact_table_on_spark
from k2_pipelines.lib.upkeep.compaction import CompactionResult, compact_table
from k2_pipelines.lib.upkeep.expiry import DRAINED_RETENTION_HOURS, ExpiryResult, expire_snapshots
from k2_pipelines.lib.upkeep.orphans import MIN_ORPHAN_AGE, OrphanResult, remove_orphan_files

UPKEEP_TAG = "k2/upkeep"  # dagster.yaml runs one upkeep job at a time
_ALL = [definition.name for definition in ALL_TABLES]
DRAINED = {definition.identifier for definition in DRAINED_TABLES}


class UpkeepConfig(dg.Config):
    tables: list[str] = _ALL  # names in market_data
    dry_run: bool = False  # report what would change, change nothing


class CompactConfig(UpkeepConfig):
    target_file_mb: int = 128
    # tables past one machine: Spark rewrites them (K2 still proves rows unchanged)
    spark_tables: list[str] = Field(default_factory=list)
    spark_master: str = "local[*]"  # where Spark runs them (a cluster's master URL)


class ExpireConfig(UpkeepConfig):
    older_than_days: float = 7.0
    drained_older_than_hours: float = DRAINED_RETENTION_HOURS


class OrphanConfig(UpkeepConfig, RunbookConfig):
    older_than_hours: float = 72.0  # the safety age; never under MIN_ORPHAN_AGE


_SIZES = ("files_before", "files_after", "bytes_before", "bytes_after", "seconds")
_ORPHANS = ("files_scanned", "orphans", "deleted", "deleted_bytes", "kept_too_young", "seconds")
UpkeepResult = CompactionResult | ExpiryResult | OrphanResult


def _sizes(result: UpkeepResult) -> tuple[str, dict[str, int], dict[str, int], float]:
    """A result's file and byte counts by stage, for the metrics."""
    if isinstance(result, OrphanResult):
        return (result.table, {"scanned": result.files_scanned, "deleted": result.deleted},
                {"deleted": result.deleted_bytes}, result.seconds)
    return (result.table, {"before": result.files_before, "after": result.files_after},
            {"before": result.bytes_before, "after": result.bytes_after}, result.seconds)


def _report(context: dg.OpExecutionContext, results: Sequence[UpkeepResult],
            columns: tuple[str, ...]) -> dict[str, dg.MetadataValue | float]:
    """Per-table results as a table, their totals as numbers (the UI plots them across runs); the same sizes as
    Prometheus metrics unless it was a dry run."""
    if not any(r.dry_run for r in results):
        path = write_upkeep_metrics(context.job_name, [_sizes(r) for r in results])
        context.log.info(f"metrics in {path}")
    lines = ["| table | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {r.table} | " + " | ".join(f"{getattr(r, c):,.2f}" if c == "seconds" else f"{getattr(r, c):,}"
                                            for c in columns) + " |" for r in results]
    for result in results:
        context.log.info(str(asdict(result)))
    totals = {c: sum(getattr(r, c) for r in results) for c in columns}
    return {"by_table": dg.MetadataValue.md("\n".join(lines)),
            "results": dg.MetadataValue.json([asdict(r) for r in results]),
            **{c: round(v, 3) if c == "seconds" else v for c, v in totals.items()}}


def _identifiers(config: UpkeepConfig) -> list[str]:
    unknown = set(config.tables) - set(_ALL)
    if unknown:
        raise dg.Failure(f"unknown tables {sorted(unknown)}; K2's tables are {_ALL}")
    return [f"market_data.{name}" for name in config.tables]


@dg.op
def compact(context: dg.OpExecutionContext, config: CompactConfig, iceberg: IcebergCatalogResource) -> dg.Output:
    catalog = iceberg.catalog()
    on_spark = {f"market_data.{name}" for name in config.spark_tables}
    if not on_spark <= set(_identifiers(config)):
        raise dg.Failure(f"spark_tables {sorted(config.spark_tables)} must be among the tables compacted")
    target = config.target_file_mb * 2**20
    results = [compact_table_on_spark(catalog, identifier, target, config.dry_run, config.spark_master)
               if identifier in on_spark else compact_table(catalog, identifier, target, config.dry_run)
               for identifier in _identifiers(config)]
    return dg.Output(None, metadata=_report(context, results, _SIZES) | {
        "rows_rewritten": sum(r.rows for r in results), "dry_run": config.dry_run})


def _batches_to_quarantine(instance: dg.DagsterInstance, catalog: Catalog) -> frozenset[str]:
    """Drain runs whose batch failed a blocking check and is not quarantined yet: the quarantine needs their
    snapshots, and the gold gate their rows' days."""
    checks = [key for checks in (binance_trades_quality, binance_quotes_quality) for key in blocking_keys(checks)]
    quarantined = quarantined_runs(catalog, TRADES.identifier) | quarantined_runs(catalog, QUOTES.identifier)
    return frozenset(failed_batches(instance, checks).keys() - quarantined)


@dg.op
def expire(context: dg.OpExecutionContext, config: ExpireConfig, iceberg: IcebergCatalogResource) -> dg.Output:
    catalog, now = iceberg.catalog(), datetime.now(UTC)
    days = now - timedelta(days=config.older_than_days)
    kept_runs = runs_named_by_open_incidents(catalog) | _batches_to_quarantine(context.instance, catalog)
    results = [expire_snapshots(catalog, identifier, now - timedelta(hours=config.drained_older_than_hours),
                                config.dry_run, kept_runs, days_ends_after=days) if identifier in DRAINED
               else expire_snapshots(catalog, identifier, days, config.dry_run, kept_runs)
               for identifier in _identifiers(config)]
    return dg.Output(None, metadata=_report(context, results, _SIZES) | {
        "snapshots_expired": sum(len(r.snapshots_expired) for r in results),
        "files_deleted": sum(r.files_deleted for r in results), "dry_run": config.dry_run})


def _oldest_run_in_flight(instance: dg.DagsterInstance, this_run: str) -> datetime | None:
    """The files of a commit in flight are younger than the run writing them."""
    records = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTING,
                                                               dg.DagsterRunStatus.STARTED]))
    starts = [r.create_timestamp for r in records if r.dagster_run.run_id != this_run]
    return min(starts) if starts else None


@dg.op
def remove_orphans(context: dg.OpExecutionContext, config: OrphanConfig, iceberg: IcebergCatalogResource) -> dg.Output:
    catalog = iceberg.catalog()
    older_than = datetime.now(UTC) - max(timedelta(hours=config.older_than_hours), MIN_ORPHAN_AGE)
    in_flight = _oldest_run_in_flight(context.instance, context.run_id)
    if in_flight and in_flight < older_than:
        context.log.info(f"a run in flight started at {in_flight}: nothing written since then is touched")
        older_than = in_flight
    results = [remove_orphan_files(catalog, identifier, older_than, config.dry_run)
               for identifier in _identifiers(config)]
    metadata: dict[str, dg.MetadataValue | str | float] = {
        **_report(context, results, _ORPHANS), "older_than": older_than.isoformat(), "dry_run": config.dry_run}
    if config.incident:  # launched by the orphan sensor after a failed run
        incident = config.opened("orphan_files", "").resolve(
            f"remove unreferenced files older than {older_than.isoformat()}",
            f"{metadata['deleted']:,} files ({metadata['deleted_bytes']:,} bytes) deleted, "
            f"{metadata['kept_too_young']:,} too young kept", context.run_id)
        record_incident(catalog, incident)
        metadata |= incident_metadata(incident)
    return dg.Output(None, metadata=metadata)


def _upkeep_job(name: str, op: dg.OpDefinition, description: str) -> dg.JobDefinition:
    @dg.job(name=name, description=description, tags={UPKEEP_TAG: "tables"}, executor_def=dg.in_process_executor)
    def upkeep() -> None:
        op()

    return upkeep


compact_tables = _upkeep_job(
    "compact_tables", compact, "Bin-pack small data files per partition into files near the target size, rows "
                               "sorted by the table's sort order; same rows before and after (count and checksum)")
expire_snapshots_job = _upkeep_job(
    "expire_snapshots", expire, "Expire snapshots older than N days (N hours for the drained tables, which keep "
                                "each day's newest for N days), always keeping the drains' stored offsets and what "
                                "open incidents name, and delete the files only they referenced")
remove_orphan_files_job = _upkeep_job(
    "remove_orphan_files", remove_orphans, "Delete files under the tables' locations that no snapshot references and "
                                           "that are older than the safety age and every run in flight")
