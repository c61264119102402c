"""Bounded batches read from explicit offsets, on the real broker."""

import uuid

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from k2_pipelines.lib.drain.drain import reader_for, trades_target
from k2_pipelines.lib.drain.kafka_batch import Limits, OffsetsOutOfRange

PARTITIONS = 3


def _topic(kafka_broker, messages: int) -> str:
    """A fresh 3-partition topic holding `messages` values b"0", b"1", ... keyed round-robin."""
    topic = f"test.batch.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    _produce(kafka_broker, topic, range(messages))
    return topic


def _produce(kafka_broker, topic: str, numbers) -> None:
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for n in numbers:
        producer.produce(topic, str(n).encode(), partition=n % PARTITIONS, key=f"k{n}".encode())
    assert producer.flush(30) == 0


def _values(batch) -> list[int]:
    return [int(batch.value(i)) for i in range(len(batch))]


def test_batch_after_batch_reads_every_message_once(kafka_broker):
    topic = _topic(kafka_broker, 5_000)
    reader = reader_for(kafka_broker.bootstrap, trades_target(topic), **{"group.id": uuid.uuid4().hex})
    seen, stored, sizes = [], {}, []
    while len(batch := reader.read(stored, Limits(max_messages=700))):
        seen += _values(batch)
        sizes.append(len(batch))
        assert batch.keys.to_pylist() == [f"k{n}".encode() for n in _values(batch)]
        stored = batch.end
    assert sorted(seen) == list(range(5_000))
    assert max(sizes) == 700 and stored == {p: len(range(p, 5_000, PARTITIONS)) for p in range(PARTITIONS)}
    reader.close()


def test_a_batch_starts_where_it_is_told_even_after_the_reader_read_further(kafka_broker):
    topic = _topic(kafka_broker, 600)
    reader = reader_for(kafka_broker.bootstrap, trades_target(topic), **{"group.id": uuid.uuid4().hex})
    first = reader.read({}, Limits(max_messages=300))
    reader.read(first.end, Limits(max_messages=200))  # read on, as a drain that then lost its commit race does
    rest = reader.read(first.end, Limits())
    assert rest.start == first.end and sorted(_values(first) + _values(rest)) == list(range(600))
    reader.close()


def test_messages_produced_after_a_batch_began_are_left_for_the_next(kafka_broker):
    topic = _topic(kafka_broker, 90)
    reader = reader_for(kafka_broker.bootstrap, trades_target(topic), **{"group.id": uuid.uuid4().hex})
    first = reader.read({}, Limits())
    assert sorted(_values(first)) == list(range(90)) and not sum(first.lag_after.values())
    _produce(kafka_broker, topic, range(90, 120))
    second = reader.read(first.end, Limits())
    assert sorted(_values(second)) == list(range(90, 120))
    assert not len(reader.read(second.end, Limits()))
    reader.close()


def test_a_tombstone_is_a_null_value_not_an_empty_one(kafka_broker):
    topic = _topic(kafka_broker, 0)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for value in (b"a", None, b"", b"b"):
        producer.produce(topic, value, partition=0)
    assert producer.flush(30) == 0
    batch = reader_for(kafka_broker.bootstrap, trades_target(topic)).read({}, Limits())
    assert [batch.value(i) for i in range(len(batch))] == [b"a", None, b"", b"b"]


def test_offsets_the_topic_cannot_serve_are_an_error_never_a_silent_skip(kafka_broker):
    topic = _topic(kafka_broker, 30)
    reader = reader_for(kafka_broker.bootstrap, trades_target(topic), **{"group.id": uuid.uuid4().hex})
    with pytest.raises(OffsetsOutOfRange, match="past the end"):
        reader.read({0: 11}, Limits())  # partition 0 holds 10: a recreated topic
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    [deleted] = admin.delete_records([TopicPartition(topic, 1, 4)]).values()
    deleted.result(30)  # retention removed offsets 0..3 of partition 1
    with pytest.raises(OffsetsOutOfRange, match="deleted before being drained"):
        reader.read({1: 2}, Limits())
    assert len(reader.read({0: 10, 1: 4, 2: 10}, Limits())) == 6
    reader.close()
