"""Read one bounded batch of a topic, from explicit offsets, as columns."""

import time
from dataclasses import dataclass

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition


class OffsetsOutOfRange(RuntimeError):
    """Stored offsets the topic cannot serve: ahead of its end (recreated?) or behind its start (retention)."""


@dataclass(frozen=True)
class Limits:
    max_messages: int = 100_000
    max_bytes: int = 64 << 20  # of values; with max_messages, bounds the drain's memory whatever the backlog
    max_seconds: float = 60.0


@dataclass
class KafkaBatch:
    """The messages' values back to back in one buffer: no Python object per message outlives its read."""

    data: np.ndarray  # uint8, every value in batch order
    starts: np.ndarray  # message i's value is data[starts[i]:ends[i]]
    ends: np.ndarray
    tombstones: np.ndarray  # positions whose value is null (not empty)
    keys: list[bytes | None]
    partitions: np.ndarray
    offsets: np.ndarray  # in each partition's offset order
    start: dict[int, int]  # partition -> first offset this batch read from
    end: dict[int, int]  # partition -> next offset after this batch
    high_watermarks: dict[int, int]

    def __len__(self) -> int:
        return len(self.offsets)

    def value(self, position: int) -> bytes | None:
        if position in self.tombstones:
            return None
        return self.data[self.starts[position] : self.ends[position]].tobytes()

    @property
    def lag_after(self) -> dict[int, int]:
        return {p: max(self.high_watermarks[p] - self.end[p], 0) for p in self.end}


@dataclass
class _Chunk:
    values: bytes
    lengths: np.ndarray
    tombstones: np.ndarray  # positions within the chunk
    keys: list
    partitions: np.ndarray
    offsets: np.ndarray


def _chunk(messages: list) -> _Chunk:
    values = list(map(Message.value, messages))
    lengths = np.fromiter(map(len, messages), dtype=np.int64, count=len(messages))
    empty = np.flatnonzero(lengths == 0)
    return _Chunk(b"".join(filter(None, values)), lengths,
                  np.array([i for i in empty.tolist() if values[i] is None], dtype=np.int64),
                  list(map(Message.key, messages)),
                  np.fromiter(map(Message.partition, messages), dtype=np.int32, count=len(messages)),
                  np.fromiter(map(Message.offset, messages), dtype=np.int64, count=len(messages)))


def _join(chunks: list[_Chunk]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(data, starts, ends, tombstones) of the chunks' values as one batch."""
    lengths = np.concatenate([c.lengths for c in chunks]) if chunks else np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    firsts = np.cumsum([0] + [len(c.lengths) for c in chunks])
    tombstones = np.concatenate([c.tombstones + first for c, first in zip(chunks, firsts)]) if chunks \
        else np.zeros(0, np.int64)
    data = np.frombuffer(b"".join(c.values for c in chunks), dtype=np.uint8)
    return data, ends - lengths, ends, tombstones


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
    chunks = []
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
        chunk = _chunk(good)
        # messages past a partition's end as it was when the batch began are for the next batch
        inside = chunk.offsets < ends[chunk.partitions]
        if not inside.all():
            chunk = _chunk([m for m, keep in zip(good, inside.tolist()) if keep])
        del messages, good
        chunks.append(chunk)
        count += len(chunk.offsets)
        size += len(chunk.values)
        for partition in np.unique(chunk.partitions).tolist():
            end[partition] = max(end[partition], int(chunk.offsets[chunk.partitions == partition].max()) + 1)
            if end[partition] >= high_watermarks[partition]:
                pending.discard(partition)
    consumer.unassign()
    data, starts, value_ends, tombstones = _join(chunks)
    return KafkaBatch(data, starts, value_ends, tombstones, [key for c in chunks for key in c.keys],
                      np.concatenate([c.partitions for c in chunks]) if chunks else np.zeros(0, np.int32),
                      np.concatenate([c.offsets for c in chunks]) if chunks else np.zeros(0, np.int64),
                      start, end, high_watermarks)
