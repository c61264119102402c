"""The registry client against a real Confluent-compatible Schema Registry, and values Confluent's own
deserializer reads."""

import json

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from k2_pipelines.dev.schema_registry_server import SchemaRegistryServer, build
from k2_pipelines.lib.avro.iceberg import load_avro
from k2_pipelines.lib.avro.registry import ConfluentRegistry, default_registry
from k2_pipelines.lib.binance.normalize import BadFrame, normalize
from k2_pipelines.lib.binance.producer import MarketDataProducer
from k2_pipelines.lib.binance.recording import read_recording, replay
from k2_pipelines.lib.binance.sample import generate_session
from k2_pipelines.settings import CHECKOUT
from k2_pipelines_tests.conftest import free_port
from k2_pipelines_tests.kafka_helpers import consume_all, unique_topics


@pytest.fixture(scope="module")
def registry_server():
    server = SchemaRegistryServer(build(CHECKOUT / ".k2" / "bin" / "schema-registry"), free_port())
    server.start()
    yield server
    server.stop()


def test_ids_come_from_the_registry_and_resolve_to_the_schema(registry_server):
    registry = ConfluentRegistry(registry_server.url)
    trade = load_avro("trade_v2")
    trade_id = registry.register("a.trades-value", trade)
    assert registry.register("b.trades-value", trade) == trade_id  # one id per schema, whatever the subject
    assert registry.register("a.quotes-value", load_avro("quote_v2")) != trade_id
    assert ConfluentRegistry(registry_server.url).schema(trade_id) == trade  # a fresh client, as a consumer has
    with pytest.raises(KeyError):
        registry.schema(trade_id + 1000)


def test_replayed_values_decode_with_confluents_deserializer(registry_server, kafka_broker, tmp_path, monkeypatch):
    monkeypatch.setenv("K2_SCHEMA_REGISTRY_URL", registry_server.url)
    registry = default_registry()
    assert isinstance(registry, ConfluentRegistry)
    session = tmp_path / "session.jsonl"
    counts = generate_session(session, ["BTCUSDT", "ETHUSDT"], 3_000, seed=11, faults={"malformed"})
    topics = unique_topics()
    producer = MarketDataProducer(kafka_broker.bootstrap, registry, topics)
    replay(session, producer)
    assert producer.flush(60) == 0

    expected = {}
    for received_at_us, frame in read_recording(session):
        try:
            normalized = normalize(frame, received_at_us)
        except BadFrame:
            continue
        if normalized.kind == "trades":
            expected[normalized.record["trade_id"]] = normalized.record
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry_server.url}))
    messages = consume_all(kafka_broker.bootstrap, topics.trades, counts["trades"])
    decoded = [deserialize(m.value(), SerializationContext(topics.trades, MessageField.VALUE)) for m in messages]
    assert len(decoded) == len(expected) == counts["trades"]
    for record in decoded:
        want = expected[record["trade_id"]]
        assert (record["symbol"], record["price"], record["quantity"], record["side"], record["source_sequence"],
                record["vendor_data"]) == (want["symbol"], want["price"], want["quantity"], want["side"],
                                           want["source_sequence"], want["vendor_data"])
        assert int(record["timestamp"].timestamp() * 1000) * 1000 == want["timestamp"]
    subjects = SchemaRegistryClient({"url": registry_server.url}).get_subjects() or []
    assert f"{topics.trades}-value" in subjects
    assert json.loads(SchemaRegistryClient({"url": registry_server.url}).get_latest_version(
        f"{topics.trades}-value").schema.schema_str)["name"] == "TradeV2"
