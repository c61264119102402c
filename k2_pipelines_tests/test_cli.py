import json

import dagster as dg

from k2_pipelines.cli import main
from k2_pipelines.lib.iceberg.tables import ALL_TABLES
from k2_pipelines_tests.helpers import lines_by_date, run_asx_load


def test_tables_reports_every_table_through_the_pipelines_catalog(k2_home, landing, capsys):
    run_asx_load("2014-03-10", "2014-03-12")
    assert main(["tables", "--json"]) == 0
    stats = {s["table"]: s for s in json.loads(capsys.readouterr().out)}
    assert set(stats) == {definition.identifier for definition in ALL_TABLES}
    assert stats["market_data.trades"]["rows"] == sum(lines_by_date(landing / "trades").values())
    assert stats["market_data.quotes"]["rows"] == sum(lines_by_date(landing / "quotes").values())
    assert stats["market_data.trades"]["data_files"] > 0 and stats["market_data.trades"]["bytes"] > 0
    assert stats["market_data.trades"]["snapshot_id"]
    assert main(["tables"]) == 0
    assert "market_data.trades" in capsys.readouterr().out


def test_asx_load_command_backfills_a_range(k2_home, landing, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(k2_home / "dagster"))
    assert main(["asx", "load", "--start", "2014-03-10", "--end", "2014-03-12"]) == 0
    out = capsys.readouterr().out
    assert "asx_trades 2014-03-10..2014-03-12: " in out and "succeeded" in out


def test_pyiceberg_configuration_wins_over_the_embedded_default(k2_home, monkeypatch, capsys):
    """The pipelines and `k2 tables` read the catalog named k2 from pyiceberg's own configuration."""
    from k2_pipelines.lib.iceberg.catalog import load_k2_catalog

    elsewhere = k2_home / "configured"
    elsewhere.mkdir()
    monkeypatch.setenv("PYICEBERG_CATALOG__K2__TYPE", "sql")
    monkeypatch.setenv("PYICEBERG_CATALOG__K2__URI", f"sqlite:///{elsewhere / 'other.db'}")
    monkeypatch.setenv("PYICEBERG_CATALOG__K2__WAREHOUSE", (elsewhere / "wh").as_uri())
    assert main(["tables", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert all(s["location"].startswith((elsewhere / "wh").as_uri()) for s in stats)
    assert (elsewhere / "other.db").exists() and not (k2_home / "k2" / "catalog.db").exists()
    assert load_k2_catalog().properties["uri"].endswith("other.db")


def test_upkeep_runs_on_demand_and_incidents_are_listed(k2_home, landing, capsys, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(k2_home / "dagster"))
    run_asx_load("2014-03-10", "2014-03-12")
    assert main(["upkeep", "compact", "--tables", "trades,quotes", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "compact_tables run" in out and "dry run" in out
    assert "| market_data.trades |" in out and "| market_data.quotes |" in out
    assert main(["upkeep", "orphans", "--tables", "nope"]) == 1  # an unknown table: a failed run, nothing touched
    assert "FAILED" in capsys.readouterr().out
    assert main(["upkeep", "prune-runs", "--keep-days", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out  # the compaction's run, not the ASX load's (a partition's load is kept)
    assert "prune_runs run" in out and "deleted_succeeded 1, deleted_failed_or_canceled 0" in out
    assert main(["incidents", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_gold_build_command_builds_a_range_or_says_why_days_are_held_back(k2_home, landing, capsys, monkeypatch,
                                                                          rows_slip_past_the_rules):
    monkeypatch.setenv("DAGSTER_HOME", str(k2_home / "dagster"))
    assert main(["asx", "load", "--start", "2014-03-10", "--end", "2014-03-12"]) == 0
    assert main(["gold", "build", "--start", "2014-03-09", "--end", "2014-03-12"]) == 0
    out = capsys.readouterr().out
    for interval in ("1m", "1h", "1d"):  # once per asset, not once per day of the range
        assert out.count(f"ohlcv_{interval} 2014-03-09..2014-03-12: ") == 1
    assert "succeeded" in out

    with dg.DagsterInstance.get() as instance:  # the persistent instance the command records in
        failing = {"resources": {"quality": {"config": {"future_tolerance_seconds": -1e10}}}}
        assert not run_asx_load("2014-03-11", raise_on_error=False, instance=instance, run_config=failing).success
    capsys.readouterr()
    assert main(["gold", "build", "--start", "2014-03-11"]) == 1
    out = capsys.readouterr().out
    assert "held back 1 of the run's 1 UTC day(s) (2014-03-11)" in out and "failed not_in_future" in out
    assert "FAILED" in out
