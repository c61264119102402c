"""Read one bounded batch of a topic, from explicit offsets, as columns."""

import time
from dataclasses import dataclass

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

CONSUME_CHUNK = 1_000  # messages per consume() call

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


def _start_offsets(topic: str, stored: dict[int, int], marks: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Where each partition's batch starts: its stored offset, or its first retained offset where none is stored."""
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
    return start


class TopicReader:
    """Bounded batches of one topic, each from explicit offsets. When a batch starts where the consumer already is
    (the last batch's end), the consumer keeps its assignment and what it prefetched meanwhile; otherwise it is
    assigned again at the batch's start."""

    def __init__(self, consumer: Consumer, topic: str):
        self.consumer, self.topic = consumer, topic
        self._next: dict[int, int] = {}  # partition -> the offset the consumer delivers next under its assignment

    def close(self) -> None:
        self.consumer.close()

    def watermarks(self) -> dict[int, tuple[int, int]]:
        """(low, high) offsets of every partition of the topic."""
        metadata = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
                for p in sorted(metadata.partitions)}

    def read(self, stored: dict[int, int], limits: Limits) -> KafkaBatch:
        """Messages from `stored` offsets up to the end of each partition as it was when the batch began, or until a
        limit is reached."""
        marks = self.watermarks()
        start = _start_offsets(self.topic, stored, marks)
        high_watermarks = {p: high for p, (_, high) in marks.items()}
        if self._next != start:
            self.consumer.assign([TopicPartition(self.topic, p, o) for p, o in start.items()])
            self._next = dict(start)
        end = dict(start)
        pending = {p for p in start if start[p] < high_watermarks[p]}
        chunks = []
        count, size, deadline = 0, 0, time.monotonic() + limits.max_seconds
        ends = np.zeros(max(high_watermarks, default=-1) + 1, dtype=np.int64)  # high watermark by partition number
        ends[list(high_watermarks)] = list(high_watermarks.values())
        while pending and count < limits.max_messages and size < limits.max_bytes and time.monotonic() < deadline:
            messages = self.consumer.consume(min(CONSUME_CHUNK, limits.max_messages - count), timeout=0.5)
            errors = list(map(Message.error, messages))
            if any(errors):
                for message, error in zip(messages, errors):
                    if error is None:
                        continue
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    if message.offset() >= high_watermarks[message.partition()]:  # not an end an earlier batch saw
                        pending.discard(message.partition())
                messages = [m for m, error in zip(messages, errors) if error is None]
            if not messages:
                continue
            chunk = _chunk(messages)
            for partition in np.unique(chunk.partitions).tolist():
                self._next[partition] = int(chunk.offsets[chunk.partitions == partition].max()) + 1
            # messages past a partition's end as it was when the batch began are for the next batch
            inside = chunk.offsets < ends[chunk.partitions]
            if not inside.all():
                chunk = _chunk([m for m, keep in zip(messages, inside.tolist()) if keep])
            del messages
            chunks.append(chunk)
            count += len(chunk.offsets)
            size += len(chunk.values)
            for partition in np.unique(chunk.partitions).tolist():
                end[partition] = max(end[partition], int(chunk.offsets[chunk.partitions == partition].max()) + 1)
                if end[partition] >= high_watermarks[partition]:
                    pending.discard(partition)
        data, starts, value_ends, tombstones = _join(chunks)
        return KafkaBatch(data, starts, value_ends, tombstones, [key for c in chunks for key in c.keys],
                          np.concatenate([c.partitions for c in chunks]) if chunks else np.zeros(0, np.int32),
                          np.concatenate([c.offsets for c in chunks]) if chunks else np.zeros(0, np.int64),
                          start, end, high_watermarks)
