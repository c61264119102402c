"""Read one bounded batch of a topic, from explicit offsets, as columns."""

import time
from dataclasses import dataclass

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


class OffsetsOutOfRange(RuntimeError):
    """Stored offsets the topic cannot serve: ahead of its end (recreated?) or behind its start (retention)."""


@dataclass(frozen=True)
class Limits:
    max_messages: int = 500_000
    max_bytes: int = 128 << 20  # values; bounds the drain's memory whatever the backlog
    max_seconds: float = 60.0


@dataclass
class KafkaBatch:
    values: list[bytes | None]
    keys: list[bytes | None]
    partitions: np.ndarray
    offsets: np.ndarray
    start: dict[int, int]  # partition -> first offset this batch read from
    end: dict[int, int]  # partition -> next offset after this batch
    high_watermarks: dict[int, int]

    @property
    def lag_after(self) -> dict[int, int]:
        return {p: max(self.high_watermarks[p] - self.end[p], 0) for p in self.end}


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    return sorted(metadata.partitions)


def watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in _partitions(consumer, topic)}


def read_batch(consumer: Consumer, topic: str, stored: dict[int, int], limits: Limits) -> KafkaBatch:
    """Messages from `stored` offsets (the beginning where none is stored) up to the end of each partition as it was
    when the batch began, or until a limit is reached."""
    marks = watermarks(consumer, topic)
    start = {}
    for partition, (low, high) in marks.items():
        offset = stored.get(partition)
        if offset is not None and offset > high:
            raise OffsetsOutOfRange(f"{topic}[{partition}]: stored offset {offset} is past the end ({high}); "
                                    "was the topic recreated?")
        if offset is not None and offset < low:
            raise OffsetsOutOfRange(f"{topic}[{partition}]: stored offset {offset} is before the first retained "
                                    f"offset ({low}); messages {offset}..{low - 1} were deleted before being drained")
        start[partition] = offset if offset is not None else low
    high_watermarks = {p: high for p, (_, high) in marks.items()}
    end = dict(start)
    pending = {p for p in start if start[p] < high_watermarks[p]}
    values, keys, partitions, offsets = [], [], [], []
    size, deadline = 0, time.monotonic() + limits.max_seconds
    if pending:
        consumer.assign([TopicPartition(topic, p, start[p]) for p in pending])
    while pending and len(values) < limits.max_messages and size < limits.max_bytes and time.monotonic() < deadline:
        for message in consumer.consume(min(10_000, limits.max_messages - len(values)), timeout=0.5):
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                raise KafkaException(message.error())
            partition, offset = message.partition(), message.offset()
            if partition not in pending or offset >= high_watermarks[partition]:
                continue  # past this batch's end: the next batch reads it
            value = message.value()
            values.append(value)
            keys.append(message.key())
            partitions.append(partition)
            offsets.append(offset)
            size += len(value) if value else 0
            end[partition] = offset + 1
            if end[partition] >= high_watermarks[partition]:
                pending.discard(partition)
    consumer.unassign()
    return KafkaBatch(values, keys, np.array(partitions, dtype=np.int32), np.array(offsets, dtype=np.int64),
                      start, end, high_watermarks)
