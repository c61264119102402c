"""The drain group's offsets against the ones stored in Iceberg, on the real broker: reset, deleted, recreated."""

import time

import dagster as dg
import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from k2_pipelines.defs.binance.resources import BinanceKafkaResource
from k2_pipelines.defs.iceberg.resources import IcebergCatalogResource
from k2_pipelines.defs.recovery.drift_sensor import offset_drift_sensor
from k2_pipelines.lib.avro.registry import default_registry
from k2_pipelines.lib.drain.checkpoint import stored_checkpoint
from k2_pipelines.lib.drain.drain import drain_once, group_id, reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import OffsetsOutOfRange
from k2_pipelines.lib.drain.offset_drift import RealignRefused, offset_drift, realign_group
from k2_pipelines.lib.recovery.incidents import NEEDS_HUMAN, incidents
from k2_pipelines_tests.kafka_helpers import drain_all, replay_session
from k2_pipelines_tests.recovery_helpers import tick


def _drained(kafka_broker, catalog, tmp_path):
    """A topic of trades, drained to its end; (target, stored offsets, rows in the table)."""
    _, counts, topics = replay_session(kafka_broker, tmp_path, 900, set())
    target = trades_target(topics.trades)
    drain_all(kafka_broker, target)
    table = catalog.load_table(target.table.identifier)
    stored = stored_checkpoint(table, target.topic).offsets
    assert sum(stored.values()) == counts["trades"] and len(table.scan().to_arrow()) == counts["trades"]
    # the drain's own group commit may have met the session's fresh broker still electing a coordinator (logged)
    assert realign_group(kafka_broker.bootstrap, target, stored) == stored
    return target, stored, counts["trades"]


def _commit_group(kafka_broker, target, offsets: dict[int, int]) -> None:
    """What an operator's reset does: commit offsets for the drain's group while no drain runs."""
    reader = reader_for(kafka_broker.bootstrap, target)
    try:
        reader.consumer.commit(offsets=[TopicPartition(target.topic, p, o) for p, o in offsets.items()],
                               asynchronous=False)
    finally:
        reader.close()


def _realigned(kafka_broker, target, stored: dict[int, int]) -> None:
    assert realign_group(kafka_broker.bootstrap, target, stored) == stored
    after = offset_drift(kafka_broker.bootstrap, target, stored)
    assert after.kind == "aligned" and after.committed == stored, after.detail


def test_a_reset_group_is_reported_and_realigned(kafka_broker, catalog, tmp_path):
    target, stored, _ = _drained(kafka_broker, catalog, tmp_path)
    drift = offset_drift(kafka_broker.bootstrap, target, stored)
    assert drift.kind == "aligned" and drift.committed == stored and drift.group == group_id(target), drift.detail
    assert {p: high for p, (_, high) in drift.watermarks.items()} == stored

    _commit_group(kafka_broker, target, dict.fromkeys(stored, 0))
    drift = offset_drift(kafka_broker.bootstrap, target, stored)
    assert drift.kind == "group_behind" and drift.committed == dict.fromkeys(stored, 0)
    for partition, offset in stored.items():
        if offset:
            assert f"partition {partition} at 0, {offset} behind the stored {offset}" in drift.detail
    _realigned(kafka_broker, target, stored)

    _commit_group(kafka_broker, target, {p: o + 7 for p, o in stored.items()})
    drift = offset_drift(kafka_broker.bootstrap, target, stored)
    assert drift.kind == "group_ahead" and "7 ahead of" in drift.detail
    _realigned(kafka_broker, target, stored)


def test_a_deleted_group_is_reported_and_realigned(kafka_broker, catalog, tmp_path):
    target, stored, _ = _drained(kafka_broker, catalog, tmp_path)
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    admin.delete_consumer_groups([group_id(target)])[group_id(target)].result(30)
    drift = offset_drift(kafka_broker.bootstrap, target, stored)
    assert drift.kind == "group_missing" and drift.committed == dict.fromkeys(stored), drift.detail
    assert all(f"partition {p} has no committed offset (stored {o})" in drift.detail for p, o in stored.items())
    _realigned(kafka_broker, target, stored)


def _partitions(admin: AdminClient, topic: str) -> int | None:
    """The topic's partition count, None if the broker does not know it. (Not admin.list_topics: the admin client's
    metadata request would create the topic again, as this broker creates topics on first use.)"""
    try:
        return len(admin.describe_topics(TopicCollection([topic]))[topic].result(10).partitions)
    except KafkaException as error:
        if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise
        return None


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} after {timeout}s"
        time.sleep(0.1)


def _delete_topic(admin: AdminClient, topic: str) -> None:
    """Delete the topic and wait until the broker no longer knows it (deletion is asynchronous)."""
    admin.delete_topics([topic])[topic].result(30)
    _wait_for(lambda: _partitions(admin, topic) is None, f"{topic} still exists")


def _create_topic(admin: AdminClient, topic: str, partitions: int) -> None:
    """Create the topic (again) and wait until every partition is served."""
    def created() -> bool:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
        except KafkaException as error:  # the deleted one's removal may still be under way
            assert error.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, error
            return False
        return True

    _wait_for(created, f"{topic} cannot be created")
    _wait_for(lambda: _partitions(admin, topic) == partitions, f"{topic} is not served")


def test_a_recreated_topic_is_refused_and_nothing_is_skipped_or_read_again(kafka_broker, catalog, tmp_path):
    target, stored, rows = _drained(kafka_broker, catalog, tmp_path)
    before = catalog.load_table(target.table.identifier).current_snapshot().snapshot_id
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    _delete_topic(admin, target.topic)
    drift = offset_drift(kafka_broker.bootstrap, target, stored)
    assert drift.kind == "topic_missing" and "does not exist" in drift.detail
    with pytest.raises(RealignRefused, match="does not exist"):
        realign_group(kafka_broker.bootstrap, target, stored)

    _create_topic(admin, target.topic, len(stored))
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for partition in stored:  # one message in each: fewer than were drained from every non-empty partition
        producer.produce(target.topic, b"new", partition=partition)
    assert producer.flush(30) == 0
    drift = offset_drift(kafka_broker.bootstrap, target, stored)
    assert drift.kind == "topic_recreated", drift.detail
    shorter = [p for p, o in stored.items() if o > 1]
    assert shorter and all(f"partition {p} ends at 1, {stored[p] - 1} before" in drift.detail for p in shorter)
    with pytest.raises(RealignRefused, match="recreated"):
        realign_group(kafka_broker.bootstrap, target, stored)
    assert offset_drift(kafka_broker.bootstrap, target, stored).committed == drift.committed  # nothing committed

    resources = {"iceberg": IcebergCatalogResource(),
                 "binance_kafka": BinanceKafkaResource(bootstrap=kafka_broker.bootstrap, trades_topic=target.topic)}
    with dg.instance_for_test() as instance:  # the sensor reports it to a human, once, and launches nothing
        first = tick(offset_drift_sensor, instance, resources)
        again = tick(offset_drift_sensor, instance, resources, first.cursor)
    assert not first.run_requests and not again.run_requests
    [incident] = incidents(catalog)
    assert (incident.kind, incident.status, incident.subject) == ("topic_recreated", NEEDS_HUMAN, target.topic)
    assert "topic_recreated" in incident.detail and "refuses" in incident.action

    reader = reader_for(kafka_broker.bootstrap, target)
    with pytest.raises(OffsetsOutOfRange, match="recreated"):
        drain_once(catalog, reader, target, default_registry())
    reader.close()
    table = catalog.load_table(target.table.identifier)
    assert table.current_snapshot().snapshot_id == before and len(table.scan().to_arrow()) == rows
    assert stored_checkpoint(table, target.topic).offsets == stored
