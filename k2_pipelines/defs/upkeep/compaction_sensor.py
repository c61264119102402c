"""Compaction between the nightly runs, when small files pile up in a partition of trades or quotes.

Every drain writes a small file per partition, and the lag sensor drains every 30 s while there is lag: a day's
partition can hold thousands of them by night. A query of that day opens each one (`k2 bench query`: one symbol's
day from 200 small files takes three times as long as from compacted ones), so a partition with
SMALL_FILES_TRIGGER small files is compacted now. Compaction commits with compare-and-set, so drains go on meanwhile.
"""

import dagster as dg
from pyiceberg.table import Table

from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.upkeep.jobs import compact_tables
from k2_pipelines.lib.iceberg.snapshot_files import live_data_files
from k2_pipelines.lib.iceberg.tables import QUOTES, TRADES
from k2_pipelines.lib.recovery.health import UNREACHABLE
from k2_pipelines.lib.upkeep.compaction import most_small_files_in_a_partition

SMALL_FILES_TRIGGER = 16  # 8 minutes of drains under lag; one symbol's day still reads in 50 ms (README, Performance)
# what this sensor's compactions pack files to. A file near the nightly target (128 MB) takes most of a day of drains,
# so at that target each run would rewrite the day's earlier output again (a cost growing all day); at this one a run
# rewrites at most this much, and the nightly compaction packs the day's files into large ones
SENSOR_TARGET_FILE_MB = 8
_WATCHED = (TRADES, QUOTES)
_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]


def _most_small_files(table: Table) -> int:
    snapshot = table.current_snapshot()
    return most_small_files_in_a_partition(live_data_files(table, snapshot.snapshot_id),
                                           SENSOR_TARGET_FILE_MB * 2**20) if snapshot else 0


@dg.sensor(job=compact_tables, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description=f"Compacts trades or quotes when one of their partitions holds {SMALL_FILES_TRIGGER} small "
                       "files (drains write one per micro-batch), so queries of today's data stay fast")
def small_files_sensor(context: dg.SensorEvaluationContext,
                       iceberg: IcebergCatalogResource) -> dg.SkipReason | dg.RunRequest:
    in_flight = context.instance.get_runs(dg.RunsFilter(job_name=compact_tables.name, statuses=_IN_FLIGHT), limit=1)
    if in_flight:
        return dg.SkipReason(f"compaction run {in_flight[0].run_id} is queued or running")
    try:
        catalog = iceberg.catalog()
        tables = {d.name: catalog.load_table(d.identifier) for d in _WATCHED}
    except UNREACHABLE as error:  # the storage health sensor reports that
        return dg.SkipReason(f"the catalog is unreachable ({type(error).__name__})")
    piled = {name: most for name, table in tables.items() if (most := _most_small_files(table)) >= SMALL_FILES_TRIGGER}
    if not piled:
        return dg.SkipReason(f"no partition of {', '.join(tables)} holds {SMALL_FILES_TRIGGER} small files")
    context.log.info("small files per partition, at most: " + ", ".join(f"{n} {c}" for n, c in piled.items()))
    # one request per state of the tables: a tick that sees the same snapshots asks for nothing new
    snapshots = ",".join(f"{name}@{tables[name].metadata.current_snapshot_id}" for name in sorted(piled))
    return dg.RunRequest(run_key=f"small-files:{snapshots}",
                         run_config={"ops": {"compact": {"config": {"tables": sorted(piled),
                                                                    "target_file_mb": SENSOR_TARGET_FILE_MB}}}},
                         tags={"k2/trigger": "small_files"})
