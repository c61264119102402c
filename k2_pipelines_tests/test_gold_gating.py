"""The gold bars across runs: a UTC day is not built from trades whose blocking quality checks failed in the run that
wrote them (an ASX load, a drain), until a reload or a quarantine has replaced or removed them."""

from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
import pytest

from k2_pipelines.definitions import defs
from k2_pipelines.defs.asx.assets import asx_reference_data, asx_trades
from k2_pipelines.defs.asx.resources import AsxLandingResource
from k2_pipelines.defs.binance.assets import binance_trades
from k2_pipelines.defs.binance.checks import binance_trades_quality
from k2_pipelines.defs.gold.schedules import HELD_TAG, build_ohlcv_hourly
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.recovery.quality_sensor import quality_gate_sensor
from k2_pipelines.defs.recovery.runbooks import quarantine_bad_batch
from k2_pipelines.defs.upkeep.jobs import expire_snapshots_job
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.lib.gold.ohlcv import day_trades
from k2_pipelines.lib.iceberg.summary import DRAIN_RUN_ID
from k2_pipelines.lib.iceberg.tables import OHLCV_TABLES, QUARANTINE, TRADES
from k2_pipelines_tests.helpers import run_asx_load
from k2_pipelines_tests.kafka_helpers import unique_topics
from k2_pipelines_tests.recovery_helpers import resources, tick
from k2_pipelines_tests.test_gold_ohlcv import DAYS, _assert_same_bars, _by_key, _expected, _gold

EVERYTHING_IN_THE_FUTURE = QualityResource(future_tolerance_seconds=-1e10)  # fails the blocking not_in_future


def _build(instance, first: date, last: date | None = None) -> dg.ExecuteInProcessResult:
    """A build_ohlcv run of a day, or of a range in one run (as a single-run backfill launches it)."""
    job = defs().resolve_job_def("build_ohlcv")
    if last is None:
        return job.execute_in_process(partition_key=first.isoformat(), instance=instance, raise_on_error=False)
    tags = {"dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat()}
    return job.execute_in_process(tags=tags, instance=instance, raise_on_error=False)


def _held_back(result: dg.ExecuteInProcessResult, interval: str = "1m") -> str:
    assert not result.success
    failure = result.failure_data_for_node(f"ohlcv_{interval}").user_failure_data
    assert failure is not None, "the bars failed, but not by the gate"
    return failure.description


def _no_bars(catalog) -> bool:
    return all(len(_gold(catalog, interval)) == 0 for interval in OHLCV_TABLES)


def _hourly(instance, at: datetime):
    """One tick of the schedule (the context closes the instance it opens from the ref, as the daemon's does)."""
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                   resources={"iceberg": IcebergCatalogResource()}) as context:
        return build_ohlcv_hourly(context)


def test_days_of_an_asx_load_that_failed_a_blocking_check_wait_for_a_reload_that_passes(catalog, landing,
                                                                                         rows_slip_past_the_rules):
    failing = {"resources": {"quality": {"config": {"future_tolerance_seconds": -1e10}}}}
    with dg.instance_for_test() as instance:
        assert run_asx_load(DAYS[0].isoformat(), DAYS[-1].isoformat(), instance=instance).success
        bad = run_asx_load(DAYS[2].isoformat(), raise_on_error=False, instance=instance, run_config=failing)
        assert not bad.success  # the reload committed its rows, then its blocking check failed

        # a backfill of the three UTC days in one run: UTC days DAYS[1] and DAYS[2] hold trading date DAYS[2]
        whole = _build(instance, DAYS[0], DAYS[2])
        message = _held_back(whole)
        assert message.startswith(f"ohlcv_1m held back 2 of the run's 3 UTC day(s) ({DAYS[1]}..{DAYS[2]})")
        assert "Nothing was committed for any day of this run" in message
        for day in DAYS[1:]:
            assert (f"- {day}: ASX trading date(s) {DAYS[2]}, written by run {bad.run_id}: failed not_in_future: "
                    in message)
        assert f"reload ASX trading date(s) {DAYS[2]} from corrected files (job asx_load)" in message
        assert f"backfill the other days ({DAYS[0]}) on their own" in message
        assert _held_back(whole, "1d").startswith("ohlcv_1d held back 2")
        assert _no_bars(catalog)  # not even the day that could have been built

        alone = _build(instance, DAYS[0])  # trading dates DAYS[0] and DAYS[1] passed in the first load
        assert alone.success
        _assert_same_bars(_by_key(_gold(catalog, "1m", DAYS[0])), _expected(day_trades(catalog, DAYS[0]), "1m"))

        # the schedule requests a held day once, tagged with the hold; that run fails saying why, later ticks skip it
        at = datetime.combine(DAYS[2], time(0, 10), UTC)
        first = _hourly(instance, at)
        assert [(r.partition_key, HELD_TAG in r.tags) for r in first] == [(str(DAYS[1]), True), (str(DAYS[2]), True)]
        for request in first:
            assert not defs().resolve_job_def("build_ohlcv").execute_in_process(
                partition_key=request.partition_key, tags=request.tags, instance=instance, raise_on_error=False).success
        assert all(len(_gold(catalog, interval, day)) == 0 for day in DAYS[1:] for interval in OHLCV_TABLES)
        skipped = _hourly(instance, at + timedelta(hours=1))
        assert isinstance(skipped, dg.SkipReason) and f"{DAYS[1]} is held back" in skipped.skip_message

        fixed = run_asx_load(DAYS[2].isoformat(), instance=instance)  # the files reloaded, checks passing
        assert fixed.success
        again = _hourly(instance, at + timedelta(hours=2))
        assert [(r.partition_key, HELD_TAG in r.tags) for r in again] == [(str(DAYS[1]), False),
                                                                          (str(DAYS[2]), False)]
        assert _build(instance, DAYS[0], DAYS[2]).success
    for day in DAYS:
        for interval in OHLCV_TABLES:
            _assert_same_bars(_by_key(_gold(catalog, interval, day)), _expected(day_trades(catalog, day), interval))


def test_an_asx_load_whose_checks_never_ran_holds_its_days_back(catalog, landing):
    with dg.instance_for_test() as instance:
        load = dg.materialize([asx_reference_data, asx_trades], partition_key=DAYS[1].isoformat(), instance=instance,
                              resources={"iceberg": IcebergCatalogResource(), "asx_landing": AsxLandingResource(),
                                         "quality": QualityResource()})
        assert load.success and not load.get_asset_check_evaluations()  # loaded without its checks
        message = _held_back(_build(instance, DAYS[1]))
    assert (f"- {DAYS[1]}: ASX trading date(s) {DAYS[1]}, written by run {load.run_id}: no evaluation of its "
            "blocking checks on asx_trades is recorded") in message
    assert f"Fix: reload ASX trading date(s) {DAYS[1]} (job asx_load, which runs the checks)" in message
    assert _no_bars(catalog)


@pytest.fixture
def session_parts(kafka_broker, tmp_path):
    """One sample session (UTC day 2025-11-21) in three parts, produced one at a time to unique topics."""
    session = tmp_path / "session.jsonl"
    generate_session(session, ["BTCUSDT", "ETHUSDT"], 3_000, seed=4)
    lines = session.read_text().splitlines(keepends=True)
    parts = []
    for index in range(3):
        part = tmp_path / f"part-{index}.jsonl"
        part.write_text("".join(lines[index * len(lines) // 3:(index + 1) * len(lines) // 3]))
        parts.append(part)
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)

    def produce(index: int) -> None:
        replay(parts[index], producer)
        assert producer.flush(30) == 0

    return topics, produce


def test_a_drained_batch_that_failed_a_blocking_check_holds_its_day_back_until_quarantined(kafka_broker, catalog,
                                                                                           session_parts,
                                                                                           rows_slip_past_the_rules):
    topics, produce = session_parts
    used = resources(kafka_broker, topics)
    day = date(2025, 11, 21)

    def drain(quality: QualityResource) -> dg.ExecuteInProcessResult:
        return dg.materialize([binance_trades, binance_trades_quality], instance=instance,
                              resources=used | {"quality": quality}, raise_on_error=False)

    with dg.instance_for_test() as instance:
        cursor = tick(quality_gate_sensor, instance, used).cursor  # the sensor runs before the bad batch
        produce(0)
        assert drain(QualityResource()).success
        produce(1)
        bad = drain(EVERYTHING_IN_THE_FUTURE)
        assert not bad.success
        produce(2)
        assert drain(QualityResource()).success  # a later batch passes: the bad one is still in the table

        message = _held_back(_build(instance, day))
        assert message.startswith(f"ohlcv_1m held back 1 of the run's 1 UTC day(s) ({day})")
        assert (
            f"- {day}: Binance batch (" in message and f"written by run {bad.run_id}: failed not_in_future" in message
        )
        assert f"quarantine_bad_batch with table=trades, source_run_id={bad.run_id}" in message
        assert _no_bars(catalog)
        # expiry of everything it may take keeps the bad batch's snapshot: the gate and the quarantine need it
        snapshots = len(catalog.load_table(TRADES.identifier).snapshots())
        assert expire_snapshots_job.execute_in_process(instance=instance, resources=used, run_config={
            "ops": {"expire": {"config": {"tables": ["trades"], "drained_older_than_hours": 0}}}}).success
        kept = catalog.load_table(TRADES.identifier).snapshots()
        assert len(kept) < snapshots and bad.run_id in {s.summary.get(DRAIN_RUN_ID) for s in kept}
        assert _held_back(_build(instance, day)) == message

        [request] = tick(quality_gate_sensor, instance, used, cursor).run_requests
        # the runbook runs with the thresholds the check failed on, and names the same rows: here all of the batch
        quarantine = dg.Definitions(jobs=[quarantine_bad_batch], resources=used | {
            "quality": EVERYTHING_IN_THE_FUTURE}).resolve_job_def(
            "quarantine_bad_batch").execute_in_process(run_config=request.run_config, instance=instance)
        assert quarantine.success
        built = _build(instance, day)
        assert built.success
    trades = day_trades(catalog, day)
    assert len(catalog.load_table(QUARANTINE.identifier).scan().to_arrow()) > 0  # the bad batch left the table
    bars = _gold(catalog, "1m", day)
    assert sum(bars["trade_count"].to_pylist()) == trades.num_rows
    _assert_same_bars(_by_key(bars), _expected(trades, "1m"))


def test_a_failed_batch_checked_again_on_its_own_and_passing_is_not_held_back(kafka_broker, catalog, session_parts,
                                                                             rows_slip_past_the_rules):
    topics, produce = session_parts
    used = resources(kafka_broker, topics)
    day = date(2025, 11, 21)
    with dg.instance_for_test() as instance:
        produce(0)
        bad = dg.materialize([binance_trades, binance_trades_quality], instance=instance, raise_on_error=False,
                             resources=used | {"quality": EVERYTHING_IN_THE_FUTURE})
        assert not bad.success
        assert f"written by run {bad.run_id}" in _held_back(_build(instance, day))

        # the check alone judges the newest drain's batch: the same rows, now within the limits (a threshold fixed)
        again = dg.materialize([binance_trades, binance_trades_quality], instance=instance, resources=used,
                               selection=dg.AssetSelection.checks(binance_trades_quality))
        assert {e.metadata["validated_run"].value for e in again.get_asset_check_evaluations()} == {bad.run_id}
        assert _build(instance, day).success
    _assert_same_bars(_by_key(_gold(catalog, "1m", day)), _expected(day_trades(catalog, day), "1m"))
