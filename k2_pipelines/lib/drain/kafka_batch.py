"""Read one bounded batch of a topic, from explicit offsets, as columns."""

import time
from dataclasses import dataclass

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


class OffsetsOutOfRange(RuntimeError):
    """Stored offsets the topic cannot serve: ahead of its end (recreated?) or behind its start (retention)."""


@dataclass(frozen=True)
class Limits:
    max_messages: int = 100_000
    max_bytes: int = 64 << 20  # of values; with max_messages, bounds the drain's memory whatever the backlog
    max_seconds: float = 60.0


@dataclass
class KafkaBatch:
    messages: list  # confluent_kafka Message objects, in each partition's offset order
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
    kept, partitions, offsets = [], [], []
    count, size, deadline = 0, 0, time.monotonic() + limits.max_seconds
    ends = np.zeros(max(high_watermarks, default=-1) + 1, dtype=np.int64)  # high watermark by partition number
    ends[list(high_watermarks)] = list(high_watermarks.values())
    if pending:
        consumer.assign([TopicPartition(topic, p, start[p]) for p in pending])
    while pending and count < limits.max_messages and size < limits.max_bytes and time.monotonic() < deadline:
        messages = consumer.consume(min(20_000, limits.max_messages - count), timeout=0.5)
        good = [m for m in messages if m.error() is None]
        for message in messages:
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(message.error())
                pending.discard(message.partition())
        if not good:
            continue
        chunk_partitions = np.fromiter((m.partition() for m in good), dtype=np.int32, count=len(good))
        chunk_offsets = np.fromiter((m.offset() for m in good), dtype=np.int64, count=len(good))
        # messages past a partition's end as it was when the batch began are for the next batch
        inside = chunk_offsets < ends[chunk_partitions]
        if not inside.all():
            good = [m for m, keep in zip(good, inside.tolist()) if keep]
            chunk_partitions, chunk_offsets = chunk_partitions[inside], chunk_offsets[inside]
        kept += good
        partitions.append(chunk_partitions)
        offsets.append(chunk_offsets)
        count += len(good)
        size += sum(len(m) for m in good)
        for partition in np.unique(chunk_partitions).tolist():
            end[partition] = max(end[partition], int(chunk_offsets[chunk_partitions == partition].max()) + 1)
            if end[partition] >= high_watermarks[partition]:
                pending.discard(partition)
    consumer.unassign()
    return KafkaBatch(kept, np.concatenate(partitions) if partitions else np.zeros(0, np.int32),
                      np.concatenate(offsets) if offsets else np.zeros(0, np.int64), start, end, high_watermarks)
