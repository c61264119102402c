import base64
import socket
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.dev.broker import Broker, BrokerError
from k2_pipelines.lib.recovery.health import kafka_problem
from k2_pipelines_tests.conftest import free_port


def test_produce_consume_round_trip(kafka_broker):
    topic = f"test-roundtrip-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "enable.idempotence": True})
    sent = [f"message-{i}".encode() for i in range(20)]
    for value in sent:
        producer.produce(topic, key=b"k", value=value)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": kafka_broker.bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    received = []
    try:
        for _ in range(60):
            message = consumer.poll(1)
            if message is not None and not message.error():
                received.append(message.value())
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    assert received == sent


def test_status_reports_the_running_broker(kafka_broker):
    status = kafka_broker.status()
    assert status["running"] and status["pid"] and status["bootstrap"] == kafka_broker.bootstrap


def test_taken_port_is_a_clear_error(tmp_path, kafka_broker):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = Broker(home=tmp_path, port=port, libs=kafka_broker.libs)
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            broker.start()


def test_missing_java_is_a_clear_error(tmp_path, kafka_broker, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrokerError, match="Java"):
        Broker(home=tmp_path, port=1, libs=kafka_broker.libs).start()


def test_stop_and_restart_keeps_data(tmp_path, kafka_broker):
    from k2_pipelines_tests.conftest import free_port

    broker = Broker(home=tmp_path / "b", port=free_port(), libs=kafka_broker.libs)
    broker.start()
    topic = "kept"
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce(topic, value=b"survives a restart")
    assert producer.flush(30) == 0
    assert broker.stop()
    assert not broker.status()["running"]
    broker.start()
    try:
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g", "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        values = []
        for _ in range(60):
            message = consumer.poll(1)
            if message is not None and not message.error():
                values.append(message.value())
                break
        consumer.close()
        assert values == [b"survives a restart"]
    finally:
        broker.stop()


def test_a_cluster_id_that_starts_with_a_dash_formats(tmp_path, kafka_broker, monkeypatch):
    dashed = next(u for u in iter(uuid.uuid4, None) if base64.urlsafe_b64encode(u.bytes).startswith(b"-"))
    monkeypatch.setattr(uuid, "uuid4", lambda: dashed)  # one start in 64 drew such an id and failed
    broker = Broker(home=tmp_path, port=free_port(), libs=kafka_broker.libs)
    try:
        assert broker.start()["bootstrap"] == broker.bootstrap
    finally:
        broker.stop()


def test_a_remote_cluster_is_reached_through_its_bootstrap_servers(kafka_broker, monkeypatch):
    """As the docker/ stack configures it: the drains and the stream service go to K2_KAFKA_BOOTSTRAP_SERVERS."""
    monkeypatch.setenv("K2_KAFKA_PORT", "1")  # the local default points nowhere
    monkeypatch.setenv("K2_KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    resource = BinanceKafkaResource()
    assert resource.servers() == kafka_broker.bootstrap and kafka_problem(resource.servers()) is None
