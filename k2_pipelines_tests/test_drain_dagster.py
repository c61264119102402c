"""The drain assets, jobs and lag sensor in Dagster."""

import re

import dagster as dg

from k2_pipelines.defs.binance import sensors as binance_sensors
from k2_pipelines.defs.binance.assets import binance_quotes, binance_trades
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.binance.schedules import drain_schedules
from k2_pipelines.defs.binance.sensors import binance_lag_sensor
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines_tests.conftest import free_port
from k2_pipelines_tests.kafka_helpers import unique_topics


def test_the_sensor_launches_drains_by_the_batch_policy_and_materializations_report_it(kafka_broker, catalog,
                                                                                        tmp_path, monkeypatch):
    session = tmp_path / "session.jsonl"
    counts = generate_session(session, ["BTCUSDT", "ETHUSDT"], 3_000, seed=2, faults={"malformed"})
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(30) == 0
    resources = {"iceberg": IcebergCatalogResource(), "quality": QualityResource(),
                 "binance_kafka": BinanceKafkaResource(bootstrap=kafka_broker.bootstrap, trades_topic=topics.trades,
                                                       quotes_topic=topics.quotes)}

    with dg.instance_for_test() as instance:
        tick = binance_lag_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert sorted(r.job_name for r in tick.run_requests) == ["drain_binance_quotes", "drain_binance_trades"]
        again = binance_lag_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in tick.run_requests]  # same range, same key

        result = dg.materialize([binance_trades, binance_quotes], instance=instance, resources=resources,
                                run_config={"ops": {"binance_trades": {"config": {"max_messages": 1_000}}}})
        assert result.success
        trades = result.asset_materializations_for_node("binance_trades")[0].metadata
        quotes = result.asset_materializations_for_node("binance_quotes")[0].metadata
        assert trades["messages"].value == 1_000 and trades["lag_after"].value == counts["trades"] - 1_000
        assert quotes["rows_written"].value == counts["quotes"] and quotes["lag_after"].value == 0
        assert set(trades["offsets"].value) == {"0", "1", "2"} and trades["snapshot_after"].value != "None"
        assert "BTCUSDT" in trades["rows_by_symbol"].value

        # the batch policy: trades lag, but less than a full batch, and were drained just now
        waiting = binance_lag_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert re.search(r"lag \d+, drained \d+ s ago \(every 300 s", waiting.skip_message)
        monkeypatch.setattr(binance_sensors, "FULL_BATCH_MESSAGES", counts["trades"] - 1_000)  # a full batch waits
        full = binance_lag_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert [r.job_name for r in full.run_requests] == ["drain_binance_trades"]  # quotes caught up
        monkeypatch.setattr(binance_sensors, "FULL_BATCH_MESSAGES", counts["trades"])
        monkeypatch.setattr(binance_sensors, "DRAIN_INTERVAL_SECONDS", 0)  # the newest drain is old enough
        later = binance_lag_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert [r.job_name for r in later.run_requests] == ["drain_binance_trades"]
        assert later.run_requests[0].run_key != next(r.run_key for r in tick.run_requests
                                                     if r.job_name == "drain_binance_trades")


def test_the_fallback_schedule_drains_only_a_lagging_topic_it_can_reach(kafka_broker, catalog, tmp_path):
    session = tmp_path / "session.jsonl"
    generate_session(session, ["BTCUSDT"], 200, seed=3)
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(30) == 0
    [trades_schedule, _] = drain_schedules

    def tick(bootstrap: str) -> dg.RunRequest | dg.SkipReason:
        resources = {"iceberg": IcebergCatalogResource(), "quality": QualityResource(),
                     "binance_kafka": BinanceKafkaResource(bootstrap=bootstrap, trades_topic=topics.trades)}
        return trades_schedule(dg.build_schedule_context(resources=resources))

    assert isinstance(tick(kafka_broker.bootstrap), dg.RunRequest)
    unreachable = tick(f"127.0.0.1:{free_port()}")  # a broker that is down: a skip, not a failing drain
    assert isinstance(unreachable, dg.SkipReason) and "cannot read the offsets" in unreachable.skip_message
