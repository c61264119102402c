"""What the recovery tests share: resources pointing at their broker, data in it, sensor ticks and runs."""

import dagster as dg

from k2_pipelines.defs.binance.assets import binance_quotes, binance_trades
from k2_pipelines.defs.binance.checks import binance_quotes_quality, binance_trades_quality
from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.quality.resources import QualityResource
from k2_pipelines.defs.recovery.incident_sensors import incident_resolution_sensor
from k2_pipelines.dev.broker import Broker
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.binance.producer import MarketDataProducer, Topics
from k2_pipelines.lib.binance.recording import replay
from k2_pipelines.lib.binance.sample import generate_session

DRAIN_ASSETS = [binance_trades, binance_quotes, binance_trades_quality, binance_quotes_quality]


def resources(broker: Broker, topics: Topics) -> dict:
    return {"iceberg": IcebergCatalogResource(), "quality": QualityResource(),
            "binance_kafka": BinanceKafkaResource(bootstrap=broker.bootstrap, trades_topic=topics.trades,
                                                  quotes_topic=topics.quotes)}


def produce(broker: Broker, topics: Topics, tmp_path, frames: int, seed: int) -> dict:
    session = tmp_path / f"session-{seed}.jsonl"
    counts = generate_session(session, ["BTCUSDT", "ETHUSDT"], frames, seed=seed)
    producer = MarketDataProducer(broker.bootstrap, default_registry(), topics)
    replay(session, producer)
    assert producer.flush(60) == 0
    return counts


def tick(sensor, instance, resources: dict, cursor: str | None = None):
    """One evaluation of a sensor, as the daemon runs it (the result carries the next cursor)."""
    return sensor(
        dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor, sensor_name=sensor.name)
    )


def skipped(result) -> str | None:
    """Why a tick launched nothing (None if it launched runs)."""
    reason = result if isinstance(result, dg.SkipReason) else result.skip_reason
    return reason.skip_message if reason else None


def drain_run(instance, resources: dict, tags: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(DRAIN_ASSETS, instance=instance, resources=resources, tags=tags or {},
                          raise_on_error=False)


def resolve_incident(instance, run: dg.ExecuteInProcessResult, resources: dict) -> None:
    """The incident-resolution sensor seeing `run` succeed, as the daemon delivers it."""
    incident_resolution_sensor(dg.build_run_status_sensor_context(
        sensor_name=incident_resolution_sensor.name, dagster_event=run.get_run_success_event(),
        dagster_instance=instance, dagster_run=run.dagster_run, resources=resources))
