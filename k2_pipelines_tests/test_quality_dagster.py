"""The data-quality checks as Dagster runs them: on what each run wrote, blocking downstream assets on ERROR, with
reports a browser renders and `k2 dq report` prints."""

import subprocess
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from k2_pipelines.cli import main
from k2_pipelines.defs.asx.assets import asx_reference_data, asx_trades
from k2_pipelines.defs.asx.checks import asx_trades_quality
from k2_pipelines.defs.asx.partitions import asx_trading_days
from k2_pipelines.defs.asx.resources import AsxLandingResource
from k2_pipelines.defs.binance.assets import binance_trades
from k2_pipelines.defs.binance.checks import binance_trades_quality
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.lib.asx.sample import DEFAULT_START, trading_days
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.lib.iceberg.tables import SEQUENCE_GAPS, TRADES
from k2_pipelines.lib.quality.thresholds import Thresholds
from k2_pipelines_tests.conftest import SAMPLE_DAYS
from k2_pipelines_tests.helpers import run_asx_load, scan
from k2_pipelines_tests.kafka_helpers import unique_topics

DAYS = [d.isoformat() for d in trading_days(DEFAULT_START, SAMPLE_DAYS)]
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _evaluations(result, asset: str) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.to_user_string() == asset}


def _out_of_hours(catalog) -> int:
    """Trades outside 10:00-16:12 Sydney time, counted here without the checks' code."""
    local = pc.local_timestamp(
        scan(catalog, TRADES.identifier)["timestamp"].cast(pa.timestamp("us", tz="Australia/Sydney"))
    )
    minutes = pc.add(pc.multiply(pc.hour(local), 60), pc.minute(local))
    thresholds = Thresholds()
    return pc.sum(pc.or_(pc.less(minutes, thresholds.trading_opens_minute),
                         pc.greater(minutes, thresholds.trading_closes_minute))).as_py()


def test_an_asx_load_checks_what_it_wrote_and_reports_per_trading_date(catalog, landing, tmp_path, capsys):
    result = run_asx_load(DAYS[0], DAYS[-1])
    assert result.success  # a failed WARN check fails nothing
    trades = _evaluations(result, "asx_trades")
    assert set(trades) == {spec.name for spec in asx_trades_quality.check_specs}
    assert [name for name, e in trades.items() if not e.passed] == ["out_of_hours"]
    assert trades["out_of_hours"].severity == dg.AssetCheckSeverity.WARN
    assert trades["out_of_hours"].metadata["failing"].value == _out_of_hours(catalog) > 0
    assert all(e.passed for e in _evaluations(result, "asx_reference_data").values())
    quotes = _evaluations(result, "asx_quotes")
    assert quotes["reconciliation"].passed and quotes["book_not_crossed"].passed

    report = Path(trades["out_of_hours"].metadata["report"].value)
    for day in DAYS:
        assert day in trades["out_of_hours"].metadata["partition_reports"].value
    dom = subprocess.run([*CHROMIUM, f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "asx_trades" in dom and "passed with 1 warning" in dom
    for name, evaluation in trades.items():  # every check, with its count, as the browser renders the page
        assert f"<td>{name}</td>" in dom
        assert f"{evaluation.metadata['failing'].value:,}" in dom

    assert main(["dq", "report", "--asset", "asx_trades", "--partition", DAYS[0]]) == 0
    printed = capsys.readouterr().out
    assert f"asx_trades [{DAYS[0]}] run {result.run_id}" in printed and "FAIL WARN  out_of_hours" in printed
    assert main(["dq", "report", "--html"]) == 0
    pages = capsys.readouterr().out.split()
    assert str(report) in pages and all(Path(page).exists() for page in pages)


def test_a_failed_error_check_blocks_what_is_downstream_and_a_warning_does_not(catalog, landing,
                                                                               rows_slip_past_the_rules):
    @dg.asset(deps=[asx_trades], partitions_def=asx_trading_days, backfill_policy=dg.BackfillPolicy.single_run())
    def downstream_of_trades() -> None:
        """Stands for the gold tables to come."""

    def run(quality: QualityResource) -> dg.ExecuteInProcessResult:
        return dg.materialize([asx_reference_data, asx_trades, asx_trades_quality, downstream_of_trades],
                              partition_key=DAYS[0], raise_on_error=False,
                              resources={"iceberg": IcebergCatalogResource(), "asx_landing": AsxLandingResource(),
                                         "quality": quality})

    warned = run(QualityResource())
    assert warned.success and not _evaluations(warned, "asx_trades")["out_of_hours"].passed
    assert warned.asset_materializations_for_node("downstream_of_trades")

    blocked = run(QualityResource(future_tolerance_seconds=-1e10))  # every trade is "in the future"
    assert not blocked.success
    failed = _evaluations(blocked, "asx_trades")["not_in_future"]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["failing"].value == len(scan(catalog, TRADES.identifier)) > 0
    assert not blocked.asset_materializations_for_node("downstream_of_trades")


def test_a_drain_checks_its_batch_and_the_feed(kafka_broker, catalog, tmp_path):
    session = tmp_path / "session.jsonl"
    generate_session(session, ["BTCUSDT", "ETHUSDT"], 4_000, seed=4, faults={"gaps", "duplicates"})
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(30) == 0
    resources = {"iceberg": IcebergCatalogResource(), "quality": QualityResource(),
                 "binance_kafka": BinanceKafkaResource(bootstrap=kafka_broker.bootstrap, trades_topic=topics.trades,
                                                       quotes_topic=topics.quotes)}
    result = dg.materialize([binance_trades, binance_trades_quality], resources=resources)
    assert result.success
    checks = _evaluations(result, "binance_trades")
    assert {name for name, e in checks.items() if not e.passed} == {"sequence_gaps", "freshness"}  # both WARN

    rows = scan(catalog, TRADES.identifier).group_by("symbol").aggregate([("symbol", "count")]).to_pylist()
    gaps = scan(catalog, SEQUENCE_GAPS.identifier).filter(pc.starts_with(pc.field("kind"), "gap"))
    missing = {
        g["symbol"]: g["missing_sum"] for g in gaps.group_by("symbol").aggregate([("missing", "sum")]).to_pylist()
    }
    over = [r["symbol"] for r in rows
            if missing.get(r["symbol"], 0) / (r["symbol_count"] + missing.get(r["symbol"], 0)) > 0.01]
    assert checks["sequence_gaps"].metadata["failing"].value == len(over) > 0
    assert sorted(s["symbol"] for s in checks["sequence_gaps"].metadata["sample"].value) == sorted(over)
    assert checks["unique_ids"].passed and checks["dead_letter_rate"].passed  # duplicates were dropped, not written
    assert checks["freshness"].metadata["sample"].value[0]["stale"]  # 2025's events while the feed just delivered
