"""The upkeep jobs in Dagster over tables built by real drains, and case 7: orphan removal after a failed run."""

import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pyarrow.compute as pc
from prometheus_client.parser import text_string_to_metric_families

from k2_pipelines.cli.bench.generated import append_micro_batch, generated_trades
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.recovery import orphan_sensor
from k2_pipelines.defs.recovery.orphan_sensor import orphan_cleanup_sensor
from k2_pipelines.defs.upkeep.compaction_sensor import SENSOR_TARGET_FILE_MB, SMALL_FILES_TRIGGER, small_files_sensor
from k2_pipelines.defs.upkeep.jobs import compact_tables, expire_snapshots_job, remove_orphan_files_job
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.drain import trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits
from k2_pipelines.lib.iceberg.tables import TRADES
from k2_pipelines.lib.iceberg.writes import write_rows
from k2_pipelines.lib.recovery.incidents import RESOLVED, incidents
from k2_pipelines.lib.upkeep.orphans import MIN_ORPHAN_AGE
from k2_pipelines_tests.helpers import run_asx_load
from k2_pipelines_tests.kafka_helpers import drain_all, replay_session
from k2_pipelines_tests.recovery_helpers import skipped, tick

RESOURCES = {"iceberg": IcebergCatalogResource()}


def _metadata(result: dg.ExecuteInProcessResult, op: str) -> dict:
    [event] = [e for e in result.all_node_events if e.is_successful_output and e.node_name == op]
    return {k: v.value for k, v in event.step_output_data.metadata.items()}


def _upkeep(job: dg.JobDefinition, op: str, instance=None, **config) -> dict:
    result = job.execute_in_process(run_config={"ops": {op: {"config": config}}}, resources=RESOURCES,
                                    instance=instance)
    assert result.success
    return _metadata(result, op)


def _rows(catalog):
    return catalog.load_table(TRADES.identifier).scan().to_arrow().sort_by("message_id")


def test_compaction_and_expiry_jobs_keep_rows_and_offsets_and_report_sizes(kafka_broker, catalog, k2_home,
                                                                          tmp_path):
    _, counts, topics = replay_session(kafka_broker, tmp_path, 3_000, set())
    target = trades_target(topics.trades)
    drain_all(kafka_broker, target, Limits(max_messages=100))  # many small commits
    before, checkpoint = _rows(catalog), stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades)
    files = len(catalog.load_table(TRADES.identifier).inspect.files())

    planned = _upkeep(compact_tables, "compact", tables=["trades"], dry_run=True)
    assert planned["files_before"] == planned["files_after"] == files and planned["dry_run"]
    assert catalog.load_table(TRADES.identifier).current_snapshot().snapshot_id == checkpoint.snapshot_id

    done = _upkeep(compact_tables, "compact", tables=["trades"])
    assert done["files_before"] == files and done["files_after"] < files / 5
    assert done["rows_rewritten"] == counts["trades"] and done["seconds"] > 0
    assert "| market_data.trades |" in done["by_table"]
    assert _rows(catalog).equals(before)
    assert stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades).offsets == checkpoint.offsets

    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(
        (k2_home / "k2" / "metrics" / "k2_upkeep_compact_tables.prom").read_text()) for s in family.samples}
    trades = (("job", "compact_tables"), ("stage", "after"), ("table", "market_data.trades"))
    assert metrics[("k2_upkeep_files", trades)] == done["files_after"]
    assert metrics[("k2_upkeep_bytes", trades)] == done["bytes_after"]

    expired = _upkeep(expire_snapshots_job, "expire", tables=["trades"], drained_older_than_hours=0)
    assert expired["snapshots_expired"] > 0 and expired["files_deleted"] > 0
    assert expired["files_after"] < expired["files_before"]
    assert _rows(catalog).equals(before)
    assert stored_checkpoint(catalog.load_table(TRADES.identifier), topics.trades).offsets == checkpoint.offsets


def test_a_failed_load_triggers_orphan_removal_once_the_safety_age_has_passed(catalog, landing, monkeypatch):
    with dg.instance_for_test() as instance:
        assert run_asx_load("2014-03-10", "2014-03-12", instance=instance).success
        cursor = tick(orphan_cleanup_sensor, instance, RESOURCES).cursor
        bad = sorted((landing / "trades").glob("*.csv"))[0]
        bad.write_bytes(b"\x00\xff" * 500)
        failed = run_asx_load("2014-03-10", raise_on_error=False, instance=instance)
        assert not failed.success
        rows = catalog.load_table(TRADES.identifier).scan().to_arrow()
        # what a load that died between writing and committing leaves: real data files no snapshot references
        orphans = [f.file_path for f in write_rows(catalog, TRADES.identifier, rows.slice(0, 50))]
        assert orphans
        waiting = tick(orphan_cleanup_sensor, instance, RESOURCES, cursor)
        assert not waiting.run_requests  # the files may belong to a commit in flight: not before the safety age

        aged = time.time() - MIN_ORPHAN_AGE.total_seconds() - 60
        for path in orphans:
            os.utime(path.removeprefix("file://"), (aged, aged))
        monkeypatch.setattr(orphan_sensor, "MIN_ORPHAN_AGE", timedelta(0))  # as if the hour had passed
        [request] = tick(orphan_cleanup_sensor, instance, RESOURCES, waiting.cursor).run_requests
        result = remove_orphan_files_job.execute_in_process(run_config=request.run_config, tags=request.tags,
                                                            resources=RESOURCES, instance=instance)
        assert result.success
    report = _metadata(result, "remove_orphans")
    assert report["deleted"] >= len(orphans) and not any(os.path.exists(p.removeprefix("file://")) for p in orphans)
    assert catalog.load_table(TRADES.identifier).scan().to_arrow().num_rows == rows.num_rows
    [incident] = incidents(catalog)
    assert incident.kind == "orphan_files" and incident.status == RESOLVED and failed.run_id in incident.subject
    assert report["incident_status"] == RESOLVED
    assert pc.sum(catalog.load_table(TRADES.identifier).inspect.files()["record_count"]).as_py() == rows.num_rows


def test_small_files_piling_up_in_a_partition_launch_a_compaction(catalog):
    rng, start = np.random.default_rng(3), datetime(2025, 3, 3, tzinfo=UTC)

    def drain(batch: int) -> None:  # a micro-batch a minute into one UTC day: one small file each
        append_micro_batch(catalog, TRADES.identifier, generated_trades(
            rng, 200, start + timedelta(minutes=batch), 60, batch * 200), {})

    with dg.instance_for_test() as instance:
        for batch in range(SMALL_FILES_TRIGGER - 1):
            drain(batch)
        assert f"holds {SMALL_FILES_TRIGGER} small files" in skipped(tick(small_files_sensor, instance, RESOURCES))
        drain(SMALL_FILES_TRIGGER - 1)
        request = tick(small_files_sensor, instance, RESOURCES)
        assert request.run_config == {"ops": {"compact": {"config": {"tables": ["trades"],
                                                                     "target_file_mb": SENSOR_TARGET_FILE_MB}}}}
        assert tick(small_files_sensor, instance, RESOURCES).run_key == request.run_key  # same snapshot, same key

        pending = instance.create_run_for_job(compact_tables, run_config=request.run_config)  # not started yet
        assert f"compaction run {pending.run_id} is queued" in skipped(tick(small_files_sensor, instance, RESOURCES))
        instance.report_run_canceled(pending)

        rows = catalog.load_table(TRADES.identifier).scan().to_arrow().num_rows
        report = _metadata(compact_tables.execute_in_process(run_config=request.run_config, tags=request.tags,
                                                             resources=RESOURCES, instance=instance), "compact")
        assert (report["files_before"], report["files_after"]) == (SMALL_FILES_TRIGGER, 1)
        assert catalog.load_table(TRADES.identifier).scan().to_arrow().num_rows == rows
        assert "no partition of trades, quotes holds" in skipped(tick(small_files_sensor, instance, RESOURCES))
