"""Gold OHLCV bars: computed from the trades as plain Python computes them, rebuilt per UTC day idempotently, built by
Dagster downstream of the trades' blocking quality checks."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from k2_pipelines.definitions import defs
from k2_pipelines.defs.binance.assets import binance_trades
from k2_pipelines.defs.binance.checks import binance_trades_quality
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.gold.assets import ohlcv_1m
from k2_pipelines.defs.gold.partitions import utc_days
from k2_pipelines.defs.gold.schedules import build_ohlcv_hourly
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.lib.asx.sample import DEFAULT_START, generate, trading_days
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.lib.gold.ohlcv import TRADE_COLUMNS, bars, day_trades, rebuild_day, utc_day_range
from k2_pipelines.lib.iceberg.tables import OHLCV_TABLES, TRADES
from k2_pipelines_tests.conftest import SAMPLE_DAYS, SAMPLE_SYMBOLS, SAMPLE_TRADES
from k2_pipelines_tests.helpers import run_asx_load, scan
from k2_pipelines_tests.kafka_helpers import unique_topics

DAYS = trading_days(DEFAULT_START, SAMPLE_DAYS)  # ASX trading dates (Sydney), 2014-03-10..12
# UTC day DAYS[1] holds trading date DAYS[1] from 11:00 Sydney on, and DAYS[2]'s pre-open and first hour
UTC_DAY = DAYS[1]
_CUT = {"1m": dict(second=0, microsecond=0), "1h": dict(minute=0, second=0, microsecond=0),
        "1d": dict(hour=0, minute=0, second=0, microsecond=0)}


def _expected(trades: pa.Table, interval: str) -> dict[tuple, dict]:
    """Bars by (exchange, symbol, bar_start), in plain Python with exact decimals."""
    groups: dict[tuple, list[dict]] = {}
    for t in trades.select(TRADE_COLUMNS).to_pylist():
        groups.setdefault((t["exchange"], t["symbol"], t["timestamp"].replace(**_CUT[interval])), []).append(t)
    result = {}
    with localcontext() as context:
        context.prec = 60
        for key, rows in groups.items():
            ordered = sorted(rows, key=lambda t: (t["timestamp"], t["trade_id"]))
            volume = sum(t["quantity"] for t in rows)
            result[key] = dict(
                open=ordered[0]["price"], high=max(t["price"] for t in rows), low=min(t["price"] for t in rows),
                close=ordered[-1]["price"], volume=volume,
                vwap=float(sum(t["price"] * t["quantity"] for t in rows) / volume), trade_count=len(rows),
                first_trade_at=ordered[0]["timestamp"], last_trade_at=ordered[-1]["timestamp"])
    return result


def _by_key(rows: pa.Table) -> dict[tuple, dict]:
    return {(r.pop("exchange"), r.pop("symbol"), r.pop("bar_start")): r
            for r in rows.drop_columns([c for c in ("run_id",) if c in rows.column_names]).to_pylist()}


def _assert_same_bars(actual: dict[tuple, dict], expected: dict[tuple, dict]) -> None:
    assert actual.keys() == expected.keys() and expected
    for key, bar in expected.items():
        assert actual[key]["vwap"] == pytest.approx(bar["vwap"], rel=1e-12), key
        assert {**actual[key], "vwap": None} == {**bar, "vwap": None}, key


def _gold(catalog, interval: str, day: date | None = None) -> pa.Table:
    rows = scan(catalog, OHLCV_TABLES[interval].identifier)
    if day is None:
        return rows
    start, end = utc_day_range(day)
    return rows.filter((pc.field("bar_start") >= start) & (pc.field("bar_start") < end))


def _day_files(catalog, interval: str, day: date) -> set[str]:
    start, end = utc_day_range(day)
    table = catalog.load_table(OHLCV_TABLES[interval].identifier)
    tasks = table.scan(
        row_filter=f"bar_start >= '{start.isoformat()}' and bar_start < '{end.isoformat()}'"
    ).plan_files()
    return {task.file.file_path for task in tasks}


def _sorted(rows: pa.Table) -> list[dict]:
    return rows.drop_columns(["run_id"]).sort_by([("symbol", "ascending"), ("bar_start", "ascending")]).to_pylist()


def test_bars_are_the_trades_of_the_utc_day_as_plain_python_computes_them(catalog, landing):
    assert run_asx_load(DAYS[0].isoformat(), DAYS[-1].isoformat()).success
    trades = day_trades(catalog, UTC_DAY)
    start, end = utc_day_range(UTC_DAY)
    everything = scan(catalog, TRADES.identifier).to_pylist()
    assert trades.num_rows == sum(start <= t["timestamp"] < end for t in everything) > 0
    # trade ids are ASX-<company>-<trading date>-<line>: the UTC day takes trades of two trading dates
    assert {t.split("-")[2] for t in trades["trade_id"].to_pylist()} == {d.strftime("%Y%m%d") for d in DAYS[1:]}

    for interval in ("1m", "1h", "1d"):
        result = rebuild_day(catalog, interval, UTC_DAY, f"run-{interval}")
        gold = _gold(catalog, interval)
        assert len(gold) == result.bars_written == len(_gold(catalog, interval, UTC_DAY))  # nothing outside the day
        _assert_same_bars(_by_key(gold), _expected(trades, interval))
        assert set(gold["run_id"].to_pylist()) == {f"run-{interval}"}
        assert result.trades_read == trades.num_rows and sum(result.trades_by_symbol.values()) == trades.num_rows
        assert set(result.bars_by_symbol) == set(SAMPLE_SYMBOLS)
        table = catalog.load_table(result.table)
        assert table.current_snapshot().snapshot_id == result.snapshot_after
        assert table.current_snapshot().summary["k2.run-id"] == f"run-{interval}"
    assert len(_gold(catalog, "1d")) == len(SAMPLE_SYMBOLS)  # one daily bar per symbol


def test_open_and_close_break_ties_in_event_time_by_trade_id():
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [("T3", at, "10.5", "2"), ("T1", at, "10.1", "1"), ("T2", at, "10.3", "3"),  # three at the same instant
            ("T9", at + timedelta(seconds=70), "9.9", "0.00000001"), ("T0", at - timedelta(hours=1), "11", "4")]
    trades = pa.table({
        "exchange": ["X"] * len(rows), "symbol": ["S"] * len(rows),
        "timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        "price": pa.array([Decimal(r[2]) for r in rows], pa.decimal128(18, 8)),
        "quantity": pa.array([Decimal(r[3]) for r in rows], pa.decimal128(18, 8)),
        "trade_id": [r[0] for r in rows]})
    minute = _by_key(bars(trades, "1m"))[("X", "S", at.replace(second=0))]
    assert (minute["open"], minute["close"], minute["trade_count"]) == (Decimal("10.1"), Decimal("10.5"), 3)
    for interval in ("1m", "1h", "1d"):
        _assert_same_bars(_by_key(bars(trades, interval)), _expected(trades, interval))
    with pytest.raises(ValueError, match="interval must be one of 1m, 5m, 1h, 1d, not '7m'"):
        bars(trades, "7m")
    with pytest.raises(ValueError, match=r"trades lack the columns \['trade_id'\]"):
        bars(trades.drop_columns(["trade_id"]), "1m")


def test_a_rerun_replaces_the_day_and_leaves_other_days_untouched(catalog, landing):
    assert run_asx_load(DAYS[0].isoformat(), DAYS[-1].isoformat()).success
    other = DAYS[0]
    for day in (other, UTC_DAY):
        rebuild_day(catalog, "1m", day, "first")
    before, other_files = _gold(catalog, "1m"), _day_files(catalog, "1m", other)

    again = rebuild_day(catalog, "1m", UTC_DAY, "second")
    after = _gold(catalog, "1m")
    assert len(after) == len(before) and _sorted(after) == _sorted(before)  # same bars, nothing counted twice
    assert set(_gold(catalog, "1m", UTC_DAY)["run_id"].to_pylist()) == {"second"}
    assert set(_gold(catalog, "1m", other)["run_id"].to_pylist()) == {"first"}
    assert _day_files(catalog, "1m", other) == other_files  # the other day's files were not even rewritten
    assert again.snapshot_before != again.snapshot_after
    assert catalog.load_table(again.table).current_snapshot().summary["k2.run-id"] == "second"


def test_a_rebuild_after_a_reload_reflects_the_new_trades(catalog, landing):
    assert run_asx_load(DAYS[0].isoformat(), DAYS[-1].isoformat()).success
    later = DAYS[2]  # holds trading date DAYS[2] only (DAYS[3] was never loaded), which is not reloaded
    for day in (UTC_DAY, later):
        rebuild_day(catalog, "1h", day, "first")
    stale, later_bars, later_files = _gold(catalog, "1h", UTC_DAY), _gold(catalog, "1h", later), \
        _day_files(catalog, "1h", later)

    generate(landing, SAMPLE_SYMBOLS, SAMPLE_DAYS, SAMPLE_TRADES, 1.5, seed=12)  # other prices and volumes
    assert run_asx_load(DAYS[1].isoformat()).success  # a reload of one trading date
    rebuild_day(catalog, "1h", UTC_DAY, "after-reload")
    fresh = _gold(catalog, "1h", UTC_DAY)
    _assert_same_bars(_by_key(fresh), _expected(day_trades(catalog, UTC_DAY), "1h"))
    assert _sorted(fresh) != _sorted(stale)
    assert _sorted(_gold(catalog, "1h", later)) == _sorted(later_bars)
    assert _day_files(catalog, "1h", later) == later_files


def test_the_build_ohlcv_job_builds_a_partition_with_its_metadata(catalog, landing):
    with dg.instance_for_test() as instance:  # the build finds the load's passed checks in the instance
        assert run_asx_load(DAYS[0].isoformat(), DAYS[-1].isoformat(), instance=instance).success
        result = defs().resolve_job_def("build_ohlcv").execute_in_process(partition_key=UTC_DAY.isoformat(),
                                                                          instance=instance)
    assert result.success
    trades = day_trades(catalog, UTC_DAY)
    for interval, table in OHLCV_TABLES.items():
        [materialization] = result.asset_materializations_for_node(f"ohlcv_{interval}")
        assert materialization.partition == UTC_DAY.isoformat()
        metadata = {key: value.value for key, value in materialization.metadata.items()}
        gold = _gold(catalog, interval)
        assert metadata["bars"] == metadata["dagster/row_count"] == len(gold)
        assert metadata["trades_read"] == trades.num_rows
        assert metadata["symbols"] == sorted(SAMPLE_SYMBOLS)
        assert metadata["snapshot"] == str(catalog.load_table(table.identifier).current_snapshot().snapshot_id)
        assert set(gold["run_id"].to_pylist()) == {result.run_id}
        _assert_same_bars(_by_key(gold), _expected(trades, interval))


def test_a_failed_blocking_check_on_the_trades_stops_the_bars_in_the_same_run(kafka_broker, catalog, tmp_path,
                                                                            rows_slip_past_the_rules):
    session = tmp_path / "session.jsonl"
    generate_session(session, ["BTCUSDT", "ETHUSDT"], 2_000, seed=4)
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(30) == 0
    day = "2025-11-21"  # the sample session's UTC day

    def run(quality: QualityResource) -> dg.ExecuteInProcessResult:
        kafka = BinanceKafkaResource(bootstrap=kafka_broker.bootstrap, trades_topic=topics.trades,
                                     quotes_topic=topics.quotes)
        return dg.materialize(
            [binance_trades, binance_trades_quality, ohlcv_1m],
            partition_key=day,
            raise_on_error=False,
            instance=instance,
            resources={"iceberg": IcebergCatalogResource(), "binance_kafka": kafka, "quality": quality},
        )

    with dg.instance_for_test() as instance:  # one instance: the second run's gate also sees the first's failure
        blocked = run(QualityResource(future_tolerance_seconds=-1e10))  # every trade is "in the future": ERROR
        assert not blocked.success
        failed = {e.check_name: e for e in blocked.get_asset_check_evaluations()}["not_in_future"]
        assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
        assert len(scan(catalog, TRADES.identifier)) > 0  # the trades landed; the bars were not built from them
        assert not blocked.asset_materializations_for_node("ohlcv_1m") and len(_gold(catalog, "1m")) == 0

        # a later run drains nothing new and its checks pass, on its own (empty) batch: within that run nothing
        # stops the bars, but the failed batch is still in the table, so the gate holds the day (until quarantined,
        # see test_gold_gating.py)
        later = run(QualityResource())
        assert all(e.passed or e.severity == dg.AssetCheckSeverity.WARN for e in later.get_asset_check_evaluations())
    assert not later.success and not later.asset_materializations_for_node("ohlcv_1m")
    held = later.failure_data_for_node("ohlcv_1m").user_failure_data.description
    assert f"written by run {blocked.run_id}: failed not_in_future" in held
    assert len(_gold(catalog, "1m")) == 0


def test_the_bars_keep_up_hourly_with_yesterday_and_today(catalog):
    graph = defs().resolve_asset_graph()
    for interval in OHLCV_TABLES:
        node = graph.get(dg.AssetKey(f"ohlcv_{interval}"))
        assert node.group_name == "gold" and node.partitions_def == utc_days
        assert {dg.AssetKey("asx_trades"), dg.AssetKey("binance_trades")} <= node.parent_keys
    assert defs().resolve_schedule_def("build_ohlcv_hourly").job_name == "build_ohlcv"
    tick = datetime(2026, 3, 1, 0, 10, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        def evaluate(at: datetime) -> list[dg.RunRequest]:
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                           resources={"iceberg": IcebergCatalogResource()}) as context:
                return build_ohlcv_hourly(context)

        requests, later = evaluate(tick), evaluate(tick + timedelta(hours=1))
    assert [r.partition_key for r in requests] == ["2026-02-28", "2026-03-01"]
    assert {r.run_key for r in requests}.isdisjoint(r.run_key for r in later)  # every tick rebuilds again
    assert utc_days.get_first_partition_key() == "2013-12-31"  # the day before the first ASX trading date (Sydney)
