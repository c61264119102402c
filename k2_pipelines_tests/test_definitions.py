import dagster as dg

from k2_pipelines.definitions import defs


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
