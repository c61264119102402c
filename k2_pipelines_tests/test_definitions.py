import importlib

import dagster as dg

from k2_pipelines.definitions import defs
from k2_pipelines.defs.binance import sensors as binance_sensors
from k2_pipelines.defs.recovery.orphan_sensor import WRITERS


def test_definitions_load_and_validate():
    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    keys = {key.to_user_string() for key in definitions.resolve_all_asset_keys()}
    assert {"asx_trades", "asx_quotes", "asx_reference_data"} <= keys
    assert definitions.resolve_job_def("asx_load")
    assert definitions.resolve_sensor_def("asx_landing_sensor")
    assert {"binance_trades", "binance_quotes"} <= keys
    assert definitions.resolve_sensor_def("binance_lag_sensor")
    for table in ("trades", "quotes"):
        assert definitions.resolve_job_def(f"drain_binance_{table}").tags["k2/drain"] == table
        assert definitions.resolve_schedule_def(f"drain_binance_{table}_every_15_minutes")


def test_asx_assets_are_daily_partitioned_and_backfill_in_one_run():
    graph = defs().resolve_asset_graph()
    for name in ("asx_trades", "asx_quotes", "asx_reference_data"):
        node = graph.get(dg.AssetKey(name))
        assert isinstance(node.partitions_def, dg.DailyPartitionsDefinition)
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
    assert dg.AssetKey("asx_reference_data") in graph.get(dg.AssetKey("asx_trades")).parent_keys


def test_every_runbook_and_upkeep_job_has_its_sensor_or_schedule():
    definitions = defs()
    definitions.get_repository_def().load_all_definitions()  # what the daemon's code server does
    sensors = {"kafka_health_sensor": "catch_up_after_outage", "storage_health_sensor": "catch_up_after_outage",
               "quality_gate_sensor": "quarantine_bad_batch", "offset_drift_sensor": "realign_consumer_offsets",
               "dead_letter_sensor": "replay_dead_letters", "orphan_cleanup_sensor": "remove_orphan_files"}
    for sensor, job in sensors.items():
        assert job in {target.job_name for target in definitions.resolve_sensor_def(sensor).targets}
    assert {"drain_binance_trades", "asx_load", "quarantine_landing_file"} <= {
        target.job_name for target in definitions.resolve_sensor_def("failed_run_sensor").targets}
    assert {job.name for job in definitions.resolve_all_job_defs()} >= WRITERS  # the orphan sensor's, by name
    for job in ("compact_tables", "expire_snapshots", "remove_orphan_files"):
        assert definitions.resolve_schedule_def(f"{job}_nightly").job_name == job
        assert definitions.resolve_job_def(job).tags["k2/upkeep"]
    assert definitions.resolve_schedule_def("prune_runs_hourly").job_name == "prune_runs"
    assert definitions.resolve_job_def("prune_runs").tags["k2/upkeep"]


def test_the_drain_cadence_is_set_by_the_environment(monkeypatch):
    monkeypatch.setenv("K2_DRAIN_INTERVAL_SECONDS", "120")
    try:
        assert importlib.reload(binance_sensors).DRAIN_INTERVAL_SECONDS == 120
    finally:
        monkeypatch.delenv("K2_DRAIN_INTERVAL_SECONDS")
        importlib.reload(binance_sensors)
    assert binance_sensors.DRAIN_INTERVAL_SECONDS == 300
